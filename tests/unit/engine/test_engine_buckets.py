"""Buckets: S3 naming rules, create/delete/list, ownership and emptiness errors."""

from __future__ import annotations

import os

import pytest

from buckets import errors
from buckets.engine import paths
from buckets.engine.types import PutOptions
from engine_testkit import get_bytes

VALID = [
    "abc", "a" * 63, "my-bucket", "my.bucket.name", "123", "0a1", "a-b-c", "b.1-2.c", "xn-abc",
]
INVALID = [
    ("", "empty"),
    ("ab", "too short"),
    ("a" * 64, "too long"),
    ("ABC", "upper case"),
    ("Abc", "upper case first"),
    ("a_b", "underscore"),
    ("a b", "space"),
    ("abç", "non-ASCII"),
    ("-abc", "starts with a hyphen"),
    ("abc-", "ends with a hyphen"),
    (".abc", "starts with a dot"),
    ("abc.", "ends with a dot"),
    ("a..b", "two dots"),
    ("a.-b", "dot hyphen"),
    ("a-.b", "hyphen dot"),
    ("192.168.1.1", "IP address"),
    ("xn--abc", "xn-- prefix"),
    ("sthree-abc", "sthree- prefix"),
    ("abc-s3alias", "-s3alias suffix"),
    ("abc--ol-s3", "--ol-s3 suffix"),
    ("abc\n", "trailing newline"),
    ("abc/def", "slash"),
    ("..", "dots only"),
]


@pytest.mark.parametrize("name", VALID)
async def test_valid_bucket_names_are_accepted(store, name: str) -> None:
    info = await store.make_bucket(name)
    assert info.name == name
    assert await store.bucket_exists(name)
    assert (await store.get_bucket(name)).name == name


@pytest.mark.parametrize("name,why", INVALID, ids=[w for _, w in INVALID])
async def test_invalid_bucket_names_are_refused(store, disk_paths, name: str, why: str) -> None:
    with pytest.raises(errors.InvalidBucketName) as exc:
        await store.make_bucket(name)
    assert exc.value.status == 400
    assert not await store.bucket_exists(name)
    assert await store.list_buckets() == []
    for p in disk_paths:  # nothing reached the disks
        data_dir = os.path.join(p, "buckets")
        assert not os.path.isdir(data_dir) or os.listdir(data_dir) == []


async def test_make_bucket_twice_is_already_owned(store) -> None:
    first = await store.make_bucket("twice")
    with pytest.raises(errors.BucketAlreadyOwnedByYou) as exc:
        await store.make_bucket("twice")
    assert exc.value.status == 409
    assert (await store.get_bucket("twice")).created == first.created


async def test_list_buckets_is_sorted_and_complete(store) -> None:
    for name in ["zeta", "alpha", "mid.dle", "alpha-2", "0-first"]:
        await store.make_bucket(name)
    names = [b.name for b in await store.list_buckets()]
    assert names == sorted(["zeta", "alpha", "mid.dle", "alpha-2", "0-first"])


async def test_bucket_record_is_on_every_disk(store, disk_paths) -> None:
    await store.make_bucket("ondisk")
    for p in disk_paths:
        assert os.path.isfile(os.path.join(p, paths.bucket_meta("ondisk")))


async def test_delete_bucket(store, disk_paths) -> None:
    await store.make_bucket("gone")
    await store.delete_bucket("gone")
    assert not await store.bucket_exists("gone")
    with pytest.raises(errors.NoSuchBucket):
        await store.get_bucket("gone")
    for p in disk_paths:
        assert not os.path.exists(os.path.join(p, paths.bucket_dir("gone")))
    await store.make_bucket("gone")  # the name is free again
    assert (await store.list_objects("gone")).objects == []


async def test_delete_missing_bucket(store) -> None:
    with pytest.raises(errors.NoSuchBucket) as exc:
        await store.delete_bucket("nothere")
    assert exc.value.status == 404


async def test_delete_non_empty_bucket_is_refused(store) -> None:
    await store.make_bucket("full")
    await store.put_object("full", "k", b"x", 1)
    with pytest.raises(errors.BucketNotEmpty) as exc:
        await store.delete_bucket("full")
    assert exc.value.status == 409
    assert (await store.head_object("full", "k")).size == 1
    await store.delete_object("full", "k")
    await store.delete_bucket("full")
    assert not await store.bucket_exists("full")


async def test_delete_bucket_drops_its_multipart_uploads(store, disk_paths) -> None:
    await store.make_bucket("mpb")
    up = await store.create_multipart_upload("mpb", "big")
    await store.put_part("mpb", "big", up.upload_id, 1, b"part", 4)
    await store.delete_bucket("mpb")
    for p in disk_paths:
        assert not os.path.exists(os.path.join(p, paths.upload_dir(up.upload_id)))
    await store.make_bucket("mpb")
    assert (await store.list_multipart_uploads("mpb")).uploads == []
    with pytest.raises(errors.NoSuchUpload):
        await store.list_parts("mpb", "big", up.upload_id)


