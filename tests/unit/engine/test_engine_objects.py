"""Objects: put/get/head/delete, key rules, inline vs streamed, failed writes leave nothing,
conditional writes, and removal of replaced data."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from engine_testkit import (
    BLOCK, INLINE, chunks, content, eventually, get_bytes, heal_left_out, key_files, object_files, read_all,
    staging_files,
)

from buckets import errors
from buckets.engine import paths
from buckets.engine.types import PutOptions


async def test_put_get_head_delete_round_trip(store, bucket) -> None:
    data = content("hello", 3 * BLOCK + 123)
    opts = PutOptions(headers={"content-type": "text/plain", "cache-control": "no-cache"},
                      user_meta={"color": "blue"})
    info = await store.put_object(bucket, "dir/hello.txt", chunks(data, 777), len(data), opts)
    assert info.size == len(data)
    assert info.etag == hashlib.md5(data).hexdigest()
    assert info.key == "dir/hello.txt" and info.bucket == bucket
    head = await store.head_object(bucket, "dir/hello.txt")
    assert (head.size, head.etag, head.user_meta, head.content_type) == (len(data), info.etag, {"color": "blue"},
                                                                         "text/plain")
    assert head.headers["cache-control"] == "no-cache"
    assert head.content_hash and head.content_hash == info.content_hash
    assert len(head.parts) == 1 and head.parts[0].size == len(data) and head.parts[0].etag == info.etag
    reader = await store.get_object(bucket, "dir/hello.txt")
    assert reader.length == len(data) and reader.range is None and reader.info.etag == info.etag
    assert await read_all(reader) == data
    assert (await store.delete_object(bucket, "dir/hello.txt")).deleted is True
    assert (await store.delete_object(bucket, "dir/hello.txt")).deleted is False
    with pytest.raises(errors.NoSuchKey) as exc:
        await store.head_object(bucket, "dir/hello.txt")
    assert exc.value.status == 404
    with pytest.raises(errors.NoSuchKey):
        await store.get_object(bucket, "dir/hello.txt")


async def test_default_content_type_and_empty_object(store, bucket) -> None:
    info = await store.put_object(bucket, "empty", b"", 0)
    assert info.size == 0 and info.etag == hashlib.md5(b"").hexdigest()
    assert info.content_type == "binary/octet-stream"
    reader = await store.get_object(bucket, "empty")
    assert reader.length == 0 and await read_all(reader) == b""
    # an empty body of unknown length, too
    async def nothing():
        return
        yield b""  # pragma: no cover
    info = await store.put_object(bucket, "empty2", nothing(), None)
    assert info.size == 0 and await get_bytes(store, bucket, "empty2") == b""


@pytest.mark.parametrize("key", [
    "a", "with space", "ünïcödé/😀", "a//b", "/leading", "trailing/", "...", "a/.../b", ".hidden", "x" * 1024,
    "é" * 512, "new\nline", "tab\tkey", "%2e%2e/x",
    # S3 keys, stored hashed: never a path (buckets.engine.names)
    "..", ".", "a/../b", "../etc/passwd", "a/./b", "a/..", "./a", "\x01\x1f\x7f",
])
async def test_unusual_but_valid_keys(store, bucket, key: str) -> None:
    data = content(key, 100)
    await store.put_object(bucket, key, data, len(data))
    assert await get_bytes(store, bucket, key) == data
    assert [o.key for o in (await store.list_objects(bucket)).objects] == [key]


@pytest.mark.parametrize("key,error", [
    ("", errors.InvalidObjectName),
    ("a\0b", errors.InvalidObjectName),
    ("\0", errors.InvalidObjectName),
    ("\ud800", errors.InvalidObjectName),
    ("x" * 1025, errors.KeyTooLongError),
    ("é" * 513, errors.KeyTooLongError),
])
async def test_invalid_keys_are_refused_and_change_nothing(store, bucket, disk_paths, key, error) -> None:
    with pytest.raises(error) as exc:
        await store.put_object(bucket, key, b"data", 4)
    assert exc.value.status == 400
    with pytest.raises(error):
        await store.create_multipart_upload(bucket, key)
    assert object_files(disk_paths, bucket) == []
    assert staging_files(disk_paths) == []
    assert (await store.list_objects(bucket)).objects == []


@pytest.mark.parametrize("size", [INLINE - 1, INLINE, INLINE + 1, BLOCK, BLOCK + 1])
@pytest.mark.parametrize("known_size", [True, False])
async def test_inline_below_threshold_streamed_above(store, bucket, disk_paths, size, known_size) -> None:
    data = content(f"t{size}", size)
    await store.put_object(bucket, "obj", chunks(data, 1000), size if known_size else None)
    await heal_left_out(store, bucket, "obj")
    entry = store.registry.get_object(bucket, "obj")
    files = key_files(disk_paths, bucket, "obj")
    metas = [f for f in files if f.endswith(".meta")]
    shards = [f for f in files if f.endswith("/part.1")]
    assert len(metas) == 4  # one metadata file per disk either way
    if size <= INLINE:
        assert entry["inline"] is True
        assert shards == [] and len(files) == 4  # one file per disk per small PUT
    else:
        assert entry["inline"] is False
        assert len(shards) == 4
    assert await get_bytes(store, bucket, "obj") == data


async def test_inline_threshold_at_or_above_block_size(tmp_disks) -> None:
    """An inline threshold >= the block size must not break writes of (threshold-sized) bodies."""
    from buckets import Store

    store = await Store.open(tmp_disks(4), sync=False, block_size=4096, inline_threshold=8192, partitions=64)
    try:
        await store.make_bucket("bkt")
        for size in (4095, 4096, 4097, 8192, 8193, 20000):
            data = content(f"s{size}", size)
            await store.put_object("bkt", f"k{size}", data, size)
            assert await get_bytes(store, "bkt", f"k{size}") == data, size
    finally:
        await store.close()


async def _assert_nothing_left(store, bucket, key, disk_paths) -> None:
    assert store.registry.get_object(bucket, key) is None
    with pytest.raises(errors.NoSuchKey):
        await store.head_object(bucket, key)
    assert staging_files(disk_paths) == []
    assert object_files(disk_paths, bucket) == []
    assert store.registry.usage.get(bucket, [0, 0]) == [0, 0]


@pytest.mark.parametrize("size", [100, INLINE + 10, 3 * BLOCK + 5])
@pytest.mark.parametrize("sent", ["short", "long"])
async def test_size_mismatch_is_incomplete_body_and_leaves_nothing(store, bucket, disk_paths, size, sent) -> None:
    data = content("m", size // 2 if sent == "short" else size * 2)
    with pytest.raises(errors.IncompleteBody) as exc:
        await store.put_object(bucket, "obj", chunks(data, 997), size)
    assert exc.value.status == 400
    await _assert_nothing_left(store, bucket, "obj", disk_paths)


@pytest.mark.parametrize("size", [100, 3 * BLOCK + 5])
async def test_verify_hook_bad_digest_commits_nothing(store, bucket, disk_paths, size) -> None:
    data = content("v", size)
    seen = {}

    async def verify(computed: dict) -> None:
        seen.update(computed)
        raise errors.BadDigest()

    with pytest.raises(errors.BadDigest):
        await store.put_object(bucket, "obj", chunks(data), size, PutOptions(verify=verify))
    assert seen["md5"] == hashlib.md5(data).digest() and seen["size"] == size
    await _assert_nothing_left(store, bucket, "obj", disk_paths)


async def test_verify_hook_failure_keeps_the_previous_version(store, bucket, disk_paths) -> None:
    old = content("old", 2 * BLOCK)
    await store.put_object(bucket, "obj", old, len(old))

    async def verify(_computed: dict) -> None:
        raise errors.BadDigest()

    new = content("new", 3 * BLOCK)
    with pytest.raises(errors.BadDigest):
        await store.put_object(bucket, "obj", new, len(new), PutOptions(verify=verify))
    assert await get_bytes(store, bucket, "obj") == old
    assert staging_files(disk_paths) == []
    await heal_left_out(store, bucket, "obj")
    assert len(key_files(disk_paths, bucket, "obj")) == 8  # old write only: 4 metas + 4 shards


class ClientWentAway(Exception):
    pass


@pytest.mark.parametrize("fail_after", [0, 1000, 5 * BLOCK])
async def test_stream_error_propagates_unchanged_and_commits_nothing(store, bucket, disk_paths, fail_after) -> None:
    data = content("s", fail_after)

    async def body():
        async for c in chunks(data, 4000):
            yield c
        raise ClientWentAway("connection reset")

    with pytest.raises(ClientWentAway):
        await store.put_object(bucket, "obj", body(), 10 * BLOCK)
    with pytest.raises(ClientWentAway):
        await store.put_object(bucket, "obj2", body(), None)
    await _assert_nothing_left(store, bucket, "obj", disk_paths)
    await _assert_nothing_left(store, bucket, "obj2", disk_paths)


async def test_cancelled_put_commits_nothing(store, bucket, disk_paths) -> None:
    started = asyncio.Event()

    async def slow():
        yield content("c", 2 * BLOCK)
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(store.put_object(bucket, "obj", slow(), 5 * BLOCK))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _assert_nothing_left(store, bucket, "obj", disk_paths)


async def test_if_none_match(store, bucket) -> None:
    await store.put_object(bucket, "k", b"one", 3, PutOptions(if_none_match=True))
    with pytest.raises(errors.PreconditionFailed) as exc:
        await store.put_object(bucket, "k", b"two", 3, PutOptions(if_none_match=True))
    assert exc.value.status == 412
    assert await get_bytes(store, bucket, "k") == b"one"


async def test_if_match(store, bucket) -> None:
    first = await store.put_object(bucket, "k", b"one", 3)
    with pytest.raises(errors.PreconditionFailed):
        await store.put_object(bucket, "k", b"two", 3, PutOptions(if_match="0" * 32))
    second = await store.put_object(bucket, "k", b"two", 3, PutOptions(if_match=f'"{first.etag}"'))
    assert await get_bytes(store, bucket, "k") == b"two"
    with pytest.raises(errors.PreconditionFailed):
        await store.put_object(bucket, "k", b"three", 5, PutOptions(if_match=first.etag))
    await store.put_object(bucket, "k", b"three", 5, PutOptions(if_match=second.etag))
    with pytest.raises(errors.NoSuchKey):
        await store.put_object(bucket, "absent", b"x", 1, PutOptions(if_match=first.etag))


@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
async def test_a_conditional_delete_that_loses_a_race_deletes_nothing(store, bucket, versioned) -> None:
    """A write that lands between a conditional delete's first check and its commit (under
    the key's lock) makes the delete 409 ConditionalRequestConflict, and the write stays."""
    if versioned:
        await store.set_versioning(bucket, "Enabled")
    first = await store.put_object(bucket, "k", b"one", 3)
    real = store._check_conditions

    async def a_write_lands_meanwhile(b, k, opts, *, at_commit=False):
        current = await real(b, k, opts, at_commit=at_commit)
        if not at_commit and opts.if_match is not None:
            await store.put_object(bucket, "k", b"two", 3)
        return current

    store._check_conditions = a_write_lands_meanwhile
    with pytest.raises(errors.ConditionalRequestConflict):
        await store.delete_object(bucket, "k", if_match=first.etag)
    store._check_conditions = real
    assert await get_bytes(store, bucket, "k") == b"two"
    if versioned:
        versions = (await store.list_object_versions(bucket)).versions
        assert [v.delete_marker for v in versions] == [False, False]  # no marker was added


