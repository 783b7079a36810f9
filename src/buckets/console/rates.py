"""Request rates for the cluster page, from the server's own request counter.

The access logger counts every answered request in ``buckets_s3_requests_total`` (labels:
API name, status class; ``buckets.obs.metrics``). :class:`RateSampler` reads that counter
every few seconds into a short history and answers the rate over the last minute, per
API and per status class, as a Prometheus ``rate()`` over the same counter would. Peer
calls between cluster nodes (``peer.*``) and the console's own calls (``console.*``) are
left out: the page shows what clients ask of the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from buckets.runtime import cancel_and_wait

log = logging.getLogger("buckets.console")

SAMPLE_EVERY = 5.0  # seconds between samples
WINDOW = 60.0  # the rate is over this long (or since the first sample, if less)
_HIDDEN_PREFIXES = ("peer.", "console.")


def counter_totals(metrics: Any) -> dict[tuple[str, str], float]:
    """{(api, status class): requests so far} from ``metrics.requests`` (a prometheus Counter)."""
    totals: dict[tuple[str, str], float] = {}
    for family in metrics.requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                api = sample.labels.get("api", "unknown")
                if not api.startswith(_HIDDEN_PREFIXES):
                    totals[(api, sample.labels.get("status_class", "other"))] = sample.value
    return totals


class RateSampler:
    def __init__(self, metrics: Any, *, clock: Callable[[], float] = time.monotonic,
                 every: float = SAMPLE_EVERY, window: float = WINDOW) -> None:
        self.metrics = metrics
        self.clock = clock
        self.every = every
        self.window = window
        self.samples: deque[tuple[float, dict[tuple[str, str], float]]] = deque()
        self._task: asyncio.Task | None = None

    def sample(self) -> None:
        if self.metrics is None:
            return
        now = self.clock()
        if self.samples and now - self.samples[-1][0] < 1.0:
            return  # several pages polling at once: one sample a second is plenty
        self.samples.append((now, counter_totals(self.metrics)))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def rates(self) -> dict[str, Any]:
        """Requests per second over the window: total, per status class and per API (busiest
        first); ``seconds`` is how long the window really is (0: not measured yet)."""
        self.sample()
        if len(self.samples) < 2:
            return {"seconds": 0.0, "total": None, "by_status": {}, "by_api": []}
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        seconds = t1 - t0
        if seconds <= 0:
            return {"seconds": 0.0, "total": None, "by_status": {}, "by_api": []}
        by_api: dict[str, float] = {}
        by_status: dict[str, float] = {}
        for labels, value in last.items():
            delta = max(0.0, value - first.get(labels, 0.0))  # a counter only grows
            by_api[labels[0]] = by_api.get(labels[0], 0.0) + delta
            by_status[labels[1]] = by_status.get(labels[1], 0.0) + delta
        apis = sorted(((api, count / seconds) for api, count in by_api.items() if count > 0),
                      key=lambda item: (-item[1], item[0]))
        return {"seconds": round(seconds, 1), "total": round(sum(by_api.values()) / seconds, 3),
                "by_status": {name: round(count / seconds, 3) for name, count in sorted(by_status.items())},
                "by_api": [{"api": api, "rate": round(rate, 3)} for api, rate in apis]}

    # -- background sampling ------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a failed sample must not end the sampling
                log.exception("console: request-rate sample failed")
            await asyncio.sleep(self.every)

    def start(self) -> None:
        if self._task is None and self.metrics is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
