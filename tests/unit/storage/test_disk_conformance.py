"""The Disk conformance suite: what every ``Disk`` implementation must do, run against each
one in ``disk_factories.DISK_FACTORIES`` (LocalDisk, a FaultyDisk with no fault, and later
RemoteDisk). Only the protocol is used on the disk; the backing directory is looked at
only to check that nothing happened outside it."""

from __future__ import annotations

import asyncio
import os
import shutil

import msgpack
import pytest

from buckets.errors import (
    CorruptData, DiskError, DiskOffline, FileNotFound, ForeignDisk, PathEscape, UnformattedDisk,
)
from buckets.storage.disk import MAX_RANGE, DiskInfo, FileStat
from buckets.storage.format import DATA_DIR, FORMAT_FILE, SYS_DIR, TMP_DIR

from disk_factories import DISK_ID


async def staging_leftovers(disk) -> list[str]:
    try:
        return await disk.list_dir(TMP_DIR)
    except FileNotFound:
        return []


# -- whole small files ------------------------------------------------------------------------

async def test_write_read_stat_and_exists(disk) -> None:
    data = bytes(range(256)) * 40
    await disk.write_file("a/b/c.bin", data, sync=True)
    await disk.write_file("a/empty", b"", sync=False)
    assert await disk.read_file("a/b/c.bin") == data
    assert await disk.read_file("a/empty") == b""
    assert await disk.exists("a/b/c.bin") and await disk.exists("a/b") and not await disk.exists("a/b/none")
    assert await disk.file_size("a/b/c.bin") == len(data)
    st = await disk.stat("a/b/c.bin")
    assert (st.path, st.size, st.is_dir) == ("a/b/c.bin", len(data), False) and st.mtime > 0
    dst = await disk.stat("a/b")
    assert dst.is_dir and dst.path == "a/b"
    assert await staging_leftovers(disk) == []  # no temp file left behind


async def test_write_file_replaces_atomically(disk) -> None:
    """Readers racing an overwrite see the old content or the new, whole, never a mix."""
    old, new = b"o" * (256 << 10), b"n" * (300 << 10)
    await disk.write_file("obj.meta", old, sync=False)
    seen: set[bytes] = set()
    done = False

    async def reader() -> None:
        while not done:
            got = await disk.read_file("obj.meta")
            assert got in (old, new), f"a reader saw {len(got)} bytes of a half-written file"
            seen.add(got[:1])
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    try:
        for i in range(40):
            await disk.write_file("obj.meta", new if i % 2 == 0 else old, sync=False)
    finally:
        done = True
        await task
    assert await disk.read_file("obj.meta") == old
    assert await staging_leftovers(disk) == []


async def test_concurrent_writes_to_one_file_leave_one_whole_version(disk) -> None:
    versions = [bytes([i]) * (64 << 10) for i in range(12)]
    await asyncio.gather(*(disk.write_file("same", v, sync=bool(i % 2)) for i, v in enumerate(versions)))
    assert await disk.read_file("same") in versions
    assert await staging_leftovers(disk) == []


async def test_read_file_refuses_a_file_over_its_size_cap(disk) -> None:
    await disk.write_file("big.meta", b"x" * 1000, sync=False)
    with pytest.raises(CorruptData):
        await disk.read_file("big.meta", max_size=999)
    assert await disk.read_file("big.meta", max_size=1000) == b"x" * 1000


# -- ranges -------------------------------------------------------------------------------------

@pytest.mark.parametrize("offset,length,want", [
    (0, 10, b"0123456789"), (3, 4, b"3456"), (8, 100, b"89"), (10, 5, b""), (50, 4, b""), (4, 0, b""),
])
async def test_read_range_within_and_past_the_end(disk, offset, length, want) -> None:
    await disk.write_file("r.bin", b"0123456789", sync=False)
    assert await disk.read_range("r.bin", offset, length) == want


