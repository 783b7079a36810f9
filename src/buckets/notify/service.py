"""The notifier: queue events durably, deliver them to webhooks, at least once.

``emit`` turns what a request did into event records for every matching rule of the
bucket and commits them to the registry's ``events`` table (group-committed and synced
like every registry write) before the request is answered. ``run`` is the delivery
worker: it POSTs each queued event, oldest first, to its target (MinIO's webhook body:
``{"EventName", "Key", "Records": [record]}``), removes it once the target answered 2xx,
and while a target fails backs off exponentially (1 s up to 60 s) for that target only.
Events survive a restart because the queue is the registry.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit

from buckets.runtime import cancel_and_wait, wait_for
from buckets.notify.rules import rules_of
from buckets.registry import Op

log = logging.getLogger("buckets.notify")

MAX_BACKOFF = 60.0
DELIVERY_TIMEOUT = 10.0
BATCH = 256
RESPONSE_LIMIT = 64 * 1024  # bytes of a webhook's answer read before the connection is released


@dataclass(slots=True)
class WebhookTarget:
    name: str
    url: str
    token: str | None = None  # sent as "Authorization: Bearer <token>"
    # delivery state
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""

    @property
    def arn(self) -> str:
        return f"arn:buckets:sqs::{self.name}:webhook"


def parse_targets(values: list[str], environ: dict[str, str] | None = None) -> dict[str, WebhookTarget]:
    """``NAME=URL`` items (``--notify-webhook``); a bearer token for NAME comes from the
    environment, ``BUCKETS_NOTIFY_WEBHOOK_TOKEN_<NAME>`` (secrets stay out of ``ps``)."""
    environ = dict(os.environ if environ is None else environ)
    targets: dict[str, WebhookTarget] = {}
    for item in values:
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip()
        parts = urlsplit(url)
        if not sep or not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum() \
                or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{item!r}: a webhook is NAME=http(s)://HOST[:PORT]/PATH")
        token = environ.get(f"BUCKETS_NOTIFY_WEBHOOK_TOKEN_{name.upper().replace('-', '_').replace('.', '_')}")
        targets[name] = WebhookTarget(name, url, token)
    return targets


@dataclass(slots=True)
class NotifyCounters:
    queued: int = 0
    sent: int = 0
    failed: int = 0  # delivery attempts that failed (the event stays queued)
    by_target: dict[str, list[int]] = field(default_factory=dict)  # name -> [sent, failed]


_SEQUENCE = itertools.count()


class Notifier:
    def __init__(self, store: Any, targets: dict[str, WebhookTarget], *, region: str = "us-east-1") -> None:
        self.store = store
        self.targets = targets
        self.region = region
        self.counters = NotifyCounters()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: Any = None

    # -- producing -------------------------------------------------------------------------
    def wants(self, bucket: str) -> bool:
        """Cheap: does this bucket have any notification rule (a local read)?"""
        record = self.store.catalog.get_bucket(bucket)
        return bool(record and record.get("notification"))

    async def emit(self, bucket: str, happenings: list[dict], *, request_id: str, principal: str,
                   source_ip: str) -> int:
        """Queue one event per (happening, matching rule). A happening is
        ``{"event": "s3:ObjectCreated:Put", "key": ..., "size": ..., "etag": ...}``."""
        record = self.store.catalog.get_bucket(bucket)
        rules = rules_of(record or {})
        if not rules:
            return 0
        now = time.time()
        ops = []
        for happening in happenings:
            for rule in rules:
                if not rule.matches(happening["event"], happening["key"]) or rule.target not in self.targets:
                    continue
                ident = f"{time.time_ns():020d}-{next(_SEQUENCE):08d}-{os.urandom(3).hex()}"
                ops.append(Op("put_event", ident, value={
                    "target": rule.target, "event": happening["event"], "bucket": bucket, "key": happening["key"],
                    "record": _record(self.region, bucket, record or {}, rule.id, happening, now, request_id,
                                      principal, source_ip, ident)}))
        if ops:
            await self.store.registry.commit(ops)
            self.counters.queued += len(ops)
            self._wake.set()
        return len(ops)

    # -- delivering ------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None and self.targets:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="notify-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT))
        while True:
            self._wake.clear()
            wait = await self.deliver_once()
            try:
                await wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    async def deliver_once(self) -> float:
        """One pass over the queue; returns how long to wait before the next (seconds)."""
        now = time.monotonic()
        after = ""
        next_wait = 5.0
        while True:
            batch = await asyncio.get_running_loop().run_in_executor(
                None, self.store.registry.list_events, after, BATCH)
            if not batch:
                return next_wait
            for ident, event in batch:
                after = ident
                target = self.targets.get(event["target"])
                if target is None:  # the server no longer has that webhook: keep the event for it
                    continue
                if target.retry_at > now:
                    next_wait = min(next_wait, target.retry_at - now)
                    continue
                if await self._post(target, event):
                    await self.store.registry.commit([Op("delete_event", ident)])
                else:
                    next_wait = min(next_wait, max(0.05, target.retry_at - time.monotonic()))
            now = time.monotonic()

    async def _post(self, target: WebhookTarget, event: dict) -> bool:
        body = json.dumps({"EventName": event["event"], "Key": f"{event['bucket']}/{event['key']}",
                           "Records": [event["record"]]}).encode()
        headers = {"Content-Type": "application/json"}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        stats = self.counters.by_target.setdefault(target.name, [0, 0])
        try:
            async with self._session.post(target.url, data=body, headers=headers) as resp:
                await resp.content.read(RESPONSE_LIMIT)  # the answer's status is what counts; never the whole body
                ok = 200 <= resp.status < 300
                error = "" if ok else f"HTTP {resp.status}"
        except Exception as exc:  # noqa: BLE001 - any failure is a failed delivery, retried later
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if ok:
            if target.failures:
                log.warning("webhook %s is taking events again", target.name)
            target.failures, target.retry_at, target.last_error = 0, 0.0, ""
            self.counters.sent += 1
            stats[0] += 1
            return True
        target.failures += 1
        target.last_error = error
        target.retry_at = time.monotonic() + min(MAX_BACKOFF, 2.0 ** min(target.failures - 1, 6))
        self.counters.failed += 1
        stats[1] += 1
        if target.failures in (1, 5) or target.failures % 20 == 0:
            log.warning("webhook %s failed %d time(s) in a row (%s); its events stay queued and are retried",
                        target.name, target.failures, error)
        return False

    def queue_depth(self) -> int:
        return self.store.registry.count_events()


def _record(region: str, bucket: str, bucket_record: dict, config_id: str, happening: dict, now: float,
            request_id: str, principal: str, source_ip: str, sequencer: str) -> dict:
    """One record of AWS's event format (``eventVersion`` 2.1)."""
    owner = bucket_record.get("owner", "") or principal
    obj: dict[str, Any] = {"key": quote_plus(happening["key"], safe="/"), "sequencer": sequencer.replace("-", "")[:32]}
    if happening["event"].startswith("s3:ObjectCreated"):
        obj["size"] = happening.get("size", 0)
        obj["eTag"] = happening.get("etag", "")
    if happening.get("version_id"):  # a versioned bucket's: the version made, removed or the marker
        obj["versionId"] = happening["version_id"]
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region,
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
        "eventName": happening["event"][len("s3:"):],
        "userIdentity": {"principalId": principal},
        "requestParameters": {"sourceIPAddress": source_ip},
        "responseElements": {"x-amz-request-id": request_id},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": config_id,
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": owner}, "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
    }


class NotifyCollector:
    """Prometheus metrics of a notifier (queued, sent, failed, queue depth)."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.notifier.counters
        yield CounterMetricFamily("buckets_notify_events_queued", "Events queued for delivery.", value=c.queued)
        sent = CounterMetricFamily("buckets_notify_events_sent", "Events a webhook accepted.", labels=["target"])
        failed = CounterMetricFamily("buckets_notify_delivery_failures",
                                     "Delivery attempts that failed (the event stays queued).", labels=["target"])
        for name in self.notifier.targets:
            s, f = c.by_target.get(name, [0, 0])
            sent.add_metric([name], s)
            failed.add_metric([name], f)
        yield sent
        yield failed
        yield GaugeMetricFamily("buckets_notify_queue_depth", "Events waiting for delivery.",
                                value=self.notifier.queue_depth())
