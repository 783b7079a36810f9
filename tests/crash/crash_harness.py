"""Power-loss campaigns: record a write path, cut the power everywhere, check every state.

One campaign (:func:`run_campaign`) for one :class:`Scenario`:

1. **Record.** Four fresh disk directories, each under a ``PowerLossDisk`` (the real
   ``LocalDisk``, followed by a ``PowerLossRecorder``: ``buckets/storage/powerloss.py``), a
   ``Store`` over them with ``sync`` on, driven in-process. ``setup`` brings the store to
   its starting point (not recorded; its result is the durable baseline, as it is on a
   machine that has been up longer than the filesystem's commit interval), then
   ``window`` runs the write path, every operation bracketed by ``start``/``ack`` marks in
   the trace, and background work (old-write removal, refill) is waited for.
2. **Cut.** For every cut worth checking (just before each sync point: fsync of a file or
   directory, syncfs, an LMDB commit; and after the last event) the model lists the crash
   states (every combination of the unsynced changes the filesystem may have kept or lost,
   up to a limit, see ``CrashModel.states``).
3. **Check.** Each distinct (state, expectations) pair is written to fresh directories, a
   new ``Store`` is opened over them (the start-up runs: staging wiped, registry chosen or
   rebuilt) and :func:`check_state` judges it: the store opens; the staging areas are
   empty; every acknowledged operation is durable and every key reads back (streamed, hashed)
   as exactly one version a write of it produced, never a mix; the listing agrees with the
   reads; acknowledged buckets, uploads and parts exist (and the parts complete into the
   right bytes); and after one scanner cycle (heal every object, sweep orphans with no grace)
   the disks and the registry agree: every object whole on every disk of its set, no file
   that no entry or upload names, every bucket's metadata file on every disk, and the reads
   unchanged.

Why checking only the cuts before sync points is enough: between two syncs nothing becomes
durable, so the crash states of an earlier cut are among those of the later one (whose
file-length choices include every write boundary), and the later cut's expectations are
stricter on every state an earlier cut can produce: an operation acknowledged in between
must be durable, and a version only allowed later (its write started in between) cannot
appear in an earlier state, which holds no effect of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buckets import Store, errors
from buckets.engine import paths
from buckets.engine.heal import heal_object
from buckets.engine.meta import decode_meta_file
from buckets.engine.scanner import ScannerConfig
from buckets.engine.types import CompletePart, PutOptions
from buckets.storage.format import DATA_DIR, MULTIPART_DIR, REGISTRY_DIR, TMP_DIR
from buckets.storage.powerloss import CrashModel, CrashState, PowerLossDisk, PowerLossRecorder, path_pattern

BLOCK = 16 * 1024  # erasure block: multi-block objects stay small
INLINE = 4 * 1024
PARTITIONS = 16
DISKS = 4  # 2+2, write quorum 3
BUCKET = "crash"
MiB = 1 << 20

Value = tuple[str, str] | None  # (sha256 of the bytes, ACL as JSON) or None: no such key
# A key of a versioned bucket is modelled by its whole version list: ("V", version, ...), newest
# first (ListObjectVersions order, the first is the latest), None when it has no version. A
# version is (n, version id, sha256 of the bytes or "dm" for a delete marker, tags as JSON, lock
# mode, retain-until, legal hold); n is the model's creation order (never compared with the
# store: what a read gives has no n, see ``strip``).
VKINDS = ("vput", "vdelete", "vupdate")
KEY_KINDS = ("put", "delete", "acl", "complete") + VKINDS
_UNSET = object()


def tags_tag(tags: dict | None) -> str:
    return json.dumps(tags or {}, sort_keys=True)


def strip(value):
    """A modelled value as a read gives it (versions without the model's creation order)."""
    if isinstance(value, tuple) and value and value[0] == "V":
        return ("V",) + tuple(v[1:] for v in value[1:])
    return value


def _present(value) -> bool:
    """A plain GET (and ListObjects) finds the key: it exists and its latest is no delete marker."""
    if value is None:
        return False
    if isinstance(value, str):
        return True  # a read that failed: the listing is not judged by it (the failure is reported)
    if value[0] == "V":
        return value[1][1] != "dm"
    return True


def body(tag: str, size: int) -> bytes:
    seed = hashlib.sha256(tag.encode()).digest()
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(seed + i.to_bytes(8, "little")).digest()
        i += 1
    return bytes(out[:size])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def acl_tag(access: dict | None) -> str:
    acl = (access or {}).get("acl")
    return "" if acl is None else json.dumps(acl, sort_keys=True)


def store_options(**extra) -> dict:
    return dict(block_size=BLOCK, inline_threshold=INLINE, partitions=PARTITIONS, **extra)


# -- what the window did ----------------------------------------------------------------------
@dataclass
class Op:
    id: int
    kind: str  # put, delete, acl, bucket, drop_bucket, create_upload, part, complete, maintenance
    bucket: str = ""
    key: str = ""
    value: Value = None  # what the key holds once this op took effect
    upload: str = ""
    number: int = 0
    etag: str = ""
    data: bytes = b""  # a part's bytes (to check a completion of the acknowledged parts)
    parts: list[int] = field(default_factory=list)
    # vdelete with a version id: (the modelled version it removes, its write id); a registry
    # rebuild may bring exactly that version back while its files are still on the disks
    revive: tuple | None = None
    start: int | None = None
    ack: int | None = None
    error: str = ""


class Run:
    """The recording side: the recorder, the disks, the store, the operations."""

    def __init__(self, base: Path, rec: PowerLossRecorder, disks: int = DISKS) -> None:
        self.base = base
        self.rec = rec
        self.roots = [str(base / "disks" / f"d{i + 1}") for i in range(disks)]
        for r in self.roots:
            rec.add_root(r)
        self.store: Store | None = None
        self.ops: list[Op] = []
        self.baseline: dict[tuple[str, str], Value] = {}
        self.baseline_buckets: set[str] = set()
        self.sync_store = True
        self.vmodel: dict[tuple[str, str], tuple] = {}  # versioned keys: versions, newest first
        self.vseq = 0

    # -- the store ------------------------------------------------------------------------
    async def open_store(self, **extra) -> Store:
        disks = [PowerLossDisk(r, self.rec) for r in self.roots]
        self.store = await Store.open_disks(disks, sync=self.sync_store, background=extra.pop("background", False),
                                            **store_options(**extra))
        return self.store

    async def close_store(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def drain(self) -> None:
        """Wait for the background work the window started (old writes' removal)."""
        store = self.store
        if store is None:
            return
        while store._background:
            await asyncio.gather(*list(store._background), return_exceptions=True)

    # -- operations ----------------------------------------------------------------------------
    async def op(self, op: Op, action: Callable[[], Awaitable[Any]],
                 value_of: Callable[[Any], Any] | None = None) -> Any:
        """Run ``action`` as operation ``op``: in the window, bracketed by marks; before the
        checkpoint (setup), its result is the baseline. ``value_of`` (versioned keys) gives the
        op's value from its result (the version id the store chose)."""
        op.id = len(self.ops)
        recording = self.rec.recording
        if recording:
            self.ops.append(op)
            op.start = self.rec.mark("start", op=op.id)
        try:
            result = await action()
        except Exception as exc:  # an operation that failed was never acknowledged: either outcome is fine
            op.error = f"{type(exc).__name__}: {exc}"
            if value_of is not None:  # a refused versioned op changes nothing (the lock's refusals)
                op.value = self._vvalue((op.bucket, op.key))
                op.revive = None
            raise
        if value_of is not None:
            op.value = value_of(result)
        if recording:
            op.ack = self.rec.mark("ack", op=op.id)
        elif op.kind in ("put", "delete", "acl") + VKINDS:
            self.baseline[(op.bucket, op.key)] = op.value
        elif op.kind == "bucket":
            self.baseline_buckets.add(op.bucket)
        elif op.kind == "drop_bucket":
            self.baseline_buckets.discard(op.bucket)
        return result

    async def make_bucket(self, name: str = BUCKET, settings: dict | None = None) -> None:
        await self.op(Op(0, "bucket", name), lambda: self.store.make_bucket(name, settings=settings))

    async def delete_bucket(self, name: str) -> None:
        await self.op(Op(0, "drop_bucket", name), lambda: self.store.delete_bucket(name))

    # -- versioned buckets: the model follows each op as it completes (ops on one key are
    # sequential in every scenario, so the state after each is well defined) --------------------
    def _vvalue(self, bk: tuple[str, str]):
        versions = self.vmodel.get(bk, ())
        return ("V",) + versions if versions else None

    def _vnew(self, bk: tuple[str, str], vid: str, body_tag: str, tags: dict | None = None,
              mode: str | None = None, until: float | None = None, hold: bool | None = None):
        """A new latest version ``vid``: one with the same id (the null version) is replaced."""
        self.vseq += 1
        v = (self.vseq, vid, body_tag, tags_tag(tags), mode, until, hold)
        self.vmodel[bk] = (v,) + tuple(x for x in self.vmodel.get(bk, ()) if x[1] != vid)
        return self._vvalue(bk)

    async def vput(self, key: str, data: bytes, *, tags: dict | None = None, lock: tuple | None = None,
                   hold: bool = False, bucket: str = BUCKET):
        """PUT into a versioned (or suspended) bucket, with tags, a retention (mode, until), a legal hold."""
        opts = PutOptions(tags=dict(tags or {}), lock_mode=lock[0] if lock else None,
                          lock_until=lock[1] if lock else None, legal_hold=hold)
        bk = (bucket, key)
        return await self.op(Op(0, "vput", bucket, key), lambda: self.store.put_object(bucket, key, data, len(data), opts),
                             lambda info: self._vnew(bk, info.version_id, sha(data), tags,
                                                     lock[0] if lock else None, lock[1] if lock else None,
                                                     True if hold else None))

    async def vdelete(self, key: str, version_id: str | None = None, *, bypass: bool = False,
                      bucket: str = BUCKET):
        """DELETE without a version id (a delete marker) or of one version (for good)."""
        bk = (bucket, key)
        op = Op(0, "vdelete", bucket, key)
        if version_id is not None:
            entry = self.store.registry.get_object_version(bucket, key, version_id)
            gone = [v for v in self.vmodel.get(bk, ()) if v[1] == version_id]
            if entry is not None and gone:
                op.revive = (gone[0], entry["wid"])

        def value_of(res):
            if version_id is None:
                assert res.delete_marker and res.version_id, res
                return self._vnew(bk, res.version_id, "dm")
            self.vmodel[bk] = tuple(v for v in self.vmodel.get(bk, ()) if v[1] != version_id)
            return self._vvalue(bk)

        return await self.op(op, lambda: self.store.delete_object(bucket, key, version_id,
                                                                  bypass_governance=bypass), value_of)

    async def vupdate(self, key: str, version_id: str, *, tags=_UNSET, retention=_UNSET, hold=_UNSET,
                      bypass: bool = False, bucket: str = BUCKET):
        """PutObjectTagging / DeleteObjectTagging (tags={}) / PutObjectRetention ((mode, until) or
        None) / PutObjectLegalHold of one version."""
        bk = (bucket, key)
        kw: dict = {}
        if tags is not _UNSET:
            kw["tags"] = dict(tags)
        if retention is not _UNSET:
            kw["lock_mode"], kw["lock_until"] = retention if retention is not None else (None, None)
        if hold is not _UNSET:
            kw["legal_hold"] = hold

        def value_of(_info):
            out = []
            for v in self.vmodel.get(bk, ()):
                if v[1] == version_id:
                    n, vid, body_tag, tg, mode, until, lh = v
                    if tags is not _UNSET:
                        tg = tags_tag(tags)
                    if retention is not _UNSET:
                        mode, until = retention if retention is not None else (None, None)
                    if hold is not _UNSET:
                        lh = bool(hold)
                    v = (n, vid, body_tag, tg, mode, until, lh)
                out.append(v)
            self.vmodel[bk] = tuple(out)
            return self._vvalue(bk)

        return await self.op(Op(0, "vupdate", bucket, key),
                             lambda: self.store.update_object(bucket, key, version_id, bypass_governance=bypass, **kw),
                             value_of)

    def vid(self, key: str, index: int = 0, bucket: str = BUCKET) -> str:
        """The version id the model holds at ``index`` (0: the latest) of ``key``."""
        return self.vmodel[(bucket, key)][index][1]

    async def put(self, key: str, data: bytes, bucket: str = BUCKET) -> None:
        await self.op(Op(0, "put", bucket, key, (sha(data), "")),
                      lambda: self.store.put_object(bucket, key, data, len(data)))

    async def delete(self, key: str, bucket: str = BUCKET) -> None:
        await self.op(Op(0, "delete", bucket, key, None), lambda: self.store.delete_object(bucket, key))

    async def copy(self, src: str, dst: str, data: bytes, bucket: str = BUCKET) -> None:
        """CopyObject as the handler does it: the source's reader is the new write's body."""
        async def action():
            reader = await self.store.get_object(bucket, src)
            try:
                return await self.store.put_object(bucket, dst, reader, reader.length)
            finally:
                await reader.aclose()

        await self.op(Op(0, "put", bucket, dst, (sha(data), "")), action)

    async def set_acl(self, key: str, data: bytes, acl: dict, bucket: str = BUCKET) -> None:
        await self.op(Op(0, "acl", bucket, key, (sha(data), acl_tag({"acl": acl}))),
                      lambda: self.store.set_object_access(bucket, key, {"acl": acl}))

    async def multipart(self, key: str, parts: list[bytes], bucket: str = BUCKET, *, complete: bool = True) -> str:
        create = Op(0, "create_upload", bucket, key)
        info = await self.op(create, lambda: self.store.create_multipart_upload(bucket, key))
        create.upload = info.upload_id
        done: list[CompletePart] = []
        for n, data in enumerate(parts, 1):
            part = Op(0, "part", bucket, key, upload=info.upload_id, number=n, data=data,
                      etag=hashlib.md5(data).hexdigest())
            pi = await self.op(part, lambda n=n, data=data: self.store.put_part(bucket, key, info.upload_id, n,
                                                                               data, len(data)))
            done.append(CompletePart(n, pi.etag))
        if complete:
            whole = b"".join(parts)
            await self.op(Op(0, "complete", bucket, key, (sha(whole), ""), upload=info.upload_id,
                             parts=list(range(1, len(parts) + 1))),
                          lambda: self.store.complete_multipart_upload(bucket, key, info.upload_id, done))
        return info.upload_id

    async def maintenance(self, what: str, action: Callable[[], Awaitable[Any]]) -> Any:
        """Background work (heal, sweep, refill, a start-up): acknowledges nothing, but must
        keep everything that was."""
        return await self.op(Op(0, "maintenance", key=what), action)


# -- expectations at a cut ------------------------------------------------------------------
@dataclass
class UploadExpect:
    upload: str
    bucket: str
    key: str
    parts: list[Op]  # acknowledged parts: must be there (and complete into their bytes)
    must_exist: bool  # no completion started before the cut
    must_be_gone: bool  # its completion was acknowledged


@dataclass
class Expect:
    allowed: dict[tuple[str, str], set[Value]]
    buckets: set[str]  # must exist
    uploads: list[UploadExpect]
    key: tuple = ()
    versioned: frozenset = frozenset()  # keys modelled by their version list
    # (bucket, key, the version, its write id) of every delete by version id started before the
    # cut and not acknowledged: after a registry rebuild (only then), each may come back while
    # its files remain
    revivable: tuple = ()
    gone: frozenset = frozenset()  # buckets whose DeleteBucket was acknowledged: must not exist


class Oracle:
    """Which outcomes are correct after a cut. A key may read as the value of an operation
    on it that started before the cut, unless a later operation acknowledged before the cut
    started after this one was acknowledged (then this one is certainly overwritten): for
    sequential operations, the last acknowledged one or one in flight."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.keys = set(run.baseline) | {(o.bucket, o.key) for o in run.ops if o.kind in KEY_KINDS}
        self.versioned = frozenset(set(run.vmodel) | {(o.bucket, o.key) for o in run.ops if o.kind in VKINDS})

    def at(self, cut: int) -> Expect:
        run = self.run
        started = [o for o in run.ops if o.start is not None and o.start < cut]

        def acked(o: Op) -> bool:
            return o.ack is not None and o.ack < cut

        allowed: dict[tuple[str, str], set[Value]] = {}
        for bk in self.keys:
            cands: list[tuple[float, float, Value]] = [(-1, -1, run.baseline.get(bk))]
            for o in started:
                if (o.bucket, o.key) == bk and o.kind in KEY_KINDS:
                    cands.append((o.start, o.ack if acked(o) else float("inf"), o.value))
            acks = [(s, a) for s, a, _ in cands if a != float("inf")]
            allowed[bk] = {v for s, a, v in cands if not any(s2 > a for s2, a2 in acks)}
        buckets = set(run.baseline_buckets) | {o.bucket for o in started if o.kind == "bucket" and acked(o)}
        buckets -= {o.bucket for o in started if o.kind == "drop_bucket"}  # in flight: either
        gone = frozenset(o.bucket for o in started if o.kind == "drop_bucket" and acked(o))
        uploads = []
        for create in (o for o in started if o.kind == "create_upload" and acked(o)):
            uid = create.upload
            parts = [o for o in started if o.kind == "part" and o.upload == uid and acked(o)]
            completes = [o for o in started if o.kind == "complete" and o.upload == uid]
            uploads.append(UploadExpect(uid, create.bucket, create.key, parts, must_exist=not completes,
                                        must_be_gone=any(acked(o) for o in completes)))
        # an acknowledged one never: its kill records were synced before the registry commit
        revivable = tuple((o.bucket, o.key, *o.revive) for o in started
                          if o.kind == "vdelete" and o.revive and not acked(o))
        key = (tuple(sorted((bk, tuple(sorted(v, key=repr))) for bk, v in allowed.items())), tuple(sorted(buckets)),
               tuple((u.upload, tuple(p.number for p in u.parts), u.must_exist, u.must_be_gone) for u in uploads),
               revivable, tuple(sorted(gone)))
        return Expect(allowed, buckets, uploads, key, self.versioned, revivable, gone)


def with_revivals(allowed: set, revive: list[tuple]) -> set:
    """``allowed`` plus each of its version lists with any subset of the ``revive`` versions
    (deleted by id) back in their place (the model's creation order), where not already there."""
    out = set(allowed)
    for v in revive:
        for value in list(out):
            if value is None or value[0] != "V":
                versions: tuple = ()
            else:
                versions = value[1:]
            if any(x[1] == v[1] for x in versions):
                continue
            out.add(("V",) + tuple(sorted(versions + (v,), key=lambda x: -x[0])))
    return out


# -- the check of one crash state --------------------------------------------------------------
async def read_value(store: Store, bucket: str, key: str) -> Value | str:
    """(sha256, ACL) of what a GET streams, None for NoSuchKey/NoSuchBucket, or the error."""
    try:
        reader = await store.get_object(bucket, key)
    except (errors.NoSuchKey, errors.NoSuchBucket):
        return None
    except Exception as exc:  # noqa: BLE001 - any other failure is what the check reports
        return f"GET fails: {type(exc).__name__}: {exc}"
    h = hashlib.sha256()
    try:
        async for chunk in reader:
            h.update(chunk)
    except Exception as exc:  # noqa: BLE001
        return f"GET fails while streaming: {type(exc).__name__}: {exc}"
    finally:
        await reader.aclose()
    return h.hexdigest(), acl_tag(await store.object_access(bucket, key))


async def _stream_sha(reader) -> str:
    h = hashlib.sha256()
    try:
        async for chunk in reader:
            h.update(chunk)
    finally:
        await reader.aclose()
    return h.hexdigest()


async def read_versions(store: Store, bucket: str, key: str):
    """A versioned key as the store serves it: ListObjectVersions' entries of the key in its
    order, each version read back by its id (streamed, hashed; its tags, lock and legal hold as
    GET gives them; a delete marker's HEAD by id must answer 405), checked against the
    is_latest flags and against what a GET without a version id answers. ("V", (version id,
    sha256 or "dm", tags, lock mode, retain-until, legal hold), ...), None when the key has no
    version, or the first disagreement as a string."""
    try:
        page = await store.list_object_versions(bucket, prefix=key, limit=1000)
    except errors.NoSuchBucket:
        return None
    except Exception as exc:  # noqa: BLE001
        return f"ListObjectVersions fails: {type(exc).__name__}: {exc}"
    listed = [v for v in page.versions if v.key == key]
    flags = [v.is_latest for v in listed]
    if flags and flags != [True] + [False] * (len(flags) - 1):
        return f"ListObjectVersions' is_latest flags are {flags}"
    out = []
    for v in listed:
        if v.delete_marker:
            try:
                await store.head_object(bucket, key, version_id=v.version_id)
                return f"HEAD of delete marker {v.version_id[:8]} by id answers an object"
            except errors.MethodNotAllowed:
                pass
            except Exception as exc:  # noqa: BLE001
                return f"HEAD of delete marker {v.version_id[:8]} fails: {type(exc).__name__}: {exc}"
            out.append((v.version_id, "dm", tags_tag(None), None, None, None))
            continue
        try:
            reader = await store.get_object(bucket, key, version_id=v.version_id)
            info = reader.info
            digest = await _stream_sha(reader)
        except Exception as exc:  # noqa: BLE001
            return f"GET of version {v.version_id[:8]} fails: {type(exc).__name__}: {exc}"
        if (info.version_id, info.size, info.etag) != (v.version_id, v.size, v.etag):
            return (f"version {v.version_id[:8]}: GET by id answers {info.version_id[:8]} ({info.size} bytes, "
                    f"{info.etag}), ListObjectVersions lists {v.size} bytes, {v.etag}")
        out.append((v.version_id, digest, tags_tag(info.tags), info.lock_mode, info.lock_until, info.legal_hold))
    try:
        reader = await store.get_object(bucket, key)
        current = (reader.info.version_id, await _stream_sha(reader))
    except errors.NoSuchKey as exc:
        current = (getattr(exc, "version_id", None), "dm") if getattr(exc, "delete_marker", False) else None
    except Exception as exc:  # noqa: BLE001
        return f"GET without a version id fails: {type(exc).__name__}: {exc}"
    want = (out[0][0], out[0][1]) if out else None
    if current != want:
        return f"GET without a version id answers {current}, ListObjectVersions' latest is {want}"
    return ("V",) + tuple(out) if out else None


def _describe(v: Value | str) -> str:
    if v is None:
        return "absent"
    if isinstance(v, str):
        return v
    if v[0] == "V":
        return "versions [" + ", ".join(
            f"{x[0][:8]} " + ("marker" if x[1] == "dm" else f"sha256 {x[1][:12]}") +
            (f" tags {x[2]}" if x[2] != "{}" else "") + (f" lock {x[3]} {x[4]}" if x[3] else "") +
            (f" hold {x[5]}" if x[5] is not None else "") for x in v[1:]) + "]"
    return f"sha256 {v[0][:12]}" + (f" acl {v[1][:40]}" if v[1] else "")


async def _read_all(store: Store, expect: Expect) -> dict[tuple[str, str], Value | str]:
    return {bk: await (read_versions if bk in expect.versioned else read_value)(store, *bk)
            for bk in sorted(expect.allowed)}


async def _listed(store: Store, bucket: str) -> set[str]:
    keys: set[str] = set()
    marker = ""
    while True:
        page = await store.list_objects(bucket, start_after=marker, limit=1000)
        keys |= {o.key for o in page.objects}
        if not page.is_truncated:
            return keys
        marker = page.next_marker


def _files(root: str, rel: str) -> list[str]:
    base = os.path.join(root, rel)
    out = []
    for dirpath, dirs, files in os.walk(base):
        for name in files + [d for d in dirs if not os.listdir(os.path.join(dirpath, d))]:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


async def _agreement(store: Store, roots: list[str]) -> list[str]:
    """After a scanner cycle: the registry and every disk say the same thing."""
    problems = []
    wanted: dict[str, set[str]] = {d.disk_id: set() for d in store.disks}
    for bucket, key, entry in list(store.registry.walk_objects()):
        res = await heal_object(store, bucket, key, deep=True)
        if res.bad:
            problems.append(f"{bucket}/{key}: slots {res.bad} still bad after the scanner cycle")
        h = paths.key_hash(key)
        for disk_id in entry["disks"]:
            wanted.setdefault(disk_id, set()).add(f"{paths.object_dir(bucket, key)}/{h}.{entry['wid']}")
    pos: bytes | None = b""
    while pos is not None:  # noncurrent versions (heal_object above healed them with the current)
        page, pos = store.registry.walk_noncurrent(pos)
        for bucket, key, entry in page:
            h = paths.key_hash(key)
            for disk_id in entry["disks"]:
                wanted.setdefault(disk_id, set()).add(f"{paths.object_dir(bucket, key)}/{h}.{entry['wid']}")
    buckets = {b for b, _ in store.catalog.list_buckets()}
    uploads = {u["uid"] for b in buckets for u in await store.catalog.list_uploads(b)}
    for disk, root in zip(store.disks, roots):
        mine = wanted.get(disk.disk_id, set())
        for rel in _files(root, DATA_DIR):
            parts = rel.split("/")
            if parts[1] not in buckets:
                # what a CreateBucket cut short leaves (its directory, maybe its record): not
                # a bucket, ignored by the sweep and the listing, reused by a new CreateBucket
                continue
            if len(parts) == 3 and (parts[2] == ".bucket.meta" or os.path.isdir(os.path.join(root, rel))):
                continue  # a bucket's record, or an empty fan-out directory (kept by design)
            stem = rel[:-5] if rel.endswith(".meta") else rel.rsplit("/part.", 1)[0]
            if stem not in mine:
                problems.append(f"disk {disk.disk_id[:8]}: {path_pattern(rel)} is named by no registry entry")
        for b in buckets:
            try:
                decode_meta_file(await disk.read_file(paths.bucket_meta(b)))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"disk {disk.disk_id[:8]}: bucket {b}'s metadata file: {type(exc).__name__}")
        for rel in _files(root, TMP_DIR):
            problems.append(f"disk {disk.disk_id[:8]}: staging leftover {path_pattern(rel)}")
        for rel in _files(root, MULTIPART_DIR):
            if rel.split("/")[2] not in uploads:
                problems.append(f"disk {disk.disk_id[:8]}: {path_pattern(rel)} belongs to no upload")
    return problems


CHECK_SCANNER = ScannerConfig(grace=0.0, cycle_pause=3600.0, monitor_interval=3600.0, refill_retry=0.05)


async def _refills_done(store: Store, problems: list[str]) -> None:
    for _ in range(3000):
        if all(r["state"] == "finished" for r in store.scanner.refill.values()):
            return
        await asyncio.sleep(0.01)
    problems.append(f"a refill started at the start-up does not finish: {store.scanner.status()['refill']}")


def _files_left(roots: list[str], bucket: str, key: str, wid: str) -> bool:
    rel = paths.meta_path(bucket, key, wid)
    return any(os.path.exists(os.path.join(r, rel)) for r in roots)


def _meta_outlived_data(roots: list[str], bucket: str, key: str, wid: str) -> bool:
    """A disk keeps the write's metadata file but not all its part files: what the removal of
    a write (``Store._remove_write``: metadata, then data, nothing synced in between) leaves
    when the power is cut and the filesystem kept the data's unlink but not the metadata's."""
    rel = paths.meta_path(bucket, key, wid)
    for r in roots:
        try:
            with open(os.path.join(r, rel), "rb") as f:
                meta = decode_meta_file(f.read())
        except (OSError, errors.BucketsError, ValueError):
            continue
        if meta.get("inline"):
            continue
        if any(not os.path.exists(os.path.join(r, paths.part_path(bucket, key, wid, p[0])))
               for p in meta.get("parts", ())):
            return True
    return False


# A known engine bug (reported with the versioned campaigns, see tests/crash/README.md): a
# version deleted by id whose removal the power cut half way (the data's unlink durable, the
# metadata's not) comes back after a registry rebuild, torn (listed, unreadable, unhealable).
# Problems of exactly such a key in exactly such a state are reported apart as "known".
KNOWN_TORN_REVIVAL = "known engine bug, a deleted version revived torn by the rebuild"


async def check_state(model: CrashModel, state: CrashState, expect: Expect, workdir: Path,
                      rebuild: bool = False, known: list[str] | None = None) -> list[str]:
    """Everything that is wrong with one crash state (empty: nothing). ``rebuild``: the
    registry is deleted first, so the start-up rebuilds it from the disks' metadata files.
    Problems of the known bug (``KNOWN_TORN_REVIVAL``) go to ``known`` instead."""
    roots = [str(workdir / f"d{i + 1}") for i in range(len(state.roots))]
    model.materialize(state, roots)
    allowed = {bk: {strip(v) for v in vals} for bk, vals in expect.allowed.items()}
    torn: set[tuple[str, str]] = set()
    if rebuild:
        for root in roots:
            shutil.rmtree(os.path.join(root, REGISTRY_DIR), ignore_errors=True)
        # The documented limitation (versions.py): a version deleted by id is removed from the
        # registry first and its files after; a rebuild from disks that still hold them brings
        # it back. Accepted only for that version, only while its metadata is on a disk, only
        # exactly as it was, and only after a rebuild (a normal restart never shows it).
        for bk in {(b, k) for b, k, _, _ in expect.revivable}:
            back = [v for b, k, v, wid in expect.revivable if (b, k) == bk and _files_left(roots, b, k, wid)]
            if back:
                allowed[bk] = {strip(v) for v in with_revivals(set(expect.allowed[bk]), back)}
            if any((b, k) == bk and _meta_outlived_data(roots, b, k, wid) for b, k, _, wid in expect.revivable):
                torn.add(bk)
    try:
        # A start as the server does it (background work on: a disk found empty is refilled),
        # with the scanner's timed cycles and probes pushed out of the way: the check runs
        # the cycle itself.
        store = await Store.open(roots, sync=False, background=True, scanner_config=CHECK_SCANNER,
                                 **store_options())
    except Exception as exc:  # noqa: BLE001
        return [f"the store does not open: {type(exc).__name__}: {exc}"]
    problems: list[str] = []
    try:
        await _refills_done(store, problems)
        for root in roots:
            left = _files(root, TMP_DIR)
            if left:
                problems.append(f"staging not empty after the start-up: {sorted(set(map(path_pattern, left)))}")
        for b in sorted(expect.buckets):
            if not await store.bucket_exists(b):
                problems.append(f"acknowledged bucket {b} is gone")
        for b in sorted(expect.gone):
            if await store.bucket_exists(b):
                problems.append(f"bucket {b} is back after its DeleteBucket was acknowledged")
        values = await _read_all(store, expect)
        for bk, v in values.items():
            if v not in allowed[bk]:
                want = " or ".join(sorted(_describe(a) for a in allowed[bk]))
                problems.append(f"{bk[0]}/{bk[1]} reads {_describe(v)}, expected {want}")
        for b in {bk[0] for bk in values} & {name for name, _ in store.catalog.list_buckets()}:
            present = {k for (bb, k), v in values.items() if bb == b and _present(v)}
            listed = await _listed(store, b)
            if listed != present:
                problems.append(f"listing of {b} {sorted(listed)} disagrees with the reads {sorted(present)}")
        live = {}
        for u in expect.uploads:
            rec = await store.catalog.get_upload(u.bucket, u.upload)
            if rec is None:
                if u.must_exist:
                    problems.append(f"acknowledged upload {u.upload[:8]} of {u.key} is gone")
                continue
            if u.must_be_gone:
                problems.append(f"upload {u.upload[:8]} is still there after its completion was acknowledged")
            for p in u.parts:
                have = rec["parts"].get(str(p.number))
                if have is None or have[2] != p.etag:
                    problems.append(f"acknowledged part {p.number} of upload {u.upload[:8]} is gone")
            live[u.upload] = u
        await store.scanner.run_cycle(deep=True, paced=False)
        problems += await _agreement(store, roots)
        after = await _read_all(store, expect)
        for bk in values:
            if after[bk] != values[bk]:
                problems.append(f"{bk[0]}/{bk[1]} changed with the repair: "
                                f"{_describe(values[bk])} -> {_describe(after[bk])}")
        # last (it writes): the acknowledged parts of an upload still open complete into their bytes
        for u in live.values():
            if not u.parts or u.must_be_gone:
                continue
            parts = sorted(u.parts, key=lambda p: p.number)
            try:
                await store.complete_multipart_upload(u.bucket, u.key, u.upload,
                                                      [CompletePart(p.number, p.etag) for p in parts])
            except Exception as exc:  # noqa: BLE001
                problems.append(f"upload {u.upload[:8]}: its acknowledged parts do not complete: "
                                f"{type(exc).__name__}: {exc}")
                continue
            got = await read_value(store, u.bucket, u.key)
            want = sha(b"".join(p.data for p in parts))
            if not isinstance(got, tuple) or got[0] != want:
                problems.append(f"upload {u.upload[:8]}: its acknowledged parts complete into {_describe(got)}")
    finally:
        await store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if torn and known is not None:
        mine = [p for p in problems if any(p.startswith((f"{b}/{k} ", f"{b}/{k}:")) for b, k in torn)]
        known += [f"{KNOWN_TORN_REVIVAL}: {p}" for p in mine]
        problems = [p for p in problems if p not in mine]
    return problems


# -- campaigns ---------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    setup: Callable[[Run], Awaitable[None]]
    window: Callable[[Run], Awaitable[None]]
    # every crash state is checked twice: reopened as it is, and with the registry deleted
    # (rebuilt from the disks at the start-up)
    rebuild: bool = False
    disks: int = DISKS  # 10: 6+4, and small objects 4+4 on a window of 8 (narrow sets)


@dataclass
class Report:
    name: str
    events: int = 0  # trace events in the window: every one is a cut position
    sync_points: Counter = field(default_factory=Counter)  # "kind path-pattern" -> count
    cuts_checked: int = 0
    states: int = 0  # distinct (crash state, expectations) pairs checked
    max_optional: int = 0  # most unsynced changes pending at one cut
    sampled_cuts: int = 0  # cuts whose states were sampled rather than all listed
    violations: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)  # states showing only a known engine bug
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.name}: {sum(self.sync_points.values())} sync points, {self.events} cut positions, "
                f"{self.cuts_checked} cuts checked ({self.sampled_cuts} sampled), {self.states} crash states, "
                f"{len(self.violations)} violations" + (f", {len(self.known)} known" if self.known else ""))