async def test_conditional_delete(store, bucket) -> None:
    first = await store.put_object(bucket, "k", b"one", 3)
    with pytest.raises(errors.PreconditionFailed):
        await store.delete_object(bucket, "k", if_match="0" * 32)
    assert await get_bytes(store, bucket, "k") == b"one"
    await store.delete_object(bucket, "k", if_match=f'"{first.etag}"')
    with pytest.raises(errors.NoSuchKey):
        await store.delete_object(bucket, "k", if_match="*")
    await store.put_object(bucket, "k", b"two", 3)
    await store.delete_object(bucket, "k", if_match="*")
    with pytest.raises(errors.NoSuchKey):
        await store.head_object(bucket, "k")


@pytest.mark.parametrize("size", [10, 2 * BLOCK])
async def test_concurrent_if_none_match_has_exactly_one_winner(store, bucket, disk_paths, size) -> None:
    bodies = [content(f"w{i}", size) for i in range(6)]
    results = await asyncio.gather(
        *(store.put_object(bucket, "race", chunks(b, 3000), size, PutOptions(if_none_match=True)) for b in bodies),
        return_exceptions=True)
    winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1, results
    # a loser that saw the winner's object before it began: 412; one that lost the race at
    # commit (all began before any finished): 409 ConditionalRequestConflict, as S3 answers
    assert all(isinstance(r, (errors.PreconditionFailed, errors.ConditionalRequestConflict)) for r in losers), losers
    assert await get_bytes(store, bucket, "race") == bodies[winners[0]]
    # the losers' files are gone: only the winner's write is on the disks
    expected = 4 if size <= INLINE else 8
    await heal_left_out(store, bucket, "race")
    await eventually(lambda: len(key_files(disk_paths, bucket, "race")) == expected)
    assert staging_files(disk_paths) == []


