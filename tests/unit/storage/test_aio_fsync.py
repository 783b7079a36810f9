"""Asynchronous fsync (``buckets.storage.aiosync``) and the record log's appends on the event
loop (``LocalDisk._append_here``): real Linux AIO on real files, real disks in a temporary
directory. Where the kernel has no AIO (another OS, a container forbidding ``io_setup``)
the tests of the AIO context itself are skipped and the disk's tests check the fallback."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from buckets.errors import DiskFaulty
from buckets.storage import LocalDisk, aiosync
from buckets.storage import local as local_storage
from buckets.storage import records as rlog
from buckets.storage.format import LOG_DIR


@pytest.fixture(autouse=True)
def appends_on_the_loop(monkeypatch) -> None:
    """The path these tests are about (``--aio-fsync on``; off by default since session 45)."""
    monkeypatch.setattr(local_storage, "aio_fsync", True)


def _aio_or_skip() -> aiosync.AioFsync:
    aio = aiosync.for_loop()
    if aio is None:
        pytest.skip("Linux AIO is not available here")
    return aio


async def test_fsync_and_fdatasync_complete(tmp_path) -> None:
    aio = _aio_or_skip()
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 10000)
        assert await aio.fsync(fd) is None
        os.write(fd, b"y")
        assert await aio.fsync(fd, datasync=True) is None
    finally:
        os.close(fd)
    assert path.stat().st_size == 10001
    assert aiosync.for_loop() is aio  # one per loop


async def test_more_fsyncs_than_the_depth_all_complete(tmp_path) -> None:
    """Over DEPTH at once: the rest wait for a slot, none is lost or answered twice."""
    aio = _aio_or_skip()
    fds = [os.open(tmp_path / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644) for i in range(8)]
    try:
        for fd in fds:
            os.write(fd, b"z" * 100)
        results = await asyncio.gather(*(aio.fsync(fds[i % len(fds)]) for i in range(aiosync.DEPTH * 2 + 7)))
        assert results == [None] * (aiosync.DEPTH * 2 + 7)
        assert not aio._inflight and not aio._waiting
    finally:
        for fd in fds:
            os.close(fd)


async def test_errors_come_back_typed(tmp_path) -> None:
    aio = _aio_or_skip()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    with pytest.raises(OSError) as info:
        await aio.fsync(fd)  # closed: refused at submission
    assert info.value.errno == errno.EBADF
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(aiosync.AioUnsupported):  # a pipe has no fsync: EINVAL
            await aio.fsync(write_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert not aio.closed  # the context still works after both
    fd = os.open(tmp_path / "g", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        await aio.fsync(fd)
    finally:
        os.close(fd)


def test_each_loop_gets_its_own_context_and_a_closed_loops_is_freed(tmp_path) -> None:
    async def one() -> aiosync.AioFsync | None:
        aio = aiosync.for_loop()
        if aio is not None:
            fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                await aio.fsync(fd)
            finally:
                os.close(fd)
        return aio

    loops = [asyncio.new_event_loop() for _ in range(3)]
    try:
        first = loops[0].run_until_complete(one())
        loops[0].close()
        if first is None:
            pytest.skip("Linux AIO is not available here")
        assert not first.closed
        second = loops[1].run_until_complete(one())
        assert second is not None and second is not first
        assert first.closed  # swept when the second loop asked (its loop was closed)
        assert not second.closed
        loops[1].close()
        loops[2].run_until_complete(one())
        assert second.closed
    finally:
        for loop in loops:
            loop.close()


# -- the record log's appends ----------------------------------------------------------------


class _CountingPool:
    """Wraps a disk's pool: how many calls went to its threads."""

    def __init__(self, disk: LocalDisk) -> None:
        self.calls: list[str] = []
        self._run = disk._pool.run
        disk._pool.run = self.run

    def run(self, fn, *args):
        inner, rest = fn, list(args)
        while rest and callable(rest[0]):  # (the disk's wrappers: _timed, _checked)
            inner = rest.pop(0)
        name = getattr(inner, "__name__", repr(inner))
        if name != "_read":  # reads of records not in the page cache: not what is counted
            self.calls.append(name)
        return self._run(fn, *args)


