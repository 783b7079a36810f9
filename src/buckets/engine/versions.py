"""Object versions, delete markers, tags and object lock: the engine's side of S3 versioning.

A bucket's ``versioning`` setting is absent (never enabled), ``Enabled`` or ``Suspended``.
Every write is its own set of files (``<h>.<wid>.meta`` + data) whatever the setting; what
versioning changes is what the registry keeps:

- never enabled: one entry per key, version id ``null``; an overwrite replaces it.
- Enabled: each PUT/Complete/Copy gets a new version id; the previous current version
  becomes noncurrent (registry table ``versions``); a DELETE without a version id writes a
  *delete marker*: a version with no data (``dm``), written to the disks like an empty
  inline object, so a registry rebuild restores it.
- Suspended: new writes and delete markers get the ``null`` id, replacing an existing
  ``null`` version; other versions stay.

Object lock (``lm`` mode, ``lu`` retain-until, ``lh`` legal hold) and tags (``tg``) are
fields of a version's entry and of its metadata files. A locked version cannot be removed
(``delete_object`` with its version id) until its retention passes (GOVERNANCE: unless the
caller bypasses it) and its legal hold is off; a delete without a version id only adds a
marker, which a lock never prevents.

These functions are methods of ``Store`` (bound in its class body).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from buckets import errors
from buckets.engine import paths, smalllog, space
from buckets.engine.ids import new_id
from buckets.engine.meta import decode_meta_file, encode_meta_file, entry_to_info, entry_to_version
from buckets.engine.names import check_object_key
from buckets.engine.types import NULL_VERSION, DeleteResult, ObjectInfo, PutOptions, VersionListResult

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.engine")

VERSIONING_STATES = ("Enabled", "Suspended")
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
DAY = 86400.0
_VERSION_ID = re.compile(r"^[0-9a-f]{32}$")
_UNSET = object()


def check_version_id(version_id: str) -> None:
    """A version id this server could have given (``null`` or 32 hex digits); anything else is
    400 InvalidArgument, as S3 answers an id it never issued the format of."""
    if version_id != NULL_VERSION and not _VERSION_ID.match(version_id):
        raise errors.InvalidArgument("Invalid version id specified", ArgumentName="versionId",
                                     ArgumentValue=version_id)


def new_version_id(vs: int) -> str:
    """A version id for a write made at ``vs`` (nanoseconds): the order in 16 hex digits, then 16
    random ones. The registry finds a version by id with one lookup (the id says where it sorts)."""
    return f"{vs & ((1 << 64) - 1):016x}{new_id()[:16]}"


def versioning_of(bucket_rec: dict) -> str | None:
    return bucket_rec.get("versioning")


def version_fields(bucket_rec: dict, opts, now: float) -> dict:
    """The version id, order, tags and lock of a new write into a bucket with ``bucket_rec``."""
    vs = time.time_ns()
    fields: dict = {"vid": new_version_id(vs) if versioning_of(bucket_rec) == "Enabled" else NULL_VERSION, "vs": vs}
    if opts.tags:
        fields["tg"] = dict(opts.tags)
    lock = bucket_rec.get("lock") or {}
    if opts.lock_mode is not None:
        fields["lm"], fields["lu"] = opts.lock_mode, float(opts.lock_until)
    elif lock.get("mode") and (lock.get("days") or lock.get("years")):
        period = (lock.get("days") or 0) * DAY + (lock.get("years") or 0) * 365 * DAY
        fields["lm"], fields["lu"] = lock["mode"], now + period
    if opts.legal_hold:
        fields["lh"] = True
    return fields


def check_removable(entry: dict, bypass_governance: bool, now: float | None = None) -> None:
    """Refuse removing (or overwriting by id) a version its lock protects."""
    now = time.time() if now is None else now
    if entry.get("lh"):
        raise errors.AccessDenied("Access Denied because object protected by object lock.")
    until = entry.get("lu")
    if until is not None and until > now:
        if entry.get("lm") == "COMPLIANCE" or not bypass_governance:
            raise errors.AccessDenied("Access Denied because object protected by object lock.")


async def set_versioning(self: "Store", bucket: str, status: str) -> None:
    if status not in VERSIONING_STATES:
        raise ValueError(f"versioning status must be one of {VERSIONING_STATES}, not {status!r}")

    def check(rec: dict) -> None:
        # (judged on the record the change applies to: Object Lock turned on through another
        # node meanwhile refuses a suspension, update_bucket)
        if status == "Suspended" and (rec.get("lock") or {}).get("enabled"):
            raise errors.InvalidBucketState("An Object Lock configuration is present on this bucket, so the "
                                            "versioning state cannot be changed.")

    rec = await self._require_bucket(bucket)
    check(rec)
    if rec.get("versioning") != status:
        await self.update_bucket(bucket, set={"versioning": status}, check=check, reads=("lock",))


def _marker_gone(bucket: str, key: str, entry: dict, *, by_version: bool) -> errors.BucketsError:
    """The error GET/HEAD answer when they land on a delete marker."""
    if by_version:
        err: errors.BucketsError = errors.MethodNotAllowed(
            "The specified method is not allowed against this resource.", resource=f"/{bucket}/{key}",
            Method="GET", ResourceType="DeleteMarker")
    else:
        err = errors.NoSuchKey(resource=f"/{bucket}/{key}", Key=key)
    err.delete_marker = True  # type: ignore[attr-defined]
    err.version_id = entry.get("vid", NULL_VERSION)  # type: ignore[attr-defined]
    err.last_modified = entry.get("mt")  # type: ignore[attr-defined]
    return err


async def lookup_version(self: "Store", bucket: str, key: str, version_id: str | None, *,
                         read: bool = False) -> dict:
    """The entry GET/HEAD serve: the current version, or ``version_id``'s. A delete marker is
    404 NoSuchKey (current) or 405 MethodNotAllowed (asked for by id), both saying so.
    ``read``: a GET's lookup (see ``Catalog.get_object``)."""
    if version_id is None:
        entry = await self._lookup(bucket, key, read=read)
        if entry.get("dm"):
            raise _marker_gone(bucket, key, entry, by_version=False)
        return entry
    check_version_id(version_id)
    entry = await self.catalog.get_version(bucket, key, version_id)
    if entry is None:
        await self._require_bucket(bucket)
        raise errors.NoSuchVersion(resource=f"/{bucket}/{key}", Key=key, VersionId=version_id)
    if entry.get("dm"):
        raise _marker_gone(bucket, key, entry, by_version=True)
    return entry