@pytest.mark.parametrize("sizes", [(10, 20), (2 * BLOCK, 3 * BLOCK), (10, 2 * BLOCK), (2 * BLOCK, 10)])
async def test_overwrite_removes_the_old_write(store, bucket, disk_paths, sizes) -> None:
    a, b = content("a", sizes[0]), content("b", sizes[1])
    await store.put_object(bucket, "k", a, len(a))
    old_wid = store.registry.get_object(bucket, "k")["wid"]
    await store.put_object(bucket, "k", b, len(b))
    assert await get_bytes(store, bucket, "k") == b
    await eventually(lambda: not any(old_wid in f for f in key_files(disk_paths, bucket, "k")))
    expected = 4 if sizes[1] <= INLINE else 8
    await heal_left_out(store, bucket, "k")
    assert len(key_files(disk_paths, bucket, "k")) == expected


async def test_delete_removes_files(store, bucket, disk_paths) -> None:
    data = content("d", 2 * BLOCK)
    await store.put_object(bucket, "k", data, len(data))
    await store.put_object(bucket, "small", b"s", 1)
    await store.delete_object(bucket, "k")
    await store.delete_object(bucket, "small")
    await eventually(lambda: object_files(disk_paths, bucket) == [])


@pytest.mark.parametrize("started", [False, True])
@pytest.mark.parametrize("change", ["overwrite", "delete"])
async def test_a_get_in_progress_survives_an_overwrite_or_delete(store, bucket, started, change) -> None:
    """get_object has answered with the old object's info (size, ETag: the response headers
    are out); the body that follows must be that object in full, even when a PUT or DELETE
    of the key commits meanwhile and its old files are removed."""
    old = content("old", 40 * BLOCK)  # many read spans: most are read after the change
    await store.put_object(bucket, "k", old, len(old))
    reader = await store.get_object(bucket, "k")
    chunks_iter = reader.__aiter__()
    got = await chunks_iter.__anext__() if started else b""
    if change == "overwrite":
        new = content("new", 8 * BLOCK)
        await store.put_object(bucket, "k", new, len(new))
    else:
        await store.delete_object(bucket, "k")
    await asyncio.sleep(0.1)  # let the old write's removal run
    async for c in chunks_iter:
        got += c
    assert len(got) == len(old) and got == old


