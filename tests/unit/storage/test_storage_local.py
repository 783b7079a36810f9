"""LocalDisk (the Disk protocol over a directory) and the per-disk format file."""

from __future__ import annotations

import json
import os

import pytest

from buckets.errors import DiskError, DiskNotFound, FormatError
from buckets.storage import LocalDisk
from buckets.storage.format import FORMAT_FILE, SYS_DIR, TMP_DIR, DiskFormat, new_format, new_ids, probe


@pytest.fixture
async def disk(tmp_path):
    root = tmp_path / "disk"
    root.mkdir()
    (root / TMP_DIR).mkdir(parents=True)
    d = LocalDisk(str(root), "disk-1")
    yield d
    d.close()


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "a/../../../etc/passwd", "..", "buckets/../.."])
async def test_paths_never_escape_the_root(disk, rel) -> None:
    for call in (disk.read_file(rel), disk.write_file(rel, b"x", sync=False), disk.delete(rel),
                 disk.create_file(rel), disk.list_dir(rel), disk.exists(rel), disk.read_range(rel, 0, 1)):
        with pytest.raises(DiskError, match="escapes"):
            await call
    assert not os.path.exists(os.path.join(os.path.dirname(disk.root), "x"))


async def test_write_read_and_ranges(disk) -> None:
    await disk.write_file("a/b/c.bin", b"0123456789", sync=True)
    assert await disk.read_file("a/b/c.bin") == b"0123456789"
    assert await disk.read_range("a/b/c.bin", 3, 4) == b"3456"
    assert await disk.read_range("a/b/c.bin", 8, 100) == b"89"  # short read at the end
    assert await disk.read_range("a/b/c.bin", 50, 4) == b""
    assert await disk.exists("a/b/c.bin") and not await disk.exists("a/b/none")
    await disk.write_file("a/b/c.bin", b"new", sync=False)  # atomic replace
    assert await disk.read_file("a/b/c.bin") == b"new"
    assert os.listdir(os.path.join(disk.root, TMP_DIR)) == []  # no temp file left behind


async def test_missing_files_are_disk_not_found(disk) -> None:
    with pytest.raises(DiskNotFound):
        await disk.read_file("nope")
    with pytest.raises(DiskNotFound):
        await disk.read_range("nope", 0, 1)
    with pytest.raises(DiskNotFound):
        await disk.list_dir("nope")
    await disk.write_file("file", b"x", sync=False)
    with pytest.raises(DiskNotFound):
        await disk.read_file("file/below-a-file")


async def test_shard_writer_close_and_abort(disk) -> None:
    w = await disk.create_file(f"{TMP_DIR}/tx/w/part.1")
    await w.write(b"abc")
    await w.write(b"def")
    await w.close(True)
    assert await disk.read_file(f"{TMP_DIR}/tx/w/part.1") == b"abcdef"
    w = await disk.create_file(f"{TMP_DIR}/tx/w/part.2")
    await w.write(b"partial")
    await w.abort()
    assert not await disk.exists(f"{TMP_DIR}/tx/w/part.2")
    await w.abort()  # idempotent


async def test_move_all_places_data_then_metadata(disk) -> None:
    for name in ("p1", "p2", "meta"):
        await disk.write_file(f"{TMP_DIR}/tx/{name}", name.encode(), sync=False)
    await disk.move_all([(f"{TMP_DIR}/tx/p1", "obj/w/part.1"), (f"{TMP_DIR}/tx/p2", "obj/w/part.2")],
                        (f"{TMP_DIR}/tx/meta", "obj/w.meta"), sync=True)
    assert await disk.read_file("obj/w/part.1") == b"p1"
    assert await disk.read_file("obj/w/part.2") == b"p2"
    assert await disk.read_file("obj/w.meta") == b"meta"
    assert await disk.list_dir(f"{TMP_DIR}/tx") == []
    # a missing source fails the move before the metadata is placed
    await disk.write_file(f"{TMP_DIR}/tx2/meta", b"m2", sync=False)
    with pytest.raises(DiskNotFound):
        await disk.move_all([(f"{TMP_DIR}/tx2/gone", "obj2/w/part.1")], (f"{TMP_DIR}/tx2/meta", "obj2/w.meta"),
                            sync=False)
    assert not await disk.exists("obj2/w.meta")


