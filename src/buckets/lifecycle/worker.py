"""The lifecycle worker: applies every bucket's lifecycle rules in the background.

Each cycle (every ``interval`` seconds) walks the buckets that have a configuration and,
through the store's public API only:

- **unversioned buckets**: deletes each object whose Expiration (Days or Date) is due;
- **versioned buckets** (versioning Enabled or Suspended): expires the current version of
  a key by deleting it without a version id (S3's way: a delete marker takes its place);
  deletes noncurrent versions NoncurrentDays after they became noncurrent (when their
  successor was written), keeping the NewerNoncurrentVersions newest; and removes a delete
  marker that is the only version left of its key (ExpiredObjectDeleteMarker, or Expiration
  Days once the marker is that old);
- **every bucket**: aborts multipart uploads DaysAfterInitiation days after they started.

Objects are examined at a bounded pace (``objects_per_sec``, with the scanner's
``Throttle``), so a large bucket never floods the disks. Before a current version is
expired it is looked up again: one overwritten since the listing is left alone.

A "day" is ``day`` seconds (86400 unless an operator shortens it for tests, see
``buckets.lifecycle.rules``). In a cluster only the control plane's leader runs the
cycles, so an object is expired once, not once per node.

With a notifier (``--notify-webhook``), each expiry is an event, as AWS names them:
``s3:LifecycleExpiration:Delete`` for an object or a version removed (a noncurrent version,
a lone delete marker: with its ``versionId``), ``s3:LifecycleExpiration:DeleteMarkerCreated``
for a current version hidden under a new delete marker (the marker's ``versionId``); the
principal is ``s3.amazonaws.com``, as in AWS's lifecycle records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from buckets.runtime import cancel_and_wait
from buckets.engine.scanner import ScannerConfig, Throttle
from buckets.errors import BucketsError, ConditionalRequestConflict, NoSuchBucket, NoSuchKey, PreconditionFailed
from buckets.lifecycle import rules as lc

log = logging.getLogger("buckets.lifecycle")

PAGE = 1000
LIFECYCLE_PRINCIPAL = "s3.amazonaws.com"  # AWS's userIdentity of lifecycle events


@dataclass(slots=True)
class LifecycleSettings:
    day: float = 86400.0  # seconds in a lifecycle "day"
    interval: float = 3600.0  # seconds between cycles
    objects_per_sec: float = 1000.0  # objects (versions, uploads) examined per second at most


@dataclass(slots=True)
class LifecycleStats:
    cycles: int = 0
    expired: int = 0  # current versions deleted (or hidden under a delete marker)
    noncurrent_expired: int = 0
    markers_removed: int = 0
    uploads_aborted: int = 0
    errors: int = 0
    last_cycle_end: float = 0.0
    running: bool = False
    examined: int = field(default=0)


class LifecycleWorker:
    def __init__(self, store: Any, settings: LifecycleSettings | None = None,
                 clock: Callable[[], float] = time.time, notifier: Any = None) -> None:
        self.store = store
        self.settings = settings or LifecycleSettings()
        self.clock = clock
        self.notifier = notifier
        self.stats = LifecycleStats()
        self._task: asyncio.Task | None = None

    async def _notify(self, bucket: str, key: str, result: Any, *, removed_version: str | None = None) -> None:
        """The event of one expiry (see the module doc); never fails the expiry itself."""
        if self.notifier is None:
            return
        if removed_version is not None:
            happening = {"event": "s3:LifecycleExpiration:Delete", "key": key, "version_id": removed_version}
        elif getattr(result, "delete_marker", False) and getattr(result, "version_id", None):
            happening = {"event": "s3:LifecycleExpiration:DeleteMarkerCreated", "key": key,
                         "version_id": result.version_id}
        else:
            happening = {"event": "s3:LifecycleExpiration:Delete", "key": key}
        try:
            await self.notifier.emit(bucket, [happening], request_id=f"lifecycle-{time.time_ns():x}",
                                     principal=LIFECYCLE_PRINCIPAL, source_ip="")
        except Exception:  # noqa: BLE001 - the expiry is done; its event is best effort here
            log.exception("lifecycle: the event of %s/%s could not be queued", bucket, key)

    # -- running ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="lifecycle")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def status(self) -> dict:
        s = self.stats
        return {"cycles": s.cycles, "running": s.running, "examined": s.examined, "expired": s.expired,
                "noncurrent_expired": s.noncurrent_expired, "markers_removed": s.markers_removed,
                "uploads_aborted": s.uploads_aborted, "errors": s.errors, "last_cycle_end": s.last_cycle_end,
                "day_seconds": self.settings.day, "interval": self.settings.interval}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval)
            if not self._leads():
                continue
            try:
                await self.run_cycle()
            except Exception:
                log.exception("lifecycle cycle failed")

    def _leads(self) -> bool:
        """One node of a cluster applies the rules: the control plane's leader."""
        node = getattr(self.store, "cluster_node", None)
        if node is None:
            return True
        control = getattr(node, "control", None)
        try:
            return control is not None and control.status().role == "leader"
        except Exception:  # noqa: BLE001 - not started yet, or stopping: not the leader now
            return False

    # -- one cycle ----------------------------------------------------------------------------
    async def run_cycle(self) -> dict:
        """One pass over every bucket with a lifecycle configuration; returns what it did."""
        store = self.store
        before = (self.stats.expired, self.stats.noncurrent_expired, self.stats.markers_removed,
                  self.stats.uploads_aborted)
        throttle = Throttle(ScannerConfig(objects_per_sec=self.settings.objects_per_sec))
        self.stats.running = True
        try:
            for bucket in await store.list_buckets():
                try:
                    record = await store.bucket_record(bucket.name)
                except NoSuchBucket:
                    continue
                rules = lc.active(record.get("lifecycle") or [])
                if not rules:
                    continue
                try:
                    await self._bucket(bucket.name, record, rules, throttle)
                except NoSuchBucket:
                    continue  # deleted meanwhile
                except BucketsError as exc:  # quorum lost, a disk away: the next cycle tries again
                    self.stats.errors += 1
                    log.warning("lifecycle of bucket %s stopped for this cycle: %s: %s",
                                bucket.name, type(exc).__name__, exc)
        finally:
            self.stats.running = False
        self.stats.cycles += 1
        self.stats.last_cycle_end = self.clock()
        after = (self.stats.expired, self.stats.noncurrent_expired, self.stats.markers_removed,
                 self.stats.uploads_aborted)
        done = dict(zip(("expired", "noncurrent_expired", "markers_removed", "uploads_aborted"),
                        (a - b for a, b in zip(after, before))))
        if any(done.values()):
            log.info("lifecycle cycle %d: %s", self.stats.cycles, done)
        return done

    async def _bucket(self, bucket: str, record: dict, rules: list[dict], throttle: Throttle) -> None:
        versioned = record.get("versioning") in ("Enabled", "Suspended") and \
            hasattr(self.store, "list_object_versions")
        if any(r.get("expiration") or r.get("noncurrent") for r in rules):
            if versioned:
                await self._versions(bucket, rules, throttle)
            else:
                await self._objects(bucket, rules, throttle)
        if any(r.get("abort") for r in rules):
            await self._uploads(bucket, rules, throttle)

    async def _tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        try:
            if version_id is None:
                info = await self.store.head_object(bucket, key)
            else:
                info = await self.store.head_object(bucket, key, version_id=version_id)
        except BucketsError:
            return {}
        return dict(getattr(info, "tags", None) or {})

    async def _expiry(self, bucket: str, rules: list[dict], info: Any) -> tuple[float, str] | None:
        """When a current version expires, if that is now or earlier; None otherwise. A
        listing carries no tags: they are read (one lookup) only when a rule with a tag
        filter is all that stands between the object and its expiry."""
        day = self.settings.day
        if not any(lc.needs_tags(r) for r in rules):
            due = lc.current_expiry(rules, info.key, info.size, None, info.last_modified, day)
        else:
            # Without its tag predicates a rule selects more, never less: if even that is not
            # due, nothing is.
            bare = [dict(r, filter={**r["filter"], "tags": []}) for r in rules]
            due = lc.current_expiry(bare, info.key, info.size, None, info.last_modified, day)
            if due is not None and self.clock() >= due[0]:
                tags = await self._tags(bucket, info.key, _version_of(info))
                due = lc.current_expiry(rules, info.key, info.size, tags, info.last_modified, day)
        return due if due is not None and self.clock() >= due[0] else None

    async def _noncurrent(self, bucket: str, rules: list[dict], info: Any, since: float, rank: int) -> str | None:
        """The rule that expires a noncurrent version now, if any (tags read as in _expiry)."""
        day, now = self.settings.day, self.clock()
        if getattr(info, "delete_marker", False) or not any(lc.needs_tags(r) for r in rules):
            return lc.noncurrent_due(rules, info.key, info.size, None, since, rank, now, day)
        bare = [dict(r, filter={**r["filter"], "tags": []}) for r in rules]
        if lc.noncurrent_due(bare, info.key, info.size, None, since, rank, now, day) is None:
            return None
        tags = await self._tags(bucket, info.key, info.version_id)
        return lc.noncurrent_due(rules, info.key, info.size, tags, since, rank, now, day)

    # -- unversioned ----------------------------------------------------------------------------
    async def _objects(self, bucket: str, rules: list[dict], throttle: Throttle) -> None:
        store = self.store
        if not any((r.get("expiration") or {}).keys() & {"days", "date"} for r in rules):
            return
        marker = ""
        while True:
            page = await store.list_objects(bucket, start_after=marker, limit=PAGE)
            for info in page.objects:
                await throttle.pace(0)
                self.stats.examined += 1
                due = await self._expiry(bucket, rules, info)
                if due is not None:
                    await self._expire_current(bucket, info, due[1])
            if not page.is_truncated or not page.next_marker:
                return
            marker = page.next_marker

    async def _expire_current(self, bucket: str, listed: Any, rule_id: str) -> None:
        """Delete (unversioned) or hide under a delete marker (versioned) the current version
        ``listed`` saw, unless it was overwritten or removed since."""
        judged = (listed.etag, listed.last_modified, _version_of(listed))

        def unchanged(entry: dict) -> bool:
            return (entry.get("etag"), entry.get("mt"), _version_of_entry(entry)) == judged

        try:
            # The check is the engine's, under the key's lock right before the delete commits:
            # a PUT that lands after the listing (even between a look and the delete) is never
            # what expires; it is judged next cycle.
            result = await self.store.delete_object(bucket, listed.key, if_current=unchanged)
        except (NoSuchKey, PreconditionFailed, ConditionalRequestConflict):
            return  # gone, or overwritten since it was listed
        self.stats.expired += 1
        await self._notify(bucket, listed.key, result)
        log.info("lifecycle rule %r expired %s/%s", rule_id, bucket, listed.key)

    # -- versioned --------------------------------------------------------------------------------
    async def _versions(self, bucket: str, rules: list[dict], throttle: Throttle) -> None:
        store = self.store
        key_marker = version_marker = ""
        current_key: str | None = None
        successor: float | None = None  # last-modified of the next newer version of current_key
        rank = 0  # noncurrent versions of current_key seen so far (all newer than the next one)
        lone_marker: Any = None  # the latest version, a delete marker, while nothing follows it
        while True:
            page = await store.list_object_versions(bucket, key_marker=key_marker,
                                                    version_id_marker=version_marker, limit=PAGE)
            for info in page.versions:
                await throttle.pace(0)
                self.stats.examined += 1
                if info.key != current_key:
                    if lone_marker is not None:
                        await self._lone_marker(bucket, rules, lone_marker)
                    current_key, successor, rank, lone_marker = info.key, None, 0, None
                if getattr(info, "is_latest", False) and successor is None:
                    if getattr(info, "delete_marker", False):
                        lone_marker = info
                    else:
                        due = await self._expiry(bucket, rules, info)
                        if due is not None:
                            await self._expire_current(bucket, info, due[1])
                    successor = info.last_modified
                    continue
                lone_marker = None
                since = successor if successor is not None else info.last_modified
                rule_id = await self._noncurrent(bucket, rules, info, since, rank)
                if rule_id is not None:
                    try:
                        await store.delete_object(bucket, info.key, version_id=info.version_id)
                    except BucketsError as exc:  # locked (object lock), or gone meanwhile
                        log.info("lifecycle rule %r could not expire %s/%s version %s: %s", rule_id, bucket,
                                 info.key, info.version_id, exc)
                    else:
                        self.stats.noncurrent_expired += 1
                        await self._notify(bucket, info.key, None, removed_version=info.version_id)
                        log.info("lifecycle rule %r expired noncurrent %s/%s version %s", rule_id, bucket,
                                 info.key, info.version_id)
                rank += 1
                successor = info.last_modified
            if not page.is_truncated:
                break
            key_marker, version_marker = page.next_key_marker or "", page.next_version_id_marker or ""
            if not key_marker:
                break
        if lone_marker is not None:
            await self._lone_marker(bucket, rules, lone_marker)

    async def _lone_marker(self, bucket: str, rules: list[dict], marker: Any) -> None:
        rule_id = lc.marker_due(rules, marker.key, marker.last_modified, self.clock(), self.settings.day)
        if rule_id is None:
            return
        try:
            await self.store.delete_object(bucket, marker.key, version_id=marker.version_id)
        except BucketsError as exc:
            log.info("lifecycle rule %r could not remove the delete marker of %s/%s: %s", rule_id, bucket,
                     marker.key, exc)
            return
        self.stats.markers_removed += 1
        await self._notify(bucket, marker.key, None, removed_version=marker.version_id)
        log.info("lifecycle rule %r removed the expired delete marker of %s/%s", rule_id, bucket, marker.key)

    # -- multipart uploads ------------------------------------------------------------------------
    async def _uploads(self, bucket: str, rules: list[dict], throttle: Throttle) -> None:
        store = self.store
        key_marker = upload_marker = ""
        due: list[tuple[str, str, str]] = []
        while True:
            page = await store.list_multipart_uploads(bucket, key_marker=key_marker, upload_id_marker=upload_marker,
                                                      limit=PAGE)
            for up in page.uploads:
                await throttle.pace(0)
                self.stats.examined += 1
                rule_id = lc.abort_due(rules, up.key, up.initiated, self.clock(), self.settings.day)
                if rule_id is not None:
                    due.append((up.key, up.upload_id, rule_id))
            if not page.is_truncated or not page.next_key_marker:
                break
            key_marker, upload_marker = page.next_key_marker, page.next_upload_id_marker or ""
        for key, upload_id, rule_id in due:
            try:
                await store.abort_multipart_upload(bucket, key, upload_id)
            except BucketsError as exc:  # completed or aborted meanwhile
                log.info("lifecycle rule %r could not abort upload %s of %s/%s: %s", rule_id, upload_id, bucket,
                         key, exc)
                continue
            self.stats.uploads_aborted += 1
            log.info("lifecycle rule %r aborted upload %s of %s/%s", rule_id, upload_id, bucket, key)


def _version_of(info: Any) -> str | None:
    version = getattr(info, "version_id", None)
    return None if version in (None, "", "null") else version


def _version_of_entry(entry: dict) -> str | None:
    version = entry.get("vid")
    return None if version in (None, "", "null") else version


def settings_from_config(config: Any) -> LifecycleSettings:
    return LifecycleSettings(day=float(getattr(config, "lifecycle_day_seconds", 86400.0)),
                             interval=float(getattr(config, "lifecycle_interval", 3600.0)))


def attach_worker(app: Any, store: Any, config: Any, notifier: Any = None) -> LifecycleWorker:
    """Start the worker with the app and stop it when the app is cleaned up (before the
    store is closed)."""
    worker = LifecycleWorker(store, settings_from_config(config), notifier=notifier)

    async def start(_app: Any) -> None:
        worker.start()

    async def stop(_app: Any) -> None:
        await worker.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return worker