async def test_many_concurrent_puts_and_gets(store, bucket) -> None:
    keys = [f"c/{i:03d}" for i in range(40)]
    sizes = [(i * 7919) % (3 * BLOCK) for i in range(40)]
    await asyncio.gather(*(store.put_object(bucket, k, chunks(content(k, s), 5000), s) for k, s in zip(keys, sizes)))
    got = await asyncio.gather(*(get_bytes(store, bucket, k) for k in keys))
    assert got == [content(k, s) for k, s in zip(keys, sizes)]
    listing = await store.list_objects(bucket, prefix="c/")
    assert [o.key for o in listing.objects] == keys
    assert store.registry.usage[bucket] == [40, sum(sizes)]


async def test_object_files_never_escape_the_disk(store, bucket, disk_paths) -> None:
    for key in ("../../../../outside", "..%2f..%2foutside/...", os.path.join(os.path.dirname(disk_paths[0]), "outside")):
        await store.put_object(bucket, key, b"x", 1)
        for p in disk_paths:
            meta = paths.meta_path(bucket, key, store.registry.get_object(bucket, key)["wid"])
            assert os.path.isfile(os.path.join(p, meta)) and ".." not in meta.split("/")
        assert await get_bytes(store, bucket, key) == b"x"
    parent = os.path.dirname(disk_paths[0])
    assert sorted(os.listdir(parent)) == sorted(os.path.basename(p) for p in disk_paths)