async def test_rename_creates_parents(disk) -> None:
    await disk.write_file("src", b"x", sync=False)
    await disk.rename("src", "deep/er/dst", sync=True)
    assert await disk.read_file("deep/er/dst") == b"x" and not await disk.exists("src")


async def test_delete_file_dir_and_prune(disk) -> None:
    await disk.write_file("b/obj/w/part.1", b"x", sync=False)
    await disk.write_file("b/obj/w.meta", b"m", sync=False)
    await disk.delete("b/obj/w.meta")
    await disk.delete("b/obj/w", recursive=True, prune=1)  # obj/ becomes empty: pruned
    assert not await disk.exists("b/obj") and await disk.exists("b")
    await disk.delete("b/never-existed")  # absent: no error
    await disk.delete("b/never-existed", recursive=True, prune=3)
    await disk.write_file("c/keep/f", b"x", sync=False)
    await disk.write_file("c/other", b"x", sync=False)
    await disk.delete("c/keep", recursive=True, prune=2)  # c/ still holds "other": pruning stops
    assert await disk.exists("c/other")


async def test_walk_files_and_list_dir(disk) -> None:
    names = [f"b/{i % 7}/{i}.meta" for i in range(1200)] + ["b/x.data", "b/1/y.data"]
    for n in names:
        os.makedirs(os.path.dirname(os.path.join(disk.root, n)), exist_ok=True)
        open(os.path.join(disk.root, n), "wb").close()
    found = [rel async for rel in disk.walk_files("b", ".meta")]
    assert sorted(found) == sorted(n for n in names if n.endswith(".meta"))
    assert sorted(await disk.list_dir("b")) == sorted([str(i) for i in range(7)] + ["x.data"])


async def test_info(disk) -> None:
    info = await disk.info()
    assert info.online and info.disk_id == "disk-1" and info.total > 0 and 0 <= info.free <= info.total


# -- format file and probe -----------------------------------------------------------------------

def test_probe_classifies_disk_roots(tmp_path) -> None:
    assert probe(str(tmp_path / "missing")) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert probe(str(empty)) is None
    (empty / "lost+found").mkdir()
    (empty / SYS_DIR).mkdir()
    assert probe(str(empty)) is None  # lost+found and our own sys dir do not make it foreign
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "not a directory" in probe(str(afile))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.db").write_text("x")
    msg = probe(str(foreign))
    assert isinstance(msg, str) and "refusing" in msg and "data.db" in msg


def test_format_round_trip_and_errors(tmp_path) -> None:
    dep, ids = new_ids(3)
    fmt = new_format(1, ids, dep, 2, 1, 1 << 20, 4096)
    assert fmt.disk_id == ids[1] and fmt.slot == 1
    root = tmp_path / "d"
    (root / SYS_DIR).mkdir(parents=True)
    (root / FORMAT_FILE).write_bytes(fmt.to_json())
    assert probe(str(root)) == fmt
    assert DiskFormat.from_json(fmt.to_json(), "x") == fmt
    doc = json.loads(fmt.to_json())
    for bad, match in [(b"{nope", "unreadable"), (json.dumps({**doc, "format": "minio"}).encode(), "not a Buckets"),
                       (json.dumps({**doc, "version": 99}).encode(), "version"),
                       (json.dumps({**doc, "surprise": 1}).encode(), "unreadable"),
                       (json.dumps({"format": "buckets", "version": 1}).encode(), "unreadable")]:
        with pytest.raises(FormatError, match=match):
            DiskFormat.from_json(bad, "where")
    assert len(set(ids)) == 3 and dep not in ids


async def test_a_vanished_disk_root_is_not_recreated(tmp_path) -> None:
    """If the disk's directory disappears (unmounted, pulled), writes must fail rather than
    silently recreate it on whatever filesystem holds its parent."""
    import shutil

    root = tmp_path / "gone"
    (root / TMP_DIR).mkdir(parents=True)
    disk = LocalDisk(str(root), "d")
    try:
        shutil.rmtree(root)
        with pytest.raises(DiskError):
            w = await disk.create_file(f"{TMP_DIR}/tx/part.1")
            await w.abort()
        with pytest.raises(DiskError):
            await disk.write_file("buckets/b/x.meta", b"m", sync=False)
        assert not root.exists()
    finally:
        disk.close()