async def delete_object(self: "Store", bucket: str, key: str, version_id: str | None = None, *,
                        bypass_governance: bool = False, if_match: str | None = None,
                        if_current: Callable[[dict], bool] | None = None) -> DeleteResult:
    """S3 DeleteObject. Without a version id: an unversioned bucket's object is removed; a
    versioned bucket gets a delete marker (``Enabled``: a new version id; ``Suspended``: the
    ``null`` version, replacing the old one). With a version id: that version is removed for
    good, unless its lock protects it.

    ``if_match`` (a conditional delete: an ETag, or ``*`` for "exists") is checked against the
    key's current version, as S3 does (also when a version id is given): no object (or a
    delete marker) is ``404 NoSuchKey``, another ETag ``412 PreconditionFailed``, both before
    anything is written. It is checked again under the key's lock (on a cluster, the key's
    control-plane lease, which conditional writes take too) right before the delete commits:
    a write that won meanwhile makes it ``409 ConditionalRequestConflict``, and nothing is
    deleted. ``if_current`` (internal: the lifecycle's "still the version I judged") is a
    predicate on the current entry, checked the same way (412 when it does not hold)."""
    removals: list = []  # the deleted write's removal, waited for while short of space (engine/space.py)
    try:
        return await _delete_object(self, bucket, key, version_id, removals, bypass_governance=bypass_governance,
                                    if_match=if_match, if_current=if_current)
    finally:
        await space.settle(self, removals)