async def test_appends_after_the_first_need_no_thread(tmp_path) -> None:
    _aio_or_skip()
    disk = LocalDisk(str(tmp_path))
    try:
        pool = _CountingPool(disk)
        first = await disk.append_records([b"a" * 4000], sync=True)  # opens the segment: a thread
        assert pool.calls == ["_append_batch"]
        pool.calls.clear()
        results = await asyncio.gather(*(disk.append_records([bytes([i]) * 4000, b"tail"], sync=True)
                                         for i in range(20)))
        assert pool.calls == []  # written on the loop, fsynced through AIO
        locations = first + [loc for locs in results for loc in locs]
        assert len({loc[0] for loc in locations}) == 1  # one segment, back to back
        offsets = sorted((loc[1], loc[2]) for loc in locations)
        assert all(a[0] + a[1] == b[0] for a, b in zip(offsets, offsets[1:]))
        assert await disk.read_record(first[0]) == b"a" * 4000
        for i, locs in enumerate(results):
            assert await disk.read_record(locs[0]) == bytes([i]) * 4000
            assert await disk.read_record(locs[1]) == b"tail"
        # a batch over LOOP_APPEND_MAX goes to the thread, as before
        big = [b"b" * 100_000] * (local_storage.LOOP_APPEND_MAX // 100_000 + 1)
        locs = await disk.append_records(big, sync=True)
        assert pool.calls == ["_append_batch"]
        assert await disk.read_record(locs[-1]) == big[-1]
    finally:
        await disk.close()


async def test_aio_off_uses_the_thread_for_every_batch(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(local_storage, "aio_fsync", False)
    disk = LocalDisk(str(tmp_path))
    try:
        pool = _CountingPool(disk)
        for i in range(3):
            locs = await disk.append_records([b"r%d" % i], sync=True)
            assert await disk.read_record(locs[0]) == b"r%d" % i
        assert pool.calls == ["_append_batch"] * 3
    finally:
        await disk.close()


class _FailingAio:
    def __init__(self, error: OSError) -> None:
        self.error = error
        self.calls = 0

    def fsync(self, fd: int, *, datasync: bool = False) -> asyncio.Future:
        self.calls += 1
        future = asyncio.get_running_loop().create_future()
        future.set_exception(self.error)
        return future


async def test_a_failed_fsync_fails_the_batch_and_ends_the_segment(tmp_path, monkeypatch) -> None:
    """EIO from the asynchronous fsync: the callers get DiskFaulty, nothing is appended after
    the unsynced bytes (the next batch opens a new segment), and the records before stay."""
    disk = LocalDisk(str(tmp_path))
    try:
        before = await disk.append_records([b"kept"], sync=True)
        failing = _FailingAio(OSError(errno.EIO, "Input/output error"))
        monkeypatch.setattr(aiosync, "for_loop", lambda: failing)
        with pytest.raises(DiskFaulty):
            await disk.append_records([b"lost"], sync=True)
        assert failing.calls == 1
        assert disk._seg is None
        monkeypatch.undo()
        after = await disk.append_records([b"next"], sync=True)
        assert after[0][0] > before[0][0]  # a new segment
        assert await disk.read_record(before[0]) == b"kept"
        assert await disk.read_record(after[0]) == b"next"
        segments = sorted(os.listdir(tmp_path / LOG_DIR))
        assert [rlog.parse_segment_name(n) for n in segments] == [before[0][0], after[0][0]]
    finally:
        await disk.close()


async def test_a_file_system_refusing_aio_falls_back_to_the_thread(tmp_path, monkeypatch) -> None:
    disk = LocalDisk(str(tmp_path))
    try:
        await disk.append_records([b"first"], sync=True)
        refusing = _FailingAio(aiosync.AioUnsupported(errno.EINVAL, "fsync: Invalid argument"))
        monkeypatch.setattr(aiosync, "for_loop", lambda: refusing)
        pool = _CountingPool(disk)
        locs = await disk.append_records([b"second"], sync=True)  # written here, synced by a thread
        assert refusing.calls == 1 and pool.calls == ["fsync"]
        assert await disk.read_record(locs[0]) == b"second"
        pool.calls.clear()
        locs = await disk.append_records([b"third"], sync=True)
        assert refusing.calls == 1 and pool.calls == ["_append_batch"]  # the thread from now on
        assert await disk.read_record(locs[0]) == b"third"
    finally:
        await disk.close()


async def test_no_aio_here_means_the_thread(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(aiosync, "for_loop", lambda: None)
    disk = LocalDisk(str(tmp_path))
    try:
        await disk.append_records([b"first"], sync=True)
        pool = _CountingPool(disk)
        locs = await disk.append_records([b"second"], sync=True)
        assert pool.calls == ["_append_batch"]
        assert await disk.read_record(locs[0]) == b"second"
        # without sync nothing waits: written on the loop
        pool.calls.clear()
        locs = await disk.append_records([b"unsynced"], sync=False)
        assert pool.calls == []
        assert await disk.read_record(locs[0]) == b"unsynced"
    finally:
        await disk.close()


async def test_a_refused_aio_fsync_whose_thread_fsync_fails_ends_the_segment(tmp_path, monkeypatch) -> None:
    disk = LocalDisk(str(tmp_path))
    try:
        before = await disk.append_records([b"kept"], sync=True)
        refusing = _FailingAio(aiosync.AioUnsupported(errno.EINVAL, "fsync: Invalid argument"))
        monkeypatch.setattr(aiosync, "for_loop", lambda: refusing)

        def failing_fsync(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(local_storage.os, "fsync", failing_fsync)
        with pytest.raises(DiskFaulty):
            await disk.append_records([b"lost"], sync=True)
        assert disk._seg is None  # nothing is appended after the unsynced record
        monkeypatch.undo()
        after = await disk.append_records([b"next"], sync=True)
        assert after[0][0] > before[0][0]
        assert await disk.read_record(after[0]) == b"next"
    finally:
        await disk.close()