@pytest.mark.parametrize("offset,length", [(-1, 4), (0, -1), (0, MAX_RANGE + 1), (0, 1 << 40)])
async def test_read_range_refuses_impossible_arguments(disk, offset, length) -> None:
    await disk.write_file("r.bin", b"0123456789", sync=False)
    with pytest.raises(DiskError):
        await disk.read_range("r.bin", offset, length)


async def test_a_range_reader_keeps_reading_a_file_removed_under_it(disk) -> None:
    """A GET's reads of one shard, span after span, through one descriptor (``open_range``,
    where the disk has one): an overwrite removing the file meanwhile (through another node of
    a cluster, which does not wait for this GET) does not cut the GET."""
    opener = getattr(disk, "open_range", None)
    if opener is None:
        pytest.skip("this disk reads span by span (no open_range)")
    span = 64 << 10
    data = os.urandom(3 * span + 100)
    await disk.write_file("shard.bin", data, sync=False)
    reader = opener("shard.bin", 0, len(data), chunk=span)
    try:
        assert await reader.read(0, span) == data[:span]
        await disk.delete("shard.bin")
        assert not await disk.exists("shard.bin")
        assert await reader.read(span, span) == data[span:2 * span]
        assert await reader.read(2 * span, span + 100) == data[2 * span:]
    finally:
        reader.close()


# -- errors are typed ---------------------------------------------------------------------------

async def test_missing_files_are_file_not_found(disk) -> None:
    await disk.write_file("file", b"x", sync=False)
    await disk.write_file("dir/inner", b"x", sync=False)
    for call in (lambda: disk.read_file("nope"), lambda: disk.read_range("nope", 0, 1),
                 lambda: disk.file_size("nope"), lambda: disk.stat("nope"), lambda: disk.list_dir("nope"),
                 lambda: disk.fsync_dir("nope"), lambda: disk.read_file("file/below-a-file"),
                 lambda: disk.list_dir("file"), lambda: disk.read_file("dir")):
        with pytest.raises(FileNotFound):
            await call()
    assert not await disk.exists("nope") and not await disk.exists("file/below-a-file")
    await disk.delete("nope")  # deleting what is not there is not an error
    await disk.delete("nope/deeper", recursive=True, prune=3)
    assert [p async for p in disk.walk_files("nope", ".meta")] == []
    assert [e async for e in disk.walk_entries("nope", 1)] == []


ESCAPES = ["../x", "a/../../x", "/etc/passwd", "a/../../../etc/passwd", "..", "buckets/../..", "a\0b"]


@pytest.mark.parametrize("rel", ESCAPES)
async def test_paths_never_escape_the_root(disk, tmp_path, rel) -> None:
    await disk.write_file("inside", b"i", sync=False)
    before = sorted(os.listdir(tmp_path))
    calls = [
        lambda: disk.read_file(rel), lambda: disk.write_file(rel, b"x", sync=False),
        lambda: disk.delete(rel, recursive=True), lambda: disk.create_file(rel), lambda: disk.list_dir(rel),
        lambda: disk.exists(rel), lambda: disk.read_range(rel, 0, 1), lambda: disk.file_size(rel),
        lambda: disk.stat(rel), lambda: disk.fsync_dir(rel),
        lambda: disk.rename_data([("inside", rel)], None, sync=False),
        lambda: disk.rename_data([(rel, "moved")], None, sync=False),
        lambda: disk.rename_data([], (rel, b"m"), sync=False),
        lambda: disk.rename_data([], None, sync=False, cleanup=rel),
        lambda: anext(disk.walk_files(rel, "")), lambda: anext(disk.walk_entries(rel, 1)),
    ]
    for call in calls:
        with pytest.raises(PathEscape):
            await call()
    assert sorted(os.listdir(tmp_path)) == before
    assert await disk.read_file("inside") == b"i"