def _sync_label(ev) -> str:
    if ev.kind == "syncfs":
        return "syncfs (write_file batch)"
    if ev.kind == "lmdb_commit":
        return "LMDB commit (registry)"
    return f"fsync {path_pattern(ev.path)}"


async def record(scenario: Scenario, base: Path, *, omit_fsync: frozenset[str] = frozenset()) -> tuple[Run, CrashModel]:
    from buckets.storage import local

    base.mkdir(parents=True, exist_ok=True)
    saved = local.OMIT_FSYNC_FOR_TESTS
    with PowerLossRecorder() as rec:
        run = Run(base, rec, scenario.disks)
        for r in run.roots:
            os.makedirs(r, exist_ok=True)
        try:
            await scenario.setup(run)
            await run.drain()
            rec.checkpoint([run.store.registry] if run.store is not None else [])
            local.OMIT_FSYNC_FOR_TESTS = omit_fsync
            await scenario.window(run)
            await run.drain()
            rec.stop()
            if run.store is not None:
                # the model of the versioned keys is the store's own state at the end, or the
                # model (not the store under a cut) is wrong
                for (bucket, key) in sorted(run.vmodel):
                    have = await read_versions(run.store, bucket, key)
                    want = strip(run._vvalue((bucket, key)))
                    assert have == want, f"the model of {bucket}/{key} is {want}, the store has {have}"
        finally:
            local.OMIT_FSYNC_FOR_TESTS = saved
            await run.close_store()
    return run, CrashModel(rec)


