"""What is particular to ``LocalDisk`` (the protocol itself is checked, for every
implementation, by ``test_disk_conformance.py``): errno mapping, its local path, short
writes; and the per-disk format file."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import time

import pytest

from buckets.errors import (
    DiskAccessDenied, DiskError, DiskFaulty, DiskFull, FileNotFound, FormatError, PathEscape,
)
from buckets.storage import LocalDisk
from buckets.storage.format import FORMAT_FILE, DiskFormat, new_format, new_ids
from buckets.storage.local import _write_all


@pytest.fixture
def disk(local_disk):
    return local_disk


@pytest.mark.parametrize("err,typed,offline", [
    (errno.EIO, DiskFaulty, True), (errno.ENODEV, DiskFaulty, True), (errno.ENOSPC, DiskFull, False),
    (errno.EDQUOT, DiskFull, False), (errno.EACCES, DiskAccessDenied, False), (errno.EROFS, DiskFaulty, True),
    (errno.ENOENT, FileNotFound, False), (errno.ENOTEMPTY, DiskError, False),
])
async def test_os_errors_become_typed_disk_errors(disk, err, typed, offline) -> None:
    def failing() -> None:
        raise OSError(err, os.strerror(err))

    with pytest.raises(typed) as info:
        await disk._run(failing)
    assert type(info.value) is typed and os.strerror(err) in str(info.value)
    assert disk.online is not offline
    if typed not in (FileNotFound, DiskError):
        assert os.strerror(err) in disk.last_error


async def test_local_path_is_the_checked_absolute_path(disk, tmp_path) -> None:
    assert disk.local_path("a/b") == str(tmp_path / "disk" / "a" / "b")
    assert disk.local_path("") == str(tmp_path / "disk")
    with pytest.raises(PathEscape):
        disk.local_path("../elsewhere")


def test_short_writes_are_completed() -> None:
    class Trickle:
        def __init__(self) -> None:
            self.out = bytearray()

        def write(self, view) -> int:
            n = min(3, len(view))
            self.out += bytes(view[:n])
            return n

    fh = Trickle()
    _write_all(fh, b"0123456789abcdef")
    assert bytes(fh.out) == b"0123456789abcdef"


async def test_format_file_round_trip_and_errors(disk) -> None:
    dep, ids = new_ids(3)
    fmt = new_format(1, ids, dep, 2, 1, 1 << 20, 4096)
    assert fmt.disk_id == ids[1] and fmt.slot == 1
    await disk.write_format(fmt.to_json(), create_root=False, sync=True)
    assert os.path.isfile(os.path.join(disk.root, FORMAT_FILE))
    assert DiskFormat.from_json(await disk.read_format(), "x") == fmt
    doc = json.loads(fmt.to_json())
    for bad, match in [(b"{nope", "unreadable"), (json.dumps({**doc, "format": "minio"}).encode(), "not a Buckets"),
                       (json.dumps({**doc, "version": 99}).encode(), "version"),
                       (json.dumps({**doc, "surprise": 1}).encode(), "unreadable"),
                       (json.dumps({"format": "buckets", "version": 1}).encode(), "unreadable")]:
        with pytest.raises(FormatError, match=match):
            DiskFormat.from_json(bad, "where")
    assert len(set(ids)) == 3 and dep not in ids


# -- the free-space reserve (--disk-reserve): new data refused below it, deletions not -------------
def test_the_reserve_is_a_percent_with_a_floor_capped_for_small_disks() -> None:
    from buckets.storage.local import reserve_bytes

    gib = 1 << 30
    assert reserve_bytes(1000 * gib, 1.0) == 10 * gib  # 1% of a large disk
    assert reserve_bytes(10 * gib, 1.0) == 256 << 20  # at least 256 MiB ...
    assert reserve_bytes(1 * gib, 1.0) == int(0.05 * gib)  # ... but never more than 5% of a small one
    assert reserve_bytes(1000 * gib, 0.0) == 0  # 0: none
    assert reserve_bytes(1000 * gib, 10.0) == 100 * gib


async def test_a_disk_at_its_reserve_refuses_new_data_and_takes_the_rest(disk, monkeypatch) -> None:
    from buckets.storage import local

    writer = await disk.create_file("tmp/streaming")  # opened with room
    await writer.write(b"x" * 8192)
    monkeypatch.setattr(local, "disk_reserve", 100.0)  # now every byte of the disk is reserve
    disk._space = None  # (the statvfs of a second ago would serve otherwise)
    with pytest.raises(DiskFull, match="kept for deletions"):
        await writer.write(b"y" * 8192)  # a shard file stops where the reserve begins
    await writer.abort()
    with pytest.raises(DiskFull):
        await disk.create_file("tmp/another")
    with pytest.raises(DiskFull):
        await disk.append_records([b"an inline object"], sync=False, data=True)
    assert disk.online  # full is not failing
    loc = (await disk.append_records([b"a delete marker"], sync=False))[0]  # deletions use the reserve
    assert await disk.read_record(loc) == b"a delete marker"
    await disk.write_file("meta/x", b"metadata", sync=False)  # and metadata
    with pytest.raises(DiskFull):  # but not an inline object's metadata file (new data)
        await disk.write_file("meta/y", b"an inline object", sync=False, new_data=True)
    with pytest.raises(FileNotFound):
        await disk.read_file("meta/y")  # nothing of it was written
    monkeypatch.setattr(local, "disk_reserve", 0.0)
    await disk.write_file("meta/y", b"an inline object", sync=False, new_data=True)
    assert await disk.read_file("meta/y") == b"an inline object"
    loc = (await disk.append_records([b"an inline object"], sync=False, data=True))[0]
    assert await disk.read_record(loc) == b"an inline object"


@pytest.mark.ballast
async def test_the_ballast_is_kept_while_there_is_room_and_released_when_the_file_system_fills(
        disk, monkeypatch, caplog) -> None:
    """A quarter of the reserve (at most 16 MiB) kept as allocated space: released when free space
    falls under half the reserve, or at once by a write that finds no space at all (ENOSPC: not
    the reserve's refusal), and made again once the disk has its reserve and twice the ballast."""
    from buckets.storage import local

    ballast = os.path.join(disk.root, ".buckets.sys", "ballast")
    os.makedirs(os.path.dirname(ballast), exist_ok=True)  # a formatted disk's system directory
    real = os.statvfs(disk.root)
    total = real.f_blocks * real.f_frsize
    size = local.ballast_bytes(total)
    assert 0 < size <= local.BALLAST_MAX and size == min(local.BALLAST_MAX, local.reserve_bytes(total) // 4)
    if real.f_bavail * real.f_frsize < local.reserve_bytes(total) + 2 * size:
        pytest.skip("the test directory's file system is too full for a ballast")
    await disk.upkeep()
    assert os.stat(ballast).st_blocks * 512 >= size  # allocated, not a sparse file
    assert not os.path.exists(ballast + ".tmp")

    def free(n: int):
        return lambda path: os.statvfs_result((real.f_bsize, 1, total, n, n, real.f_files, real.f_ffree,
                                               real.f_favail, real.f_flag, real.f_namemax))

    monkeypatch.setattr(local.os, "statvfs", free(local.reserve_bytes(total) // 2 + 1))
    await disk.upkeep()
    assert os.path.exists(ballast)  # within the reserve, but more than half of it left
    monkeypatch.setattr(local.os, "statvfs", free(local.reserve_bytes(total) // 2 - 1))
    await disk.upkeep()
    assert not os.path.exists(ballast) and "released its" in caplog.text
    monkeypatch.setattr(local.os, "statvfs", free(local.reserve_bytes(total) + 2 * size - 1))
    await disk.upkeep()
    assert not os.path.exists(ballast)  # not yet: room for the reserve and twice the ballast first
    monkeypatch.undo()
    await disk.upkeep()
    assert os.path.exists(ballast)

    error = disk._typed(OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(error, DiskFull) and not os.path.exists(ballast) and disk._ballast_freed
    assert disk._typed(OSError(errno.ENOSPC, "No space left on device"))  # none left: nothing more to do
    monkeypatch.setattr(local, "disk_reserve", 0.0)
    await disk.upkeep()
    assert not os.path.exists(ballast)  # no reserve, no ballast


async def test_a_call_past_the_disk_timeout_takes_the_disk_offline(disk, monkeypatch) -> None:
    """A disk that hangs answers nothing: past ``disk_timeout`` its call fails as an I/O error
    does (the thread is left to finish on its own), and the disk goes offline; until the call
    returns, the disk hangs (every call but a read of data fails at once). A call marked
    unbounded (a whole tree's removal) waits as long as it takes. The real case, a frozen file
    system under load, is tests/faults/test_faults_eio.py."""
    import threading

    from buckets.storage import local as local_storage

    monkeypatch.setattr(local_storage, "disk_timeout", 0.2)
    release = threading.Event()
    with pytest.raises(DiskFaulty) as hung:
        await disk._run(release.wait, 5)
    assert "did not finish within 0.2s: the disk hangs" in str(hung.value) and "wait" in str(hung.value)
    assert not disk.online and "the disk hangs" in disk.last_error
    # Until that call returns, every other call but a read of data fails at once (no thread of
    # its own waiting out the timeout again), the probe's read of the format included.
    started = time.monotonic()
    with pytest.raises(DiskFaulty, match=r"a call has not returned for \d+s: the disk hangs"):
        await disk.write_file("probe", b"x", sync=False)
    with pytest.raises(DiskFaulty):
        await disk.read_format()
    assert time.monotonic() - started < 0.1
    assert await disk._run(lambda: "read", read=True) == "read"  # (a frozen file system takes reads)
    release.set()
    deadline = time.monotonic() + 5
    while disk._busy and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not disk._busy
    disk.mark_online()
    await disk.write_file("probe", b"x", sync=False)
    assert await disk._run(lambda: (time.sleep(0.4), "done")[1], bounded=False) == "done"
    assert disk.online


async def _a_stuck_call_whose_waiter_left(disk, monkeypatch):
    """A call held in the disk's thread (until the returned event is set) whose waiter was
    cancelled, with a disk timeout of 0.2 s."""
    import threading

    from buckets.storage import local as local_storage

    monkeypatch.setattr(local_storage, "disk_timeout", 0.2)
    release = threading.Event()
    waiter = asyncio.ensure_future(disk._run(release.wait, 5))
    await asyncio.sleep(0.05)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    return release


async def test_a_call_whose_waiter_left_still_takes_a_hung_disk_offline(disk, monkeypatch) -> None:
    """A peer's write cut its stream (it left this disk's shard out: session 50) while the
    call was stuck in the disk's thread: no waiter is left to time out, and no more calls
    come. The call still counts: once it outlasts the timeout the disk hangs and goes offline."""
    release = await _a_stuck_call_whose_waiter_left(disk, monkeypatch)
    assert disk.online  # not yet: the call has not outlasted the timeout
    deadline = time.monotonic() + 5
    while disk.online and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not disk.online and "did not finish within 0.2s: the disk hangs" in disk.last_error
    with pytest.raises(DiskFaulty, match=r"a call has not returned for \d+s: the disk hangs"):
        await disk.write_file("probe", b"x", sync=False)
    release.set()
    deadline = time.monotonic() + 5
    while disk._busy and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    disk.mark_online()
    await disk.write_file("probe", b"x", sync=False)


async def test_a_cancelled_call_that_returns_in_time_is_no_hang(disk, monkeypatch) -> None:
    release = await _a_stuck_call_whose_waiter_left(disk, monkeypatch)
    release.set()  # it returns well within the timeout
    await asyncio.sleep(0.5)
    assert disk.online and not disk._hung_at


def _claim_elsewhere(root: str) -> str:
    """Another process reads the disk's format (and so takes its lock): what it says."""
    import subprocess
    import sys

    code = ("import asyncio, sys\n"
            "from buckets.storage import LocalDisk\n"
            "from buckets.errors import DiskInUse, ForeignDisk, UnformattedDisk\n"
            "async def main():\n"
            "    d = LocalDisk(sys.argv[1])\n"
            "    try:\n"
            "        await d.read_format()\n"
            "        print('claimed')\n"
            "    except UnformattedDisk:\n"
            "        print('claimed')\n"
            "    except ForeignDisk:\n"
            "        print('foreign')\n"
            "    except DiskInUse as exc:\n"
            "        print('refused:', exc)\n"
            "    finally:\n"
            "        await d.close()\n"
            "asyncio.run(main())\n")
    return subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


async def test_a_disk_is_locked_by_the_first_process_that_reads_its_format(tmp_path) -> None:
    """Two servers on one directory would append to the same logs and registry: the second
    process is refused with the first one's pid; handles in one process share the lock, which
    lasts until the last of them closes."""
    from buckets.errors import UnformattedDisk

    root = tmp_path / "disk"
    root.mkdir()
    first, second = LocalDisk(str(root)), LocalDisk(str(root))
    try:
        for d in (first, second):
            with pytest.raises(UnformattedDisk):
                await d.read_format()
        said = _claim_elsewhere(str(root))
        assert said.startswith("refused:") and f"(pid {os.getpid()})" in said and "stop the other one" in said, said
        await first.close()
        assert _claim_elsewhere(str(root)).startswith("refused:")  # the second handle still holds it
    finally:
        await first.close()
        await second.close()
    assert _claim_elsewhere(str(root)) == "claimed"
    # a foreign directory is not written to, not even for the lock
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "photo.jpg").write_bytes(b"x")
    assert _claim_elsewhere(str(foreign)) == "foreign"
    assert sorted(os.listdir(foreign)) == ["photo.jpg"]


async def test_a_read_of_sectors_that_fail_is_damage_not_a_dead_disk(tmp_path) -> None:
    """On a FUSE disk answering EIO for chosen byte ranges (tests/fusedisk.py): a read of data
    whose sectors fail (a shard's range, a record, a metadata file) is ``CorruptData`` and the
    disk stays online; a log scan reads the blocks around the bad one and finds the records
    there; the bad ranges healed, every read works again."""
    from fusedisk import FuseDisk

    from buckets.errors import CorruptData
    from buckets.storage import LocalDisk
    from buckets.storage.format import LOG_DIR

    fuse = FuseDisk(tmp_path / "backing", tmp_path / "disk")
    disk = LocalDisk(str(fuse.path), "disk-1")
    try:
        await disk.write_file("shards/a", b"s" * 65536, sync=False)
        await disk.write_file("meta/b", b"metadata", sync=False)
        locs = await disk.append_records([bytes([i]) * 3000 for i in range(8)], sync=True, data=True)
        [segment] = (fuse.backing / LOG_DIR).glob("*.seg")
        fuse.bad("shards/a", 8192, 12288)
        fuse.bad("meta/b", 0, 8)  # (meta/b: written anew by a rename: the file there now)
        fuse.bad(str(segment.relative_to(fuse.backing)), locs[2][1], locs[2][1] + 1)
        assert await disk.read_range("shards/a", 0, 8192) == b"s" * 8192  # around the bad sector
        with pytest.raises(CorruptData, match="unreadable"):
            await disk.read_range("shards/a", 4096, 8192)
        with pytest.raises(CorruptData, match="unreadable"):
            await disk.read_file("meta/b")
        with pytest.raises(CorruptData, match="unreadable"):
            await disk.read_record(locs[2])
        assert disk.online
        scanned = [raw async for _, raw in disk.walk_records(None)]
        lost = {bytes([2]) * 3000}  # (and any other record in the bad 4 KiB block)
        assert set(scanned) - lost and set(scanned) <= {bytes([i]) * 3000 for i in range(8)} - lost
        assert len(scanned) >= 5
        fuse.heal()
        assert await disk.read_record(locs[2]) == bytes([2]) * 3000
        assert await disk.read_file("meta/b") == b"metadata"
    finally:
        await disk.close()
        fuse.close()


def open_descriptors_of(path: str) -> int:
    fds = "/proc/self/fd"
    count = 0
    for fd in os.listdir(fds):
        try:
            target = os.readlink(f"{fds}/{fd}")
        except OSError:
            continue
        count += target.startswith(path)
    return count


async def test_a_range_reader_opens_one_descriptor_and_closes_it(disk) -> None:
    """``open_range``: opened at its first read, one descriptor for every read of the range,
    reads outside the range answered None (the caller reads those with read_range), closed by
    ``close``, after which it reads nothing."""
    data = os.urandom(10_000)
    await disk.write_file("r.bin", data, sync=False)
    full = disk.local_path("r.bin")
    reader = disk.open_range("r.bin", 1000, 8000)
    assert open_descriptors_of(full) == 0  # nothing opened before the first read
    assert await reader.read(1000, 10) == data[1000:1010]
    assert await reader.read(5000, 4000) == data[5000:9000]
    assert open_descriptors_of(full) == 1
    assert await reader.read(0, 10) is None and await reader.read(8999, 2) is None
    reader.close()
    assert open_descriptors_of(full) == 0
    assert await reader.read(1000, 10) is None
    assert disk.open_range("r.bin", -1, 10) is None


async def test_a_range_reader_closed_during_a_read_closes_after_it(disk, monkeypatch) -> None:
    """A descriptor closed under a ``pread`` running in a disk thread could be reused by
    another open and read the wrong file: ``close`` leaves it to the read, which closes it
    when it returns."""
    import threading

    from buckets.storage import local

    await disk.write_file("r.bin", b"x" * 100, sync=False)
    full = disk.local_path("r.bin")
    entered, release = threading.Event(), threading.Event()
    real = local._pread_data

    def held(fd, length, offset, path):
        entered.set()
        release.wait(10)
        return real(fd, length, offset, path)

    monkeypatch.setattr(local, "_pread_data", held)
    reader = disk.open_range("r.bin", 0, 100)
    read = asyncio.ensure_future(reader.read(0, 10))
    while not entered.is_set():
        await asyncio.sleep(0.01)
    reader.close()
    assert open_descriptors_of(full) == 1  # still being read
    release.set()
    assert await read == b"x" * 10
    assert open_descriptors_of(full) == 0