async def _delete_object(self: "Store", bucket: str, key: str, version_id: str | None, removals: list, *,
                         bypass_governance: bool, if_match: str | None,
                         if_current: Callable[[dict], bool] | None) -> DeleteResult:
    if version_id is not None:
        check_version_id(version_id)
    bucket_rec = await self._require_bucket(bucket)
    versioned = versioning_of(bucket_rec) is not None
    condition = PutOptions(if_match=if_match, if_current=if_current) \
        if if_match is not None or if_current is not None else None
    if condition is not None:
        await self._check_conditions(bucket, key, condition)  # fail fast; checked again at commit
    if version_id is None and versioned:
        return await _add_delete_marker(self, bucket, key, bucket_rec, condition)
    # A version removed by id takes the key's lease too (a cluster): a change of that version
    # through another node (a legal hold put on it) comes wholly before or after its check.
    leased = condition is not None or (versioned and version_id is not None)
    lease = self.catalog.key_lease(bucket, key) if leased else contextlib.nullcontext()
    async with self.locks.hold((bucket, key)), lease:
        if condition is not None and not versioned and self.cluster is not None:
            # The check and the delete in one step, under the key's lock on its index replicas
            # (no write lands between them; one node's key lock above does that there).
            def judge(current: dict | None) -> None:
                self._judge(bucket, key, condition, current, at_commit=True)
                if current is not None and version_id is not None and current.get("vid", NULL_VERSION) != version_id:
                    raise _KeepIt()
                if current is not None:
                    self._check_delete_quorum(current)

            try:
                removed = await self.catalog.delete_object_checked(bucket, key, judge)
            except _KeepIt:
                removed = None
            if removed is None:
                return DeleteResult(version_id, False, deleted=False)
            removal = self.remove_replaced(bucket, key, removed)
            if removal is not None:
                space.start(self, removal, removals)
            return DeleteResult(version_id, False, deleted=True)
        checked = None
        if condition is not None:
            checked = await self._check_conditions(bucket, key, condition, at_commit=True)
        if not versioned:
            # the commit-time check just read the current entry (a quorum read on a cluster)
            entry = checked if condition is not None else await self.catalog.get_object(bucket, key)
            if entry is None or (version_id is not None and entry.get("vid", NULL_VERSION) != version_id):
                return DeleteResult(version_id, False, deleted=False)
            self._check_delete_quorum(entry)
            marker, marker_disks = None, []
            if self.cluster is None:
                # A marker on the disks first: were the node to stop between the registry
                # commit and the removal of the files, a rebuild would otherwise revive the key.
                marker, marker_disks = await _write_marker(self, bucket, key, NULL_VERSION)
            try:
                await self.catalog.delete_object(bucket, key, entry)
            except BaseException:
                if marker is not None:
                    await self._remove_write(bucket, key, marker["wid"], marker_disks,
                                             locs=marker.get(smalllog.LOG_FIELD))
                raise
            if marker is not None:
                space.start(self, _remove_then_forget(self, bucket, key, entry, marker, marker_disks), removals)
                return DeleteResult(version_id, False, deleted=True)
        else:
            entry = await self.catalog.get_version(bucket, key, version_id)  # type: ignore[arg-type]
            if entry is None:
                return DeleteResult(version_id, False, deleted=False)
            check_removable(entry, bypass_governance)
            self._check_delete_quorum(entry)
            await _kill_first(self, bucket, key, entry)
            entry = await self.catalog.delete_version(bucket, key, version_id)  # type: ignore[arg-type]
            if entry is None:
                return DeleteResult(version_id, False, deleted=False)
            # The kill records said it all for a write in the logs; files (a large version's, or
            # on a cluster those that compaction and heal make) are removed now, metadata first.
            if smalllog.LOG_FIELD not in entry or self.cluster is not None:
                space.start(self, self._remove_write(bucket, key, entry["wid"], self.disks_for(entry["disks"]),
                                                     in_log=False, locs=entry.get(smalllog.LOG_FIELD)), removals)
            else:  # killed first (above): its records give their space back once no GET reads them
                space.start(self, self._remove_write(bucket, key, entry["wid"], self.disks_for(entry["disks"]),
                                                     in_log=True, kill=False, locs=entry.get(smalllog.LOG_FIELD)),
                            removals)
            return DeleteResult(entry.get("vid", NULL_VERSION), bool(entry.get("dm")), deleted=True)
    removal = self.remove_replaced(bucket, key, entry)
    if removal is not None:
        space.start(self, removal, removals)
    return DeleteResult(entry.get("vid", NULL_VERSION) if versioned or version_id else None,
                        bool(entry.get("dm")), deleted=True)


