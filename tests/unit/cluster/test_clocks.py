"""The peers' clock offsets (``buckets.cluster.clocks``): the estimate, the verdict, the log."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

import pytest

from buckets.cluster.clocks import ClockCollector, ClockWatch, Sample, sample_of


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_ping_s_offset_is_the_peer_s_time_against_the_middle_of_the_round_trip() -> None:
    s = sample_of(100.0, 100.2, 0.2, 103.1, at=5.0)
    assert s.offset == pytest.approx(3.0) and s.uncertainty == pytest.approx(0.1)
    assert s.at_least == pytest.approx(2.9)
    assert sample_of(100.0, 100.2, 0.2, 100.15, at=5.0).at_least == 0.0  # the bound includes 0
    assert sample_of(100.0, 100.2, 0.2, 97.0, at=5.0).at_least == pytest.approx(3.1 - 0.1)


def test_the_estimate_is_the_fresh_sample_with_the_shortest_round_trip() -> None:
    clock = FakeMonotonic()
    watch = ClockWatch(window=3, stale=60.0, monotonic=clock)
    assert watch.estimate("p") is None
    watch.record("p", Sample(offset=0.30, rtt=0.050, at=clock.now))
    watch.record("p", Sample(offset=0.01, rtt=0.002, at=clock.now))
    watch.record("p", Sample(offset=0.90, rtt=0.400, at=clock.now))  # a ping queued behind load
    assert watch.estimate("p").offset == 0.01
    watch.record("p", Sample(offset=0.02, rtt=0.010, at=clock.now))
    watch.record("p", Sample(offset=0.03, rtt=0.020, at=clock.now))
    watch.record("p", Sample(offset=0.04, rtt=0.030, at=clock.now))  # the window of 3 dropped the best
    assert watch.estimate("p").offset == 0.02
    clock.now += 61  # nothing newer than a minute: not reported
    assert watch.estimate("p") is None
    assert watch.peer_status("p") == {"clock_offset": None, "clock_uncertainty": None}
    assert watch.status() == {"status": "ok", "warn_above": 0.5, "limit": 1.0, "max_offset": 0.0, "measured": 0,
                              "skewed": []}


def test_a_peer_is_skewed_only_when_even_the_nearest_edge_of_the_bound_is_beyond_the_warning() -> None:
    clock = FakeMonotonic()
    watch = ClockWatch(monotonic=clock)
    watch.record("wide", Sample(offset=0.7, rtt=0.5, at=clock.now))  # 0.45..0.95: maybe fine
    watch.record("near", Sample(offset=-0.2, rtt=0.001, at=clock.now))
    assert watch.status()["status"] == "ok" and watch.status()["skewed"] == []
    watch.record("far", Sample(offset=-1.5, rtt=0.002, at=clock.now))
    watch.record("wide", Sample(offset=0.7, rtt=0.1, at=clock.now))  # 0.65..0.75: off for certain
    status = watch.status()
    assert status["status"] == "skewed" and status["skewed"] == ["far", "wide"]  # farthest first
    assert status["max_offset"] == 1.5 and status["measured"] == 3
    assert watch.peer_status("far") == {"clock_offset": -1.5, "clock_uncertainty": 0.001}
    watch.forget("far")
    assert watch.status()["skewed"] == ["wide"]


def test_the_log_names_a_skewed_peer_once_and_its_return_once(caplog) -> None:
    clock = FakeMonotonic()
    watch = ClockWatch(window=1, monotonic=clock)
    caplog.set_level(logging.INFO, logger="buckets.cluster.clocks")
    watch.record("p", Sample(offset=0.1, rtt=0.001, at=clock.now))
    assert caplog.records == []
    for _ in range(3):
        watch.record("p", Sample(offset=0.8, rtt=0.001, at=clock.now))
    assert [(r.levelno, "+0.800 s" in r.getMessage(), "NTP" in r.getMessage()) for r in caplog.records] == \
        [(logging.WARNING, True, True)]
    assert "no longer guaranteed" not in caplog.records[0].getMessage()
    watch.record("p", Sample(offset=0.05, rtt=0.001, at=clock.now))
    watch.record("p", Sample(offset=0.05, rtt=0.001, at=clock.now))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
    assert "within 0.5 s" in caplog.records[1].getMessage()
    watch.record("p", Sample(offset=-2.0, rtt=0.001, at=clock.now))  # beyond the 1 s limit: an error
    assert caplog.records[-1].levelno == logging.ERROR
    assert "-2.000 s" in caplog.records[-1].getMessage() and "no longer guaranteed" in caplog.records[-1].getMessage()


async def test_measure_records_what_a_ping_answers_and_nothing_when_it_fails() -> None:
    watch = ClockWatch()

    async def ahead() -> dict:
        await asyncio.sleep(0.01)
        return {"time": time.time() + 2.0}

    async def down() -> dict:
        raise ConnectionError("refused")

    async def odd() -> dict:
        return {"time": "soon"}

    s = await watch.measure("a", ahead)
    assert s is not None and abs(s.offset - 2.0) < 0.05 and 0.005 < s.rtt < 1.0
    assert watch.estimate("a") == s
    assert await watch.measure("b", down) is None and watch.estimate("b") is None
    assert await watch.measure("c", odd) is None and watch.estimate("c") is None


async def test_watch_pings_the_peers_named_each_round_and_forgets_the_others() -> None:
    watch = ClockWatch()
    calls: list[str] = []
    named = {"a", "b"}

    def ping(name: str):
        async def answer() -> dict:
            calls.append(name)
            return {"time": time.time()}
        return answer

    task = asyncio.get_running_loop().create_task(
        watch.watch(lambda: {p: ping(p) for p in sorted(named)}, interval=0.01, first=0.0))
    try:
        for _ in range(200):
            if {"a", "b"} <= set(calls):
                break
            await asyncio.sleep(0.01)
        assert watch.status()["measured"] == 2
        named.discard("b")
        seen = len(calls)
        for _ in range(200):
            if len(calls) > seen + 2:
                break
            await asyncio.sleep(0.01)
        assert watch.estimate("b") is None and watch.estimate("a") is not None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_the_collector_exports_each_peer_s_offset_and_nothing_on_a_single_node() -> None:
    clock = FakeMonotonic()
    watch = ClockWatch(monotonic=clock)
    watch.record("http://n2:9000", Sample(offset=0.25, rtt=0.004, at=clock.now))
    families = list(ClockCollector(SimpleNamespace(cluster_node=SimpleNamespace(clocks=watch))).collect())
    by_name = {f.name: f for f in families}
    offset = by_name["buckets_peer_clock_offset_seconds"].samples
    assert [(s.labels, s.value) for s in offset] == [({"peer": "http://n2:9000"}, 0.25)]
    assert [s.value for s in by_name["buckets_peer_clock_uncertainty_seconds"].samples] == [0.002]
    assert list(ClockCollector(SimpleNamespace()).collect()) == []