@pytest.mark.parametrize("rel", ["", ".", "a/..", "./"])
async def test_the_root_itself_is_never_replaced_or_removed(disk, rel) -> None:
    await disk.write_file("keep/me", b"k", sync=False)
    for call in (lambda: disk.delete(rel, recursive=True), lambda: disk.delete(rel),
                 lambda: disk.write_file(rel, b"x", sync=False), lambda: disk.create_file(rel),
                 lambda: disk.rename_data([("keep/me", rel)], None, sync=False),
                 lambda: disk.rename_data([(rel, "elsewhere")], None, sync=False)):
        with pytest.raises(PathEscape):
            await call()
    assert await disk.read_file("keep/me") == b"k"
    assert "keep" in await disk.list_dir(rel)  # reading the root is fine


# -- streamed files -------------------------------------------------------------------------------

async def test_shard_writer_streams_closes_and_aborts(disk) -> None:
    w = await disk.create_file(f"{TMP_DIR}/tx/w/part.1")
    for chunk in (b"abc", b"", b"def", b"g" * 100_000):
        await w.write(chunk)
    await w.close(True)
    await w.close(True)  # closing twice is harmless
    assert await disk.read_file(f"{TMP_DIR}/tx/w/part.1") == b"abcdef" + b"g" * 100_000
    with pytest.raises(DiskError):
        await w.write(b"more")  # a closed writer takes no more data
    assert await disk.file_size(f"{TMP_DIR}/tx/w/part.1") == 100_006

    w = await disk.create_file(f"{TMP_DIR}/tx/w/part.2")
    await w.write(b"partial")
    await w.abort()
    # A remote abort cancels the stream and deletes the file; the peer's handler of the broken
    # stream may still be writing it (its request arrived on another connection than the
    # delete) and removes it when it sees the stream end: gone soon after, never kept.
    for _ in range(100):
        if not await disk.exists(f"{TMP_DIR}/tx/w/part.2"):
            break
        await asyncio.sleep(0.05)
    assert not await disk.exists(f"{TMP_DIR}/tx/w/part.2")
    await w.abort()  # idempotent
    with pytest.raises(DiskError):
        await w.write(b"x")

    w = await disk.create_file(f"{TMP_DIR}/tx/w/part.1")  # an existing file is truncated
    await w.write(b"new")
    await w.close(False)
    assert await disk.read_file(f"{TMP_DIR}/tx/w/part.1") == b"new"
    await w.abort()  # abort after close discards the file too
    assert not await disk.exists(f"{TMP_DIR}/tx/w/part.1")


async def test_a_shard_writer_takes_a_framed_piece_as_its_parts(disk) -> None:
    """The erasure writer hands each framed piece over as (checksum, piece), a view of the
    block it was cut from: the file holds the parts one after the other, as if joined."""
    block = bytes(range(256)) * 4096  # 1 MiB
    view = memoryview(block)
    parts = [(b"\x01" * 8, view[:512 * 1024]), (b"\x02" * 8, view[512 * 1024:]), (b"", b"tail")]
    w = await disk.create_file(f"{TMP_DIR}/tx/w/parts")
    for p in parts:
        await w.write(p)
    await w.close(True)
    assert await disk.read_file(f"{TMP_DIR}/tx/w/parts") == b"".join(b"".join(p) for p in parts)


# -- the commit: rename_data ------------------------------------------------------------------------

async def test_rename_data_places_data_then_metadata_and_cleans_up(disk) -> None:
    stage = f"{TMP_DIR}/tx"
    for name in ("p1", "p2"):
        w = await disk.create_file(f"{stage}/{name}")
        await w.write(name.encode() * 1000)
        await w.close(True)
    await disk.write_file("obj/w/part.1", b"old part", sync=False)  # replaced
    await disk.rename_data([(f"{stage}/p1", "obj/w/part.1"), (f"{stage}/p2", "obj/w/part.2")],
                           ("obj/w.meta", b"meta"), sync=True, cleanup=stage)
    assert await disk.read_file("obj/w/part.1") == b"p1" * 1000
    assert await disk.read_file("obj/w/part.2") == b"p2" * 1000
    assert await disk.read_file("obj/w.meta") == b"meta"
    assert not await disk.exists(stage)
    assert await staging_leftovers(disk) == []