class _KeepIt(Exception):
    """A checked delete's judge: the current entry is not the version asked for; nothing to do."""


async def _kill_first(self: "Store", bucket: str, key: str, entry: dict) -> None:
    """Before a version is removed by id: a kill record for its write on a write quorum of its
    disks, synced. Were the node to stop between the registry commit and the removal of the
    files, a registry rebuild would otherwise find the version whole and bring it back; with
    more than m of its disks saying it is gone, fewer than k count for it. (On a WriteQuorumLost
    here the version stays in the registry; kill records already on some disks only matter to a
    later rebuild, which then keeps or drops the version: the DELETE failed either way.)"""
    k, m = entry["k"], entry["m"]
    done = await smalllog.kill(self, bucket, key, entry["wid"], self.disks_for(entry["disks"]), sync=self.sync)
    if done < self._write_quorum(k, m):
        raise errors.WriteQuorumLost(
            f"Write quorum lost: {done} of {k + m} disks recorded the removal of this version, "
            f"{self._write_quorum(k, m)} needed")


async def _write_marker(self: "Store", bucket: str, key: str, vid: str | None) -> tuple[dict, list]:
    """Write a delete marker's metadata files (an empty inline write, healed and rebuilt like
    any) to a write quorum of the key's disks; returns its entry and those disks."""
    check_object_key(key)
    k, m, disk_ids = self.placement_for(bucket, key, "STANDARD", 0)
    disks = self.disks_for(disk_ids)
    vs = time.time_ns()
    entry = {
        "vid": new_version_id(vs) if vid is None else vid, "vs": vs, "dm": True, "wid": new_id(), "mt": time.time(), "size": 0,
        "etag": "", "h": {}, "um": {}, "ck": {}, "ckt": None, "ch": "", "sc": "STANDARD", "k": k, "m": m,
        "bs": self.block_size, "disks": disk_ids, "gen": self.table.generation, "inline": True, "parts": [],
    }
    # a record in each disk's log (or a metadata file each, with the log off)
    ok = await self._store_inline(bucket, key, entry, disks, [b""] * len(disks))
    if len(ok) < self._write_quorum(k, m):
        await self._remove_write(bucket, key, entry["wid"], disks, locs=entry.get(smalllog.LOG_FIELD))
        raise errors.WriteQuorumLost(f"Write quorum lost: {len(ok)} of {k + m} disks stored the delete marker")
    return entry, disks


async def _add_delete_marker(self: "Store", bucket: str, key: str, bucket_rec: dict,
                             condition: PutOptions | None = None) -> DeleteResult:
    vid = None if versioning_of(bucket_rec) == "Enabled" else NULL_VERSION  # None: a new id
    entry, disks = await _write_marker(self, bucket, key, vid)
    lease = self.catalog.key_lease(bucket, key) if condition is not None else contextlib.nullcontext()
    async with self.locks.hold((bucket, key)), lease:
        try:
            if condition is not None:  # checked and committed in one step (see Store._publish)
                replaced = await self.catalog.put_version_checked(
                    bucket, key, entry, lambda cur: self._judge(bucket, key, condition, cur, at_commit=True))
            else:
                replaced = await self.catalog.put_version(bucket, key, entry)
        except errors.BucketsError:  # (released on one node only: see Store._publish)
            await self._remove_write(bucket, key, entry["wid"], disks,
                                     locs=entry.get(smalllog.LOG_FIELD) if self.cluster is None else None)
            raise
    for old in replaced:
        self._spawn(self._remove_write(bucket, key, old["wid"], self.disks_for(old["disks"]),
                                       locs=old.get(smalllog.LOG_FIELD)))
    return DeleteResult(entry["vid"], True, deleted=True)


