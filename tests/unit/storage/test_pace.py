"""``storage/pace.py``: a disk far more of whose calls are slow than its siblings' is named,
one slow only in bursts included; a node whose disks are all slow names none; shares go stale;
a disk's handles share one."""

from __future__ import annotations

import asyncio

from buckets.storage import LocalDisk, pace


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Disk:
    def __init__(self, clock: Clock, name: str, online: bool = True) -> None:
        self.pace, self.name, self.online = pace.Pace(clock), name, online

    def calls(self, seconds: float, n: int = 20) -> None:
        for _ in range(n):
            self.pace.note(seconds)

    def __repr__(self) -> str:
        return self.name


def test_one_disk_far_slower_than_its_siblings_lags() -> None:
    clock = Clock()
    disks = [Disk(clock, f"d{i}") for i in range(4)]
    for d in disks[:3]:
        d.calls(0.004)
    disks[3].calls(0.3)
    assert pace.lagging(disks) == [disks[3]]
    disks[3].calls(0.015, n=200)  # a little slower than the others is not lagging
    assert pace.lagging(disks) == []


def test_a_disk_that_stalls_in_bursts_lags_though_its_mean_looks_fine() -> None:
    """The slow-disk experiment of session 52: a throttled device answered most calls at once
    and some after seconds; its mean swung from 630 ms to 2 ms within seconds."""
    clock = Clock()
    disks = [Disk(clock, f"d{i}") for i in range(4)]
    for _ in range(10):
        for d in disks[:3]:
            d.calls(0.003, n=10)
        disks[3].calls(0.002, n=8)
        disks[3].calls(1.5, n=2)  # one call in five stalls
        clock.now += 1
    assert pace.lagging(disks) == [disks[3]]
    disks[3].calls(0.002, n=10)  # ten quick calls in a row do not clear it: the share remembers
    assert pace.lagging(disks) == [disks[3]]


def test_a_floor_keeps_fast_disks_from_lagging_each_other() -> None:
    clock = Clock()
    disks = [Disk(clock, f"d{i}") for i in range(4)]
    for d in disks[:3]:
        d.calls(0.0002)
    disks[3].calls(0.05)  # 250 times the others, but under what a caller's hedge waits
    assert pace.lagging(disks) == []
    for d in disks[:3]:  # a loaded machine: every disk now and then over the line
        d.calls(0.004, n=30)
        d.calls(0.2, n=1)
    disks[3].calls(0.004, n=30)
    disks[3].calls(0.2, n=2)
    assert pace.lagging(disks) == []


def test_all_slow_or_too_few_disks_name_none() -> None:
    clock = Clock()
    disks = [Disk(clock, f"d{i}") for i in range(4)]
    for d in disks:
        d.calls(0.4)  # the node as a whole is slow: its peers are right to blame it
    assert pace.lagging(disks) == []
    fast = [Disk(clock, f"f{i}") for i in range(2)]
    for d in fast:
        d.calls(0.002)
    assert pace.lagging([fast[0], disks[0]]) == []  # two disks: no majority to compare with
    half = [Disk(clock, f"h{i}") for i in range(4)]
    for d in half[:2]:
        d.calls(0.002)
    for d in half[2:]:
        d.calls(0.5)
    assert pace.lagging(half) == []  # half of them: not outliers


def test_an_average_counts_only_when_recent_and_based_on_enough_calls() -> None:
    clock = Clock()
    disks = [Disk(clock, f"d{i}") for i in range(4)]
    for d in disks[:3]:
        d.calls(0.004)
    disks[3].calls(0.3, n=pace.MIN_CALLS - 1)
    assert pace.lagging(disks) == []
    disks[3].calls(0.3, n=1)
    assert pace.lagging(disks) == [disks[3]]
    clock.now += pace.STALE + 1  # no call since: no longer known, nor the others
    assert pace.lagging(disks) == [] and disks[3].pace.current() is None
    disks[3].calls(0.002, n=pace.MIN_CALLS)  # a fresh start, not the old share
    assert disks[3].pace.share == 0.0
    offline = [Disk(clock, f"o{i}", online=i != 3) for i in range(4)]
    for d in offline[:3]:
        d.calls(0.004)
    offline[3].calls(0.3)
    assert pace.lagging(offline) == []  # an offline disk is the disk monitor's business


def test_a_disks_calls_feed_its_pace_shared_with_its_peer_handle(tmp_path) -> None:
    async def run() -> None:
        disk = LocalDisk(str(tmp_path / "d1"))
        (tmp_path / "d1").mkdir()
        handle = disk.peer_handle()
        try:
            assert handle.pace is disk.pace
            for i in range(pace.MIN_CALLS):
                await disk.write_file(f"f{i}", b"x" * 100, sync=False)
                await handle.read_file(f"f{i}")
            assert disk.pace.calls >= 2 * pace.MIN_CALLS and disk.pace.current() is not None
        finally:
            await handle.close()
            await disk.close()

    asyncio.run(run())


def test_a_disk_found_lagging_stays_so_down_to_half_the_line() -> None:
    clock = Clock()
    disks = [Disk(clock, f"d{i}") for i in range(4)]
    for d in disks[:3]:
        d.calls(0.003, n=50)
    disks[3].calls(0.003, n=50)
    disks[3].calls(0.5, n=3)  # a share just over the floor
    assert pace.lagging(disks) == [disks[3]]
    disks[3].calls(0.003, n=10)  # ... and just under it: not lagging, unless found so before
    assert pace.FLOOR / 2 < disks[3].pace.share < pace.FLOOR
    assert pace.lagging(disks) == [] and pace.lagging(disks, held=[disks[3]]) == [disks[3]]
    disks[3].calls(0.003, n=50)
    assert pace.lagging(disks, held=[disks[3]]) == []