async def test_concurrent_unconditional_puts_leave_one_write(store, bucket, disk_paths) -> None:
    bodies = [content(f"c{i}", 2 * BLOCK + i) for i in range(8)]
    await asyncio.gather(*(store.put_object(bucket, "same", chunks(b, 5000), len(b)) for b in bodies))
    got = await get_bytes(store, bucket, "same")
    assert got in bodies
    assert (await store.head_object(bucket, "same")).size == len(got)
    await heal_left_out(store, bucket, "same")
    await eventually(lambda: len(key_files(disk_paths, bucket, "same")) == 8)  # one write: 4 metas + 4 shards
    assert store.registry.usage[bucket] == [1, len(got)]


async def test_returned_info_is_a_copy_not_the_cached_entry(store, bucket) -> None:
    """Callers (the S3 layer) may adjust what they get back; that must not leak into the
    registry's cache and so into every later HEAD/GET of the object."""
    opts = PutOptions(headers={"content-type": "text/plain"}, user_meta={"a": "1"}, checksum_algorithms=("CRC32",))
    info = await store.put_object(bucket, "k", b"data", 4, opts)
    for got in (info, await store.head_object(bucket, "k"), (await store.get_object(bucket, "k")).info,
                (await store.list_objects(bucket)).objects[0]):
        got.headers["content-type"] = "evil/changed"
        got.headers["x-extra"] = "1"
        got.user_meta["a"] = "2"
        got.checksums.clear()
        got.parts.clear()
    head = await store.head_object(bucket, "k")
    assert head.headers == {"content-type": "text/plain"}
    assert head.user_meta == {"a": "1"}
    assert set(head.checksums) == {"CRC32"}
    assert len(head.parts) == 1
    assert opts.headers == {"content-type": "text/plain"}


async def test_close_is_prompt_with_readers_left_open(tmp_disks) -> None:
    """Removals of replaced writes wait for their readers; close() must not wait on each of
    them in turn (10 s apiece): what it cannot remove now is left for the orphan sweep."""
    import time

    from buckets import Store

    store = await Store.open(tmp_disks(4), sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=32)
    await store.make_bucket("bkt")
    readers = []
    for i in range(2):
        await store.put_object("bkt", f"k{i}", content("old", 3 * BLOCK), 3 * BLOCK)
        readers.append(await store.get_object("bkt", f"k{i}"))  # never read, never closed
        await store.put_object("bkt", f"k{i}", content("new", 3 * BLOCK), 3 * BLOCK)
    t0 = time.monotonic()
    await store.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"close() took {elapsed:.1f} s with {len(readers)} readers left open"