async def _remove_then_forget(self: "Store", bucket: str, key: str, entry: dict, marker: dict, disks: list) -> None:
    """After an unversioned delete: remove the object's files, then the marker that told a
    registry rebuild the key is gone (the orphan sweep removes it if this never runs).

    The marker may go only once the object's removal is durable, or a power cut in between
    can keep the marker's removal and lose the object's, and a registry rebuilt from the disks
    brings the key back. A marker in the disks' logs (the record log on) is removed by a kill
    record appended after the object's, and appends to a log are durable in order. A marker
    that is a metadata file (the log off) is removed by an unlink, which a file system need
    not order with anything before it (ext4's journal happens to), so the object's removal is
    made durable first: its kill records synced (a write made while the log was on), or its
    key's directory fsynced after the unlinks. Where that fails on a disk the marker stays, for
    the orphan sweep."""
    obj_disks = self.disks_for(entry["disks"])
    locs = entry.get(smalllog.LOG_FIELD)
    if smalllog.uses_log(marker) or not self.sync:
        await self._remove_write(bucket, key, entry["wid"], obj_disks, locs=locs)
    else:
        targets = [d for d in obj_disks if d is not None and d.online]
        if smalllog.uses_log(entry):
            durable = await smalllog.kill(self, bucket, key, entry["wid"], targets, sync=True)
            await self._remove_write(bucket, key, entry["wid"], obj_disks, in_log=True, kill=False, locs=locs)
        else:
            await self._remove_write(bucket, key, entry["wid"], obj_disks, locs=locs)
            where = paths.object_dir(bucket, key)

            async def sync_dir(d) -> None:
                try:
                    await d.fsync_dir(where)
                except errors.DiskError:
                    if await d.exists(where):
                        raise  # (no directory there: the write never reached this disk)

            durable = await self._on_disks(sync_dir, targets)
        if durable < len(targets):
            log.warning("%s/%s: the delete marker is kept (the removal of the object it replaced is not known "
                        "durable on every disk); the orphan sweep removes it", bucket, key)
            return
    await self._remove_write(bucket, key, marker["wid"], disks, locs=marker.get(smalllog.LOG_FIELD))


async def list_object_versions(self: "Store", bucket: str, prefix: str = "", delimiter: str = "",
                               key_marker: str = "", version_id_marker: str = "",
                               limit: int = 1000) -> VersionListResult:
    await self._require_bucket(bucket)
    if version_id_marker:
        check_version_id(version_id_marker)
    if limit <= 0:
        return VersionListResult([], [], False, None, None)
    items, prefixes, truncated, cursor = await self.catalog.list_versions(
        bucket, prefix, delimiter, key_marker, version_id_marker, limit)
    versions = [entry_to_version(bucket, key, entry, latest) for key, entry, latest in items]
    next_key, next_vid = cursor if truncated and cursor else (None, None)
    return VersionListResult(versions, prefixes, truncated, next_key, next_vid or None)