async def test_rename_data_without_metadata_or_cleanup(disk) -> None:
    await disk.write_file("src/a", b"a", sync=False)
    await disk.rename_data([("src/a", "deep/er/dst")], None, sync=True)
    assert await disk.read_file("deep/er/dst") == b"a" and not await disk.exists("src/a")
    await disk.rename_data([], ("only.meta", b"m"), sync=False)
    assert await disk.read_file("only.meta") == b"m"


async def test_rename_data_never_places_metadata_when_a_move_fails(disk) -> None:
    await disk.write_file("obj2/w.meta", b"old meta", sync=False)
    await disk.write_file(f"{TMP_DIR}/tx2/p1", b"p1", sync=False)
    with pytest.raises(FileNotFound):
        await disk.rename_data([(f"{TMP_DIR}/tx2/p1", "obj2/w/part.1"), (f"{TMP_DIR}/tx2/gone", "obj2/w/part.2")],
                               ("obj2/w.meta", b"new meta"), sync=False, cleanup=f"{TMP_DIR}/tx2")
    assert await disk.read_file("obj2/w.meta") == b"old meta"
    with pytest.raises(FileNotFound):
        await disk.rename_data([(f"{TMP_DIR}/none", "obj3/w/part.1")], ("obj3/w.meta", b"m"), sync=False)
    assert not await disk.exists("obj3/w.meta")


# -- deletes ---------------------------------------------------------------------------------------

async def test_delete_file_dir_recursive_and_prune(disk) -> None:
    await disk.write_file("b/obj/w/part.1", b"x", sync=False)
    await disk.write_file("b/obj/w.meta", b"m", sync=False)
    with pytest.raises(DiskError):
        await disk.delete("b/obj/w")  # not empty, not recursive
    assert await disk.exists("b/obj/w/part.1")
    await disk.delete("b/obj/w.meta")
    await disk.delete("b/obj/w", recursive=True, prune=1)  # obj/ becomes empty: pruned
    assert not await disk.exists("b/obj") and await disk.exists("b")
    await disk.write_file("c/keep/f", b"x", sync=False)
    await disk.write_file("c/other", b"x", sync=False)
    await disk.delete("c/keep", recursive=True, prune=2)  # c/ still holds "other": pruning stops
    assert await disk.exists("c/other") and not await disk.exists("c/keep")
    await disk.write_file("e/mpty/dir/f", b"x", sync=False)
    await disk.delete("e/mpty/dir/f")
    await disk.delete("e/mpty/dir")  # an empty directory goes without recursive
    assert not await disk.exists("e/mpty/dir")


async def test_pruning_stops_at_the_root(disk) -> None:
    await disk.write_file("x/y/z", b"z", sync=False)
    for name in await disk.list_dir(""):
        if name != "x":
            await disk.delete(name, recursive=True)
    await disk.delete("x/y/z", prune=10)  # x/y and x go; the (now empty) root stays
    assert await disk.list_dir("") == []
    await disk.write_file("again", b"a", sync=False)  # and the disk is still usable
    assert await disk.read_file("again") == b"a"


# -- listings ----------------------------------------------------------------------------------------

async def test_list_dir(disk) -> None:
    for name in ("d/a", "d/b/c", "d/.hidden"):
        await disk.write_file(name, b"", sync=False)
    assert sorted(await disk.list_dir("d")) == [".hidden", "a", "b"]
    assert await disk.list_dir("d/b") == ["c"]


