"""``FaultyDisk`` does what it is told: typed errors, delays and torn writes, on the
methods named, for as many calls as asked (its pass-through behaviour is checked by the
conformance suite)."""

from __future__ import annotations

import asyncio

import pytest

from buckets.errors import CorruptData, DiskError, DiskFaulty, DiskFull, DiskOffline, FileNotFound
from buckets.storage import LocalDisk
from buckets.storage.faulty import FaultyDisk


@pytest.fixture
async def disk(tmp_path):
    root = tmp_path / "disk"
    root.mkdir()
    d = FaultyDisk(LocalDisk(str(root), "d1"))
    yield d
    await d.close()


async def test_fail_one_method_for_some_calls(disk) -> None:
    await disk.write_file("f", b"data", sync=False)
    disk.fail("read_file", error=DiskFull, after=1, times=2)
    assert await disk.read_file("f") == b"data"  # let through
    for _ in range(2):
        with pytest.raises(DiskFull, match="injected"):
            await disk.read_file("f")
    assert await disk.read_file("f") == b"data"  # expired
    assert await disk.exists("f")  # other methods untouched all along
    assert disk.calls["read_file"] == 4 and disk.calls["exists"] == 1
    assert disk.online  # a full disk is not an offline one


async def test_an_offline_error_marks_the_disk_offline(disk) -> None:
    disk.fail("*", error=DiskOffline("unplugged"))
    with pytest.raises(DiskOffline, match="unplugged"):
        await disk.list_dir("")
    assert not disk.online and "unplugged" in disk.last_error
    info = await disk.info()  # never raises
    assert not info.online and "unplugged" in info.error
    disk.clear()
    disk.mark_online()
    assert await disk.list_dir("") == [] and (await disk.info()).online


async def test_errors_inside_streams(disk) -> None:
    disk.fail("shard.write", error=CorruptData, after=2)
    w = await disk.create_file("s/part.1")
    await w.write(b"a")
    await w.write(b"b")
    with pytest.raises(CorruptData):
        await w.write(b"c")
    await w.abort()
    assert not await disk.exists("s/part.1")
    disk.clear()
    await disk.write_file("w/1.meta", b"", sync=False)
    disk.fail("walk_files", error=FileNotFound)
    with pytest.raises(FileNotFound):
        [p async for p in disk.walk_files("w", ".meta")]
    with pytest.raises(ValueError, match="no such disk method"):
        disk.fail("read_everything")


async def test_delay_holds_a_call_back_without_changing_its_result(disk) -> None:
    await disk.write_file("f", b"slow", sync=False)
    disk.delay("read_file", seconds=3600, times=1)
    slow = asyncio.create_task(disk.read_file("f"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not slow.done()
    assert await disk.read_file("f") == b"slow"  # the delay was for one call only
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    disk.delay("read_file", seconds=0.001)
    assert await disk.read_file("f") == b"slow"


@pytest.mark.parametrize("silent", [False, True])
async def test_torn_write_file_keeps_a_prefix(disk, silent) -> None:
    disk.tear("write_file", keep=5, silent=silent, times=1)
    if silent:
        await disk.write_file("m.meta", b"0123456789", sync=True)
    else:
        with pytest.raises(DiskError, match="torn"):
            await disk.write_file("m.meta", b"0123456789", sync=True)
    assert await disk.read_file("m.meta") == b"01234"
    await disk.write_file("m.meta", b"0123456789", sync=True)  # times=1: whole again
    assert await disk.read_file("m.meta") == b"0123456789"
    disk.tear("write_file", keep=100, error=DiskFaulty)  # keep never reaches the whole file
    with pytest.raises(DiskFaulty):
        await disk.write_file("n.meta", b"abc", sync=False)
    assert await disk.read_file("n.meta") == b"ab" and not disk.online


@pytest.mark.parametrize("silent", [False, True])
async def test_torn_shard_writer_keeps_a_prefix(disk, silent) -> None:
    disk.tear("create_file", keep=2500, silent=silent)
    w = await disk.create_file("stage/part.1")
    for _ in range(10):
        await w.write(b"x" * 1000)
    if silent:
        await w.close(True)
    else:
        with pytest.raises(DiskError, match="torn"):
            await w.close(True)
    assert await disk.file_size("stage/part.1") == 2500


async def test_torn_rename_data_tears_the_metadata(disk) -> None:
    await disk.write_file("stage/p", b"part", sync=False)
    disk.tear("rename_data", keep=3, silent=True)
    await disk.rename_data([("stage/p", "obj/part.1")], ("obj.meta", b"metadata"), sync=False)
    assert await disk.read_file("obj/part.1") == b"part" and await disk.read_file("obj.meta") == b"met"
    with pytest.raises(ValueError):
        disk.tear("read_file")
