"""Request rates for the cluster page (buckets.console.rates) from the server's own request
counter (buckets.obs.metrics.ServerMetrics), with a fake clock."""

from __future__ import annotations

from buckets.console.rates import RateSampler
from buckets.obs.metrics import ServerMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class NoStore:
    registry = None


def requests(metrics: ServerMetrics, api: str, status: int, count: int) -> None:
    for _ in range(count):
        metrics.observe(api, status, 0.001, 0, 0)


def test_no_rate_before_two_samples() -> None:
    sampler = RateSampler(ServerMetrics(NoStore()), clock=Clock())
    assert sampler.rates() == {"seconds": 0.0, "total": None, "by_status": {}, "by_api": []}


def test_rates_per_api_and_status_class_over_the_window() -> None:
    metrics = ServerMetrics(NoStore())
    clock = Clock()
    sampler = RateSampler(metrics, clock=clock, window=60)
    requests(metrics, "GetObject", 200, 5)  # before the first sample: not counted
    sampler.sample()
    clock.now += 10
    requests(metrics, "GetObject", 200, 20)
    requests(metrics, "PutObject", 200, 10)
    requests(metrics, "PutObject", 503, 5)
    requests(metrics, "console.buckets", 200, 50)  # the console's own calls: not shown
    requests(metrics, "peer.read", 200, 50)  # the cluster's own traffic: not shown
    rates = sampler.rates()
    assert rates["seconds"] == 10.0
    assert rates["total"] == 3.5
    assert rates["by_status"] == {"2xx": 3.0, "5xx": 0.5}
    assert rates["by_api"] == [{"api": "GetObject", "rate": 2.0}, {"api": "PutObject", "rate": 1.5}]


def test_old_samples_leave_the_window() -> None:
    metrics = ServerMetrics(NoStore())
    clock = Clock()
    sampler = RateSampler(metrics, clock=clock, window=60)
    sampler.sample()
    requests(metrics, "GetObject", 200, 600)  # a burst long ago
    for _ in range(20):
        clock.now += 5
        sampler.sample()
    requests(metrics, "HeadObject", 200, 60)
    clock.now += 5
    rates = sampler.rates()
    assert 60 <= rates["seconds"] <= 65
    assert [r["api"] for r in rates["by_api"]] == ["HeadObject"]
    assert len(sampler.samples) <= 14


def test_samples_closer_than_a_second_are_one() -> None:
    metrics = ServerMetrics(NoStore())
    clock = Clock()
    sampler = RateSampler(metrics, clock=clock)
    for _ in range(10):
        sampler.sample()
        clock.now += 0.1
    assert len(sampler.samples) == 1


def test_without_metrics_there_is_nothing_to_show() -> None:
    sampler = RateSampler(None)
    sampler.sample()
    assert sampler.rates()["total"] is None