async def test_object_calls_on_a_missing_bucket(store) -> None:
    with pytest.raises(errors.NoSuchBucket):
        await store.put_object("nobucket", "k", b"x", 1)
    with pytest.raises(errors.NoSuchBucket):
        await store.head_object("nobucket", "k")
    with pytest.raises(errors.NoSuchBucket):
        await store.get_object("nobucket", "k")
    with pytest.raises(errors.NoSuchBucket):
        await store.delete_object("nobucket", "k")
    with pytest.raises(errors.NoSuchBucket):
        await store.list_objects("nobucket")
    with pytest.raises(errors.NoSuchBucket):
        await store.create_multipart_upload("nobucket", "k")
    with pytest.raises(errors.NoSuchBucket):
        await store.list_multipart_uploads("nobucket")
    with pytest.raises(errors.NoSuchBucket):
        await store.put_object("nobucket", "k", b"x", 1, PutOptions(if_none_match=True))


@pytest.mark.parametrize("name", ["", "a" * 600, "é" * 300])
async def test_lookups_of_impossible_bucket_names_are_404_not_a_crash(store, name: str) -> None:
    """Names a client can send in a path but no bucket can have: a 404, never an LMDB error."""
    assert not await store.bucket_exists(name)
    with pytest.raises(errors.NoSuchBucket):
        await store.get_bucket(name)
    with pytest.raises(errors.NoSuchBucket):
        await store.head_object(name, "k")
    with pytest.raises(errors.NoSuchBucket):
        await store.get_object(name, "k")
    with pytest.raises(errors.NoSuchBucket):
        await store.delete_bucket(name)
    with pytest.raises(errors.NoSuchBucket):
        await store.list_objects(name)


@pytest.mark.parametrize("first", ["put", "delete_bucket"])
async def test_delete_bucket_racing_a_put(store, first) -> None:
    """delete_bucket checks emptiness, then commits; a PUT's commit can land in the same
    group-commit batch. Exactly one of the two may win: never a PUT acknowledged into a
    bucket that is then deleted under it (a ghost entry that resurfaces when the bucket is
    created again, with its data gone), and never an internal error for both."""
    import asyncio

    from buckets.registry import Op

    await store.make_bucket("race")
    reg = store.registry
    # Keep the committer busy so both commits wait in the same queue.
    busy = asyncio.create_task(reg.commit([Op("put_sys", f"pad{i}", value=b"x" * 500) for i in range(5000)]))
    while not reg._pending:
        await asyncio.sleep(0)
    while reg._pending:  # the committer has taken the padding batch
        await asyncio.sleep(0)

    async def queued(task):
        while not reg._pending and not task.done():
            await asyncio.sleep(0)
        return task

    if first == "put":
        put = await queued(asyncio.create_task(store.put_object("race", "k", b"payload", 7)))
        delete = asyncio.create_task(store.delete_bucket("race"))
    else:
        delete = await queued(asyncio.create_task(store.delete_bucket("race")))
        put = asyncio.create_task(store.put_object("race", "k", b"payload", 7))
    put_result, delete_result = await asyncio.gather(put, delete, return_exceptions=True)
    await busy
    put_ok = not isinstance(put_result, BaseException)
    delete_ok = not isinstance(delete_result, BaseException)
    assert put_ok != delete_ok, f"put: {put_result!r}, delete_bucket: {delete_result!r}"
    for r in (put_result, delete_result):
        assert not isinstance(r, BaseException) or isinstance(r, errors.BucketsError) and r.status < 500, repr(r)
    if put_ok:
        assert await get_bytes(store, "race", "k") == b"payload"
    else:
        assert not await store.bucket_exists("race")
        await store.make_bucket("race")
        assert (await store.list_objects("race")).objects == []
        with pytest.raises(errors.NoSuchKey):
            await store.head_object("race", "k")


@pytest.mark.parametrize("size", [100, 3 * 16384])
async def test_bucket_deleted_during_a_put(store, disk_paths, size) -> None:
    """The PUT fails with NoSuchBucket and leaves nothing behind: no staged files and no
    directory of the deleted bucket recreated by the PUT's rename into place."""
    import asyncio

    from engine_testkit import staging_files

    await store.make_bucket("vanish")
    release = asyncio.Event()

    async def body():
        yield b"x" * (size // 2)
        await release.wait()
        yield b"y" * (size - size // 2)

    put = asyncio.create_task(store.put_object("vanish", "k", body(), size))
    await asyncio.sleep(0.05)
    await store.delete_bucket("vanish")
    release.set()
    with pytest.raises(errors.NoSuchBucket):
        await put
    assert staging_files(disk_paths) == []
    for p in disk_paths:
        assert not os.path.exists(os.path.join(p, paths.bucket_dir("vanish"))), p
    assert not await store.bucket_exists("vanish")