async def test_walk_files_finds_every_match_in_batches(disk) -> None:
    names = [f"b/{i % 7}/{i}.meta" for i in range(1200)] + ["b/x.data", "b/1/y.data", "b/1/deep/z.meta"]
    await asyncio.gather(*(disk.write_file(n, b"", sync=False) for n in names))
    found = [rel async for rel in disk.walk_files("b", ".meta")]
    assert sorted(found) == sorted(n for n in names if n.endswith(".meta"))
    assert sorted([rel async for rel in disk.walk_files("b/1", ".data")]) == ["b/1/y.data"]


async def test_abandoned_walks_do_not_hold_the_disk(disk) -> None:
    """A consumer that stops early must not leave a thread (or a connection) stuck."""
    await asyncio.gather(*(disk.write_file(f"w/{i % 5}/{i}.meta", b"", sync=False) for i in range(1500)))
    for _ in range(8):  # more than any pool has threads
        walker = disk.walk_files("w", ".meta")
        assert (await anext(walker)).endswith(".meta")
        entries = disk.walk_entries("w", 2)
        assert (await anext(entries)).path.startswith("w/")
    # hang guard (not a speed check): the disk still answers
    assert len(await asyncio.wait_for(disk.list_dir("w"), 60)) == 5


async def test_walk_entries_lists_one_depth_with_stats(disk) -> None:
    await disk.write_file("t/f0/a.meta", b"aaaa", sync=False)
    await disk.write_file("t/f0/a/part.1", b"p", sync=False)
    await disk.write_file("t/f1/b.meta", b"bb", sync=False)
    await disk.write_file("t/top-level-file", b"x", sync=False)  # depth 1: not in a depth-2 walk
    level2 = {e.path: e async for e in disk.walk_entries("t", 2)}
    assert sorted(level2) == ["t/f0/a", "t/f0/a.meta", "t/f1/b.meta"]
    assert level2["t/f0/a"].is_dir and not level2["t/f0/a.meta"].is_dir
    assert level2["t/f0/a.meta"].size == 4 and level2["t/f1/b.meta"].size == 2
    assert level2["t/f0/a.meta"].mtime == (await disk.stat("t/f0/a.meta")).mtime
    level1 = {e.path: e.is_dir async for e in disk.walk_entries("t", 1)}
    assert level1 == {"t/f0": True, "t/f1": True, "t/top-level-file": False}
    with pytest.raises(DiskError):
        await anext(disk.walk_entries("t", 0))


# -- state, info, wire forms ---------------------------------------------------------------------------

async def test_info_reports_state(disk) -> None:
    info = await disk.info()
    assert info.online and info.disk_id == DISK_ID and info.endpoint == disk.endpoint
    assert info.total > 0 and 0 <= info.free <= info.total and not info.healing
    disk.healing = True
    assert (await disk.info()).healing
    disk.mark_offline("pulled by a test")
    assert not disk.online and disk.last_error == "pulled by a test"
    info = await disk.info()
    assert not info.online and "pulled by a test" in info.error
    disk.mark_online()
    assert disk.online and (await disk.info()).online


async def test_results_have_msgpack_wire_forms(disk) -> None:
    await disk.write_file("w/f", b"12345", sync=False)
    info = await disk.info()
    assert DiskInfo.from_wire(msgpack.unpackb(msgpack.packb(info.to_wire()))) == info
    st = await disk.stat("w/f")
    assert FileStat.from_wire(msgpack.unpackb(msgpack.packb(st.to_wire()))) == st
    [entry] = [e async for e in disk.walk_entries("w", 1)]
    assert FileStat.from_wire(msgpack.unpackb(msgpack.packb(entry.to_wire()))) == entry == st


# -- the format file and the root ----------------------------------------------------------------------