async def update_object(self: "Store", bucket: str, key: str, version_id: str | None = None, *,
                        tags=_UNSET, lock_mode=_UNSET, lock_until=_UNSET, legal_hold=_UNSET,
                        access=_UNSET, bypass_governance: bool = False) -> ObjectInfo:
    """Change one version's tags, retention, legal hold or ACL (each only when given), in the
    catalog and in the version's metadata file on each of its disks, so a registry rebuild
    keeps it. Retention: COMPLIANCE is never shortened or removed; GOVERNANCE only when
    ``bypass_governance``; lengthening is always allowed.

    Under the key's lock, and on a cluster its lease too: two changes of one version through
    two nodes take turns (each read the version, changed its field and wrote the whole entry
    back: the second write dropped the first's change, a legal hold or retention included).
    The catalog writes the change only over the version it read (on a cluster a checked write
    on the key's replicas: an object that replaced it through another node meanwhile is left
    alone, not put back to the version changed); a request without a version id then changes
    the key's new current version."""
    attempts = 0
    while True:
        attempts += 1
        async with self.locks.hold((bucket, key)), self.catalog.key_lease(bucket, key):
            entry = await lookup_version(self, bucket, key, version_id)
            changes: dict = {}
            if tags is not _UNSET:
                changes["tg"] = dict(tags) if tags else None
            if lock_mode is not _UNSET or lock_until is not _UNSET:
                new_mode = entry.get("lm") if lock_mode is _UNSET else lock_mode
                new_until = entry.get("lu") if lock_until is _UNSET else lock_until
                _check_retention_change(entry, new_mode, new_until, bypass_governance)
                changes["lm"], changes["lu"] = new_mode, (float(new_until) if new_until is not None else None)
            if legal_hold is not _UNSET:
                changes["lh"] = bool(legal_hold)  # OFF is kept: S3 then answers OFF, not "none"
            if access is not _UNSET:
                changes.update(access)
            updated = {f: v for f, v in entry.items() if f != "ts"}
            for f, v in changes.items():
                if v is None:
                    updated.pop(f, None)
                else:
                    updated[f] = v
            if smalllog.uses_log(entry):  # new records carrying the change, before the entry points at them
                locs = await smalllog.rewrite_records(self, bucket, key, entry, updated)
                stored = sum(loc is not None for loc in locs)
                if stored < entry["k"] and version_id is None and attempts < _UPDATE_ATTEMPTS:
                    current = await self.catalog.get_object(bucket, key)
                    if current is not None and current.get("wid") != entry["wid"]:
                        continue  # replaced through another node (its records released): change the new one
                if stored < entry["k"]:
                    # Fewer new records than a read needs: the entry would point at too few, and
                    # the object would not read (all its disks failing an append, or full to the
                    # last block). The change fails; the object keeps its records and metadata.
                    raise errors.WriteQuorumLost(f"Write quorum lost: {stored} of {entry['k'] + entry['m']} disks "
                                                 f"took the change, {entry['k']} needed")
                updated[smalllog.LOG_FIELD] = locs
            if not await self.catalog.update_version(bucket, key, updated):
                if version_id is None and attempts < _UPDATE_ATTEMPTS:
                    continue  # replaced through another node since it was read: change the new one
                raise errors.NoSuchVersion(resource=f"/{bucket}/{key}", Key=key,
                                           VersionId=version_id or NULL_VERSION)
            if not smalllog.uses_log(entry):
                # The metadata files too, still under the lock: two changes rewriting them at
                # once could each keep only its own field (read, change, write).
                await asyncio.gather(*(_rewrite_meta(self, bucket, key, entry["wid"], changes, d)
                                       for d in self.disks_for(entry["disks"]) if d is not None))
            return entry_to_info(bucket, key, updated)


_UPDATE_ATTEMPTS = 5  # a version replaced under a change without a version id: read the new one again


async def _rewrite_meta(self: "Store", bucket: str, key: str, wid: str, changes: dict, disk) -> None:
    path = paths.meta_path(bucket, key, wid)
    try:
        meta = decode_meta_file(await disk.read_file(path))
        for f, v in changes.items():
            if v is None:
                meta.pop(f, None)
            else:
                meta[f] = v
        await disk.write_file(path, encode_meta_file(meta), sync=self.sync)
    except errors.BucketsError as exc:  # an offline disk: its next heal rewrites it from the entry
        log.info("object %s/%s: a metadata change did not reach %s: %s", bucket, key, disk.endpoint, exc)


def _check_retention_change(entry: dict, mode, until, bypass_governance: bool) -> None:
    old_mode, old_until = entry.get("lm"), entry.get("lu")
    if old_until is None or old_until <= time.time():
        return  # no retention in force: anything may be set
    shortened = until is None or float(until) < old_until or (old_mode == "COMPLIANCE" and mode != old_mode)
    if not shortened:
        return
    if old_mode == "COMPLIANCE":
        raise errors.AccessDenied("Access Denied because object protected by object lock.")
    if not bypass_governance:
        raise errors.AccessDenied("Access Denied because object protected by object lock.")
