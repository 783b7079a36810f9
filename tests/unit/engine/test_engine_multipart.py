"""Multipart uploads: ETag, part validation, replaced parts, abort, list_parts and
list_multipart_uploads paging, and the object checksum (COMPOSITE / FULL_OBJECT)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os

import pytest
from engine_testkit import (MiB, chunks, content, eventually, get_bytes, heal_left_out, key_files, upload_files,
                            upload_records)

from buckets import checksums, errors
from buckets.engine import paths
from buckets.engine.types import CompletePart, PutOptions
from buckets.storage import LocalDisk

PART = 5 * MiB


async def upload(store, bucket, key, bodies, opts=None, part_opts=None):
    up = await store.create_multipart_upload(bucket, key, opts)
    done = []
    for i, body in enumerate(bodies, 1):
        p = await store.put_part(bucket, key, up.upload_id, i, chunks(body, 256 * 1024), len(body), part_opts)
        assert p.number == i and p.size == len(body) and p.etag == hashlib.md5(body).hexdigest()
        done.append(CompletePart(i, f'"{p.etag}"'))
    return up, done


def multipart_etag(bodies: list[bytes]) -> str:
    return hashlib.md5(b"".join(hashlib.md5(b).digest() for b in bodies)).hexdigest() + f"-{len(bodies)}"


async def test_complete_assembles_the_object(store, bucket, disk_paths) -> None:
    bodies = [content("p1", PART), content("p2", PART + 3), content("p3", 777)]
    opts = PutOptions(headers={"content-type": "video/mp4"}, user_meta={"k": "v"})
    up, done = await upload(store, bucket, "movie", bodies, opts)
    assert up.bucket == bucket and up.key == "movie" and up.upload_id
    info = await store.complete_multipart_upload(bucket, "movie", up.upload_id, done)
    assert info.etag == multipart_etag(bodies)
    assert info.size == sum(map(len, bodies))
    head = await store.head_object(bucket, "movie")
    assert (head.etag, head.size, head.content_type, head.user_meta) == (info.etag, info.size, "video/mp4", {"k": "v"})
    assert [(p.number, p.size, p.etag) for p in head.parts] == [
        (i, len(b), hashlib.md5(b).hexdigest()) for i, b in enumerate(bodies, 1)]
    assert await get_bytes(store, bucket, "movie") == b"".join(bodies)
    # the upload is gone, its staging directory too; the parts were adopted, not copied
    with pytest.raises(errors.NoSuchUpload):
        await store.list_parts(bucket, "movie", up.upload_id)
    assert (await store.list_multipart_uploads(bucket)).uploads == []
    await eventually(lambda: upload_files(disk_paths) == [])
    await heal_left_out(store, bucket, "movie")  # (fresh run 345, a loaded machine: 3 metadata files)
    files = key_files(disk_paths, bucket, "movie")
    assert sum(f.endswith(".meta") for f in files) == 4
    assert sum("/part." in f for f in files) == 12


async def test_single_small_part_and_empty_part(store, bucket) -> None:
    up, done = await upload(store, bucket, "one", [b"tiny"])
    info = await store.complete_multipart_upload(bucket, "one", up.upload_id, done)
    assert info.etag == multipart_etag([b"tiny"]) and await get_bytes(store, bucket, "one") == b"tiny"
    up, done = await upload(store, bucket, "zero", [b""])
    info = await store.complete_multipart_upload(bucket, "zero", up.upload_id, done)
    assert info.size == 0 and await get_bytes(store, bucket, "zero") == b""


async def test_complete_with_a_subset_of_parts(store, bucket) -> None:
    bodies = [content(f"s{i}", PART if i < 4 else 100) for i in range(1, 5)]
    up, done = await upload(store, bucket, "sub", bodies)
    chosen = [done[0], done[2], done[3]]  # skip part 2
    info = await store.complete_multipart_upload(bucket, "sub", up.upload_id, chosen)
    want = [bodies[0], bodies[2], bodies[3]]
    assert info.etag == multipart_etag(want)
    assert await get_bytes(store, bucket, "sub") == b"".join(want)


async def test_invalid_part(store, bucket) -> None:
    up, done = await upload(store, bucket, "k", [content("a", PART), b"end"])
    with pytest.raises(errors.InvalidPart):
        await store.complete_multipart_upload(bucket, "k", up.upload_id, [done[0], CompletePart(2, "0" * 32)])
    with pytest.raises(errors.InvalidPart):
        await store.complete_multipart_upload(bucket, "k", up.upload_id, [done[0], CompletePart(3, done[1].etag)])
    with pytest.raises(errors.InvalidPart):  # the ETag of another part
        await store.complete_multipart_upload(bucket, "k", up.upload_id, [done[0], CompletePart(2, done[0].etag)])
    # the upload is still usable after the failures
    info = await store.complete_multipart_upload(bucket, "k", up.upload_id, done)
    assert info.size == PART + 3


async def test_part_checksum_mismatch_at_complete_is_invalid_part(store, bucket) -> None:
    opts = PutOptions(checksum_algorithms=("CRC32",))
    up, done = await upload(store, bucket, "k", [content("a", PART), b"end"], opts=opts)
    wrong = base64.b64encode(b"\0\0\0\0").decode()
    with pytest.raises(errors.InvalidPart):
        await store.complete_multipart_upload(bucket, "k", up.upload_id, [
            done[0], CompletePart(2, done[1].etag, {"CRC32": wrong})])
    right = base64.b64encode(checksums.checksum_of("CRC32", b"end")).decode()
    await store.complete_multipart_upload(bucket, "k", up.upload_id, [
        done[0], CompletePart(2, done[1].etag, {"CRC32": right})])


@pytest.mark.parametrize("order", [[2, 1], [1, 1], [1, 2, 1], [1, 3, 2]])  # [1, 3, 2]: order before sizes
async def test_invalid_part_order(store, bucket, order) -> None:
    up, done = await upload(store, bucket, "k", [content("a", PART), content("b", PART), b"c"])
    with pytest.raises(errors.InvalidPartOrder) as exc:
        await store.complete_multipart_upload(bucket, "k", up.upload_id, [done[n - 1] for n in order])
    assert exc.value.status == 400


async def test_entity_too_small(store, bucket) -> None:
    up, done = await upload(store, bucket, "k", [content("a", PART - 1), b"end"])
    with pytest.raises(errors.EntityTooSmall) as exc:
        await store.complete_multipart_upload(bucket, "k", up.upload_id, done)
    assert exc.value.status == 400
    # the last part may be small: completing with just the small first part works
    info = await store.complete_multipart_upload(bucket, "k", up.upload_id, done[:1])
    assert info.size == PART - 1


async def test_empty_part_list_is_refused(store, bucket) -> None:
    up = await store.create_multipart_upload(bucket, "k")
    with pytest.raises(errors.BucketsError) as exc:
        await store.complete_multipart_upload(bucket, "k", up.upload_id, [])
    assert exc.value.status == 400


async def test_reuploaded_part_replaces_the_old_one(store, bucket, disk_paths) -> None:
    up = await store.create_multipart_upload(bucket, "k")
    first = await store.put_part(bucket, "k", up.upload_id, 1, b"first", 5)
    old_files = upload_files(disk_paths, up.upload_id)
    assert len(old_files) == 4
    second = await store.put_part(bucket, "k", up.upload_id, 1, b"second!", 7)
    listing = await store.list_parts(bucket, "k", up.upload_id)
    assert [(p.number, p.etag, p.size) for p in listing.parts] == [(1, second.etag, 7)]
    await eventually(lambda: not any(os.path.exists(f) for f in old_files))
    assert len(upload_files(disk_paths, up.upload_id)) == 4
    # the records a rebuild reads: upload.meta and the remaining attempt's .pmeta, per disk
    await eventually(lambda: len(upload_records(disk_paths, up.upload_id)) == 8)
    with pytest.raises(errors.InvalidPart):
        await store.complete_multipart_upload(bucket, "k", up.upload_id, [CompletePart(1, first.etag)])
    await store.complete_multipart_upload(bucket, "k", up.upload_id, [CompletePart(1, second.etag)])
    assert await get_bytes(store, bucket, "k") == b"second!"


async def test_abort_cleans_the_disks(store, bucket, disk_paths) -> None:
    up, _ = await upload(store, bucket, "k", [b"a" * 1000, b"b" * 1000])
    assert len(upload_files(disk_paths, up.upload_id)) == 8
    await store.abort_multipart_upload(bucket, "k", up.upload_id)
    for p in disk_paths:
        assert not os.path.exists(os.path.join(p, paths.upload_dir(up.upload_id)))
    for call in (store.abort_multipart_upload(bucket, "k", up.upload_id),
                 store.list_parts(bucket, "k", up.upload_id),
                 store.put_part(bucket, "k", up.upload_id, 3, b"x", 1),
                 store.complete_multipart_upload(bucket, "k", up.upload_id, [CompletePart(1, "x")])):
        with pytest.raises(errors.NoSuchUpload) as exc:
            await call
        assert exc.value.status == 404
    with pytest.raises(errors.NoSuchKey):
        await store.head_object(bucket, "k")


@pytest.mark.parametrize("end", ["complete", "abort"])
@pytest.mark.parametrize("race", ["after", "during"])
async def test_a_part_streamed_while_the_upload_ends_is_no_such_upload(store, bucket, disk_paths, end, race,
                                                                       monkeypatch) -> None:
    """A part's bytes are written before it takes the upload's lock; a Complete or an Abort
    meanwhile removes the upload's directory, where the part's files go. That part is told
    NoSuchUpload (404), as it would be a moment later, not 503 "write quorum lost", and leaves
    nothing behind. ``during``: the directory's removal races the part's metadata files, which
    then fail to land (seen in tests/cluster/test_cluster_basic.py, an UploadPart racing a
    Complete through another node: "No such file or directory" on every disk, and a 503)."""
    up, done = await upload(store, bucket, "k", [content("p1", PART)])
    streaming = asyncio.Event()
    if race == "during":
        real = LocalDisk.write_file

        async def racing(disk, path, data, **kw):
            if path.endswith(".pmeta") and ended:
                raise errors.FileNotFound(f"{path}: its directory was removed meanwhile")
            return await real(disk, path, data, **kw)

        monkeypatch.setattr(LocalDisk, "write_file", racing)
    ended = False

    async def body():
        data = content("again", 3 * 256 * 1024)
        for i in range(0, len(data), 256 * 1024):
            yield data[i:i + 256 * 1024]
            if i == 0:
                streaming.set()
                await asyncio.sleep(0.3)  # the upload ends meanwhile

    part = asyncio.ensure_future(store.put_part(bucket, "k", up.upload_id, 2, body(), 3 * 256 * 1024))
    await streaming.wait()
    if end == "complete":
        await store.complete_multipart_upload(bucket, "k", up.upload_id, done)
    else:
        await store.abort_multipart_upload(bucket, "k", up.upload_id)
    ended = True
    with pytest.raises(errors.NoSuchUpload):
        await part
    await eventually(lambda: upload_files(disk_paths) == [])
    if end == "complete":
        assert await get_bytes(store, bucket, "k") == content("p1", PART)


async def test_upload_id_is_bound_to_its_key_and_bucket(store, bucket) -> None:
    up = await store.create_multipart_upload(bucket, "k")
    await store.make_bucket("other")
    with pytest.raises(errors.NoSuchUpload):
        await store.put_part(bucket, "different-key", up.upload_id, 1, b"x", 1)
    with pytest.raises(errors.NoSuchUpload):
        await store.put_part("other", "k", up.upload_id, 1, b"x", 1)
    with pytest.raises(errors.NoSuchUpload):
        await store.put_part(bucket, "k", "not-an-upload", 1, b"x", 1)


@pytest.mark.parametrize("number", [0, -1, 10001])
async def test_part_number_bounds(store, bucket, number) -> None:
    up = await store.create_multipart_upload(bucket, "k")
    with pytest.raises(errors.InvalidArgument) as exc:
        await store.put_part(bucket, "k", up.upload_id, number, b"x", 1)
    assert exc.value.status == 400
    await store.put_part(bucket, "k", up.upload_id, 10000, b"x", 1)


async def test_failed_part_leaves_nothing(store, bucket, disk_paths) -> None:
    up = await store.create_multipart_upload(bucket, "k")
    with pytest.raises(errors.IncompleteBody):
        await store.put_part(bucket, "k", up.upload_id, 1, b"short", 10)

    async def verify(_c):
        raise errors.BadDigest()

    with pytest.raises(errors.BadDigest):
        await store.put_part(bucket, "k", up.upload_id, 2, b"data", 4, PutOptions(verify=verify))
    assert (await store.list_parts(bucket, "k", up.upload_id)).parts == []
    assert upload_files(disk_paths, up.upload_id) == []


async def test_list_parts_pagination(store, bucket) -> None:
    up = await store.create_multipart_upload(bucket, "k", PutOptions(headers={"content-type": "a/b"}))
    for n in [5, 1, 3, 2, 4]:
        await store.put_part(bucket, "k", up.upload_id, n, str(n).encode() * n, n)
    seen = []
    marker = 0
    pages = 0
    while True:
        res = await store.list_parts(bucket, "k", up.upload_id, part_marker=marker, max_parts=2)
        pages += 1
        assert res.upload.upload_id == up.upload_id and res.upload.headers == {"content-type": "a/b"}
        seen += [(p.number, p.size) for p in res.parts]
        if not res.is_truncated:
            break
        assert res.next_marker == res.parts[-1].number
        marker = res.next_marker
    assert seen == [(n, n) for n in range(1, 6)]
    assert pages == 3
    res = await store.list_parts(bucket, "k", up.upload_id, part_marker=5)
    assert res.parts == [] and not res.is_truncated


async def test_list_multipart_uploads(store, bucket) -> None:
    ids: dict[str, list[str]] = {}
    for key in ["a/1", "a/2", "b", "a/1", "c/d/e", "c/x", "ü", "b"]:
        up = await store.create_multipart_upload(bucket, key)
        ids.setdefault(key, []).append(up.upload_id)
    res = await store.list_multipart_uploads(bucket)
    got = [(u.key, u.upload_id) for u in res.uploads]
    want = sorted(((k, i) for k, v in ids.items() for i in v), key=lambda t: (t[0].encode(), t[1]))
    assert got == want
    for key, uids in ids.items():  # uploads of one key in initiation order
        assert [u for k, u in got if k == key] == uids
    assert not res.is_truncated
    res = await store.list_multipart_uploads(bucket, prefix="a/")
    assert [u.key for u in res.uploads] == ["a/1", "a/1", "a/2"]
    res = await store.list_multipart_uploads(bucket, delimiter="/")
    assert res.prefixes == ["a/", "c/"]
    assert [u.key for u in res.uploads] == ["b", "b", "ü"]
    res = await store.list_multipart_uploads(bucket, prefix="c/", delimiter="/")
    assert (res.prefixes, [u.key for u in res.uploads]) == (["c/d/"], ["c/x"])
    # key marker alone: strictly after that key
    res = await store.list_multipart_uploads(bucket, key_marker="a/1")
    assert [u.key for u in res.uploads] == ["a/2", "b", "b", "c/d/e", "c/x", "ü"]
    # key marker + upload id marker: later uploads of the same key are included
    res = await store.list_multipart_uploads(bucket, key_marker="b", upload_id_marker=ids["b"][0])
    assert [(u.key, u.upload_id) for u in res.uploads][:1] == [("b", ids["b"][1])]
    # paging with the next markers visits everything exactly once
    seen: list = []
    km = um = ""
    while True:
        res = await store.list_multipart_uploads(bucket, key_marker=km, upload_id_marker=um, limit=3)
        assert len(res.uploads) + len(res.prefixes) <= 3
        seen += [(u.key, u.upload_id) for u in res.uploads]
        if not res.is_truncated:
            break
        km, um = res.next_key_marker, res.next_upload_id_marker or ""
    assert seen == want
    # paging with a delimiter
    seen_p: list = []
    seen_u: list = []
    km = um = ""
    while True:
        res = await store.list_multipart_uploads(bucket, delimiter="/", key_marker=km, upload_id_marker=um, limit=2)
        seen_p += res.prefixes
        seen_u += [u.key for u in res.uploads]
        if not res.is_truncated:
            break
        km, um = res.next_key_marker, res.next_upload_id_marker or ""
    assert (seen_p, seen_u) == (["a/", "c/"], ["b", "b", "ü"])


async def test_completing_replaces_an_existing_object(store, bucket, disk_paths) -> None:
    await store.put_object(bucket, "k", content("old", 40000), 40000)
    old_wid = store.registry.get_object(bucket, "k")["wid"]
    up, done = await upload(store, bucket, "k", [b"new"])
    await store.complete_multipart_upload(bucket, "k", up.upload_id, done)
    assert await get_bytes(store, bucket, "k") == b"new"
    await eventually(lambda: not any(old_wid in f for f in key_files(disk_paths, bucket, "k")))
    assert store.registry.usage[bucket] == [1, 3]


async def test_conditional_complete(store, bucket) -> None:
    await store.put_object(bucket, "k", b"exists", 6)
    up, done = await upload(store, bucket, "k", [b"new"])
    with pytest.raises(errors.PreconditionFailed):
        await store.complete_multipart_upload(bucket, "k", up.upload_id, done, PutOptions(if_none_match=True))
    assert await get_bytes(store, bucket, "k") == b"exists"
    # the upload survives a failed precondition and can still complete
    await store.complete_multipart_upload(bucket, "k", up.upload_id, done)
    assert await get_bytes(store, bucket, "k") == b"new"


async def test_a_complete_refused_at_commit_leaves_the_upload_completable(store, bucket, monkeypatch) -> None:
    """The condition passes the early check, then fails under the key's lock (a write landed
    between): 409 ConditionalRequestConflict, the key unchanged, and the upload's parts, already
    moved into the new write's place, still complete it on a retry."""
    await store.put_object(bucket, "k", b"exists", 6)
    up, done = await upload(store, bucket, "k", [b"new"])

    async def passes(*_args, **_kwargs) -> None:
        return None

    monkeypatch.setattr(store, "_check_conditions", passes)  # the race: the early check saw no key
    with pytest.raises(errors.ConditionalRequestConflict):
        await store.complete_multipart_upload(bucket, "k", up.upload_id, done, PutOptions(if_none_match=True))
    monkeypatch.undo()
    assert await get_bytes(store, bucket, "k") == b"exists"
    await store.complete_multipart_upload(bucket, "k", up.upload_id, done)
    assert await get_bytes(store, bucket, "k") == b"new"