async def run_campaign(scenario: Scenario, base: Path, *, limit: int = 64, combos: int = 256,
                       cut_sample: int | None = None, seed: int = 0, max_violations: int = 20,
                       omit_fsync: frozenset[str] = frozenset(),
                       cut_filter: Callable[[Any], bool] | None = None) -> Report:
    """Record ``scenario`` and check its crash states (see the module doc). ``limit`` bounds
    the states per disk and cut, ``combos`` the combinations across disks per cut;
    ``cut_sample`` checks only that many cuts (chosen by ``seed``) instead of all;
    ``cut_filter`` only the cuts before the sync events it accepts."""
    t0 = time.monotonic()
    run, model = await record(scenario, base / "record", omit_fsync=omit_fsync)
    report = Report(scenario.name, events=len(model.events))
    for _, ev in model.sync_points():
        report.sync_points[_sync_label(ev)] += 1
    oracle = Oracle(run)
    cuts = model.sync_cuts()
    if cut_filter is not None:
        cuts = [c for c in cuts if c < len(model.events) and cut_filter(model.events[c])]
    if cut_sample is not None and cut_sample < len(cuts):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(cuts[:-1], cut_sample - 1) + cuts[-1:])
    seen: set[tuple] = set()
    n = 0
    for cut in cuts:
        expect = oracle.at(cut)
        report.cuts_checked += 1
        report.max_optional = max(report.max_optional, model.cut_info(cut).optional)
        sampled = model.sampled
        # states differing only in the staging area are one: the start-up empties it
        # (checked on the one kept: "staging not empty after the start-up")
        for state in model.states(cut, limit=limit, combos=combos, seed=seed, collapse=(TMP_DIR,)):
            key = (state.key, expect.key)
            if key in seen:
                continue
            seen.add(key)
            report.states += 1
            for rebuild in (False, True) if scenario.rebuild else (False,):
                n += 1
                known: list[str] = []
                problems = await check_state(model, state, expect, base / "check" / str(n), rebuild=rebuild,
                                             known=known)
                where = _where_cut(model, cut) + (", registry deleted and rebuilt" if rebuild else "")
                if known:
                    report.known.append(f"cut {cut} ({where}):\n  " + "\n  ".join(known) +
                                        "\n  state: " + model.describe(state).replace("\n", "\n         "))
                if problems:
                    report.violations.append(f"cut {cut} ({where}):\n  " + "\n  ".join(problems) +
                                             "\n  state: " + model.describe(state).replace("\n", "\n         "))
                    if len(report.violations) >= max_violations:
                        report.seconds = time.monotonic() - t0
                        return report
        report.sampled_cuts += model.sampled > sampled
    report.seconds = time.monotonic() - t0
    return report


def _where_cut(model: CrashModel, cut: int) -> str:
    if cut >= len(model.events):
        return "after the last event"
    ev = model.events[cut]
    return f"before {_sync_label(ev)} on disk {ev.root}"