async def test_format_file_lifecycle(open_disk, tmp_path) -> None:
    disk = await open_disk("fresh")
    with pytest.raises(UnformattedDisk):
        await disk.read_format()
    os.makedirs(tmp_path / "fresh" / "lost+found")
    os.makedirs(tmp_path / "fresh" / SYS_DIR, exist_ok=True)  # (the read above locked the disk in it)
    with pytest.raises(UnformattedDisk):  # lost+found and our own system dir are not foreign
        await disk.read_format()
    # nor is our own tree without its format file (a disk wiped under load is written to
    # before the disk monitor re-formats it)
    await disk.write_file(f"{DATA_DIR}/bkt/abc/x.meta", b"m", sync=False)
    with pytest.raises(UnformattedDisk):
        await disk.read_format()
    await disk.write_format(b'{"format": "buckets"}', create_root=False, sync=True)
    assert await disk.read_format() == b'{"format": "buckets"}'
    assert await disk.exists(FORMAT_FILE) and await disk.list_dir(TMP_DIR) == []
    await disk.write_format(b'{"format": "buckets", "v": 2}', create_root=False, sync=False)  # replaced
    assert await disk.read_format() == b'{"format": "buckets", "v": 2}'


async def test_a_foreign_directory_is_reported_and_left_alone(open_disk, tmp_path) -> None:
    disk = await open_disk("foreign")
    (tmp_path / "foreign" / "family-photos.jpg").write_bytes(b"precious")
    with pytest.raises(ForeignDisk, match="family-photos.jpg"):
        await disk.read_format()
    assert os.listdir(tmp_path / "foreign") == ["family-photos.jpg"]


async def test_a_missing_root_is_created_only_when_formatting_a_new_deployment(open_disk, tmp_path) -> None:
    disk = await open_disk("later", create=False)
    with pytest.raises(UnformattedDisk):
        await disk.read_format()
    with pytest.raises(DiskOffline):
        await disk.write_format(b"{}", create_root=False, sync=False)
    assert not (tmp_path / "later").exists() and not disk.online
    disk.mark_online()
    await disk.write_format(b"{}", create_root=True, sync=True)
    assert await disk.read_format() == b"{}"


async def test_a_root_that_is_a_file_is_offline(open_disk, tmp_path) -> None:
    (tmp_path / "afile").write_bytes(b"not a disk")
    disk = await open_disk("afile", create=False)
    with pytest.raises(DiskOffline, match="not a directory"):
        await disk.read_format()
    assert not disk.online and disk.last_error
    with pytest.raises(DiskOffline):
        await disk.write_format(b"{}", create_root=True, sync=False)
    assert (tmp_path / "afile").read_bytes() == b"not a disk"


async def test_a_vanished_root_fails_calls_and_is_not_recreated(disk, tmp_path) -> None:
    """If the disk's directory disappears (unmounted, pulled), calls fail rather than
    silently recreate it on whatever filesystem holds its parent."""
    await disk.write_file("x", b"x", sync=False)
    shutil.rmtree(tmp_path / "disk")
    with pytest.raises(DiskOffline):  # at create (a local disk) or once data is sent (a remote one)
        w = await disk.create_file(f"{TMP_DIR}/tx/part.1")
        await w.write(b"x")
        await w.close(True)
    assert not disk.online and disk.last_error
    for call in (lambda: disk.write_file("buckets/b/x.meta", b"m", sync=True), lambda: disk.read_file("x"),
                 lambda: disk.rename_data([], ("m", b"m"), sync=False), lambda: disk.list_dir("")):
        with pytest.raises(DiskOffline):
            await call()
    assert not (tmp_path / "disk").exists()
    assert not (await disk.info()).online


async def test_a_closed_disk_refuses_calls(open_disk) -> None:
    disk = await open_disk("closing")
    await disk.write_file("f", b"f", sync=True)
    await disk.close()
    for call in (lambda: disk.read_file("f"), lambda: disk.write_file("g", b"g", sync=False),
                 lambda: disk.create_file("h"), lambda: disk.list_dir("")):
        with pytest.raises(DiskOffline):
            await call()
    await disk.close()  # idempotent