# -- checksums ------------------------------------------------------------------------------

def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("alg", ["CRC32", "CRC32C", "CRC64NVME", "SHA256", "SHA1"])
async def test_composite_checksum(store, bucket, alg) -> None:
    bodies = [content("c1", PART), content("c2", 1000)]
    up, done = await upload(store, bucket, "k", bodies, opts=PutOptions(checksum_algorithms=(alg,)))
    assert up.checksum_algorithm == alg and up.checksum_type == "COMPOSITE"
    parts = (await store.list_parts(bucket, "k", up.upload_id)).parts
    assert [p.checksums[alg] for p in parts] == [b64(checksums.checksum_of(alg, b)) for b in bodies]
    info = await store.complete_multipart_upload(bucket, "k", up.upload_id, done)
    raw = [checksums.checksum_of(alg, b) for b in bodies]
    expected = b64(checksums.checksum_of(alg, b"".join(raw))) + "-2"
    assert info.checksums == {alg: expected} and info.checksum_type == "COMPOSITE"
    head = await store.head_object(bucket, "k")
    assert head.checksums == {alg: expected} and head.checksum_type == "COMPOSITE"


@pytest.mark.parametrize("alg", ["CRC32", "CRC32C", "CRC64NVME"])
async def test_full_object_checksum(store, bucket, alg) -> None:
    bodies = [content("f1", PART), content("f2", PART + 1), content("f3", 12345)]
    opts = PutOptions(checksum_algorithms=(alg,), checksum_type="FULL_OBJECT")
    up, done = await upload(store, bucket, "k", bodies, opts=opts)
    info = await store.complete_multipart_upload(bucket, "k", up.upload_id, done)
    assert info.checksum_type == "FULL_OBJECT"
    assert info.checksums == {alg: b64(checksums.checksum_of(alg, b"".join(bodies)))}
