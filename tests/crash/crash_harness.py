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
from buckets.engine.types import CompletePart
from buckets.storage.format import DATA_DIR, MULTIPART_DIR, TMP_DIR
from buckets.storage.powerloss import CrashModel, CrashState, PowerLossDisk, PowerLossRecorder, path_pattern

BLOCK = 16 * 1024  # erasure block: multi-block objects stay small
INLINE = 4 * 1024
PARTITIONS = 16
DISKS = 4  # 2+2, write quorum 3
BUCKET = "crash"
MiB = 1 << 20

Value = tuple[str, str] | None  # (sha256 of the bytes, ACL as JSON) or None: no such key


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
    kind: str  # put, delete, acl, bucket, create_upload, part, complete, maintenance
    bucket: str = ""
    key: str = ""
    value: Value = None  # what the key holds once this op took effect
    upload: str = ""
    number: int = 0
    etag: str = ""
    data: bytes = b""  # a part's bytes (to check a completion of the acknowledged parts)
    parts: list[int] = field(default_factory=list)
    start: int | None = None
    ack: int | None = None
    error: str = ""


class Run:
    """The recording side: the recorder, the disks, the store, the operations."""

    def __init__(self, base: Path, rec: PowerLossRecorder) -> None:
        self.base = base
        self.rec = rec
        self.roots = [str(base / "disks" / f"d{i + 1}") for i in range(DISKS)]
        for r in self.roots:
            rec.add_root(r)
        self.store: Store | None = None
        self.ops: list[Op] = []
        self.baseline: dict[tuple[str, str], Value] = {}
        self.baseline_buckets: set[str] = set()
        self.sync_store = True

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
    async def op(self, op: Op, action: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``action`` as operation ``op``: in the window, bracketed by marks; before the
        checkpoint (setup), its result is the baseline."""
        op.id = len(self.ops)
        recording = self.rec.recording
        if recording:
            self.ops.append(op)
            op.start = self.rec.mark("start", op=op.id)
        try:
            result = await action()
        except Exception as exc:  # an operation that failed was never acknowledged: either outcome is fine
            op.error = f"{type(exc).__name__}: {exc}"
            raise
        if recording:
            op.ack = self.rec.mark("ack", op=op.id)
        elif op.kind in ("put", "delete", "acl"):
            self.baseline[(op.bucket, op.key)] = op.value
        elif op.kind == "bucket":
            self.baseline_buckets.add(op.bucket)
        return result

    async def make_bucket(self, name: str = BUCKET) -> None:
        await self.op(Op(0, "bucket", name), lambda: self.store.make_bucket(name))

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


class Oracle:
    """Which outcomes are correct after a cut. A key may read as the value of an operation
    on it that started before the cut, unless a later operation acknowledged before the cut
    started after this one was acknowledged (then this one is certainly overwritten): for
    sequential operations, the last acknowledged one or one in flight."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.keys = set(run.baseline) | {(o.bucket, o.key) for o in run.ops
                                         if o.kind in ("put", "delete", "acl", "complete")}

    def at(self, cut: int) -> Expect:
        run = self.run
        started = [o for o in run.ops if o.start is not None and o.start < cut]

        def acked(o: Op) -> bool:
            return o.ack is not None and o.ack < cut

        allowed: dict[tuple[str, str], set[Value]] = {}
        for bk in self.keys:
            cands: list[tuple[float, float, Value]] = [(-1, -1, run.baseline.get(bk))]
            for o in started:
                if (o.bucket, o.key) == bk and o.kind in ("put", "delete", "acl", "complete"):
                    cands.append((o.start, o.ack if acked(o) else float("inf"), o.value))
            acks = [(s, a) for s, a, _ in cands if a != float("inf")]
            allowed[bk] = {v for s, a, v in cands if not any(s2 > a for s2, a2 in acks)}
        buckets = set(run.baseline_buckets) | {o.bucket for o in started if o.kind == "bucket" and acked(o)}
        uploads = []
        for create in (o for o in started if o.kind == "create_upload" and acked(o)):
            uid = create.upload
            parts = [o for o in started if o.kind == "part" and o.upload == uid and acked(o)]
            completes = [o for o in started if o.kind == "complete" and o.upload == uid]
            uploads.append(UploadExpect(uid, create.bucket, create.key, parts, must_exist=not completes,
                                        must_be_gone=any(acked(o) for o in completes)))
        key = (tuple(sorted((bk, tuple(sorted(v, key=repr))) for bk, v in allowed.items())), tuple(sorted(buckets)),
               tuple((u.upload, tuple(p.number for p in u.parts), u.must_exist, u.must_be_gone) for u in uploads))
        return Expect(allowed, buckets, uploads, key)


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


def _describe(v: Value | str) -> str:
    if v is None:
        return "absent"
    if isinstance(v, str):
        return v
    return f"sha256 {v[0][:12]}" + (f" acl {v[1][:40]}" if v[1] else "")


async def _read_all(store: Store, expect: Expect) -> dict[tuple[str, str], Value | str]:
    return {bk: await read_value(store, *bk) for bk in sorted(expect.allowed)}


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


async def check_state(model: CrashModel, state: CrashState, expect: Expect, workdir: Path) -> list[str]:
    """Everything that is wrong with one crash state (empty: nothing)."""
    roots = [str(workdir / f"d{i + 1}") for i in range(len(state.roots))]
    model.materialize(state, roots)
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
        values = await _read_all(store, expect)
        for bk, v in values.items():
            if v not in expect.allowed[bk]:
                want = " or ".join(sorted(_describe(a) for a in expect.allowed[bk]))
                problems.append(f"{bk[0]}/{bk[1]} reads {_describe(v)}, expected {want}")
        for b in {bk[0] for bk in values} & {name for name, _ in store.catalog.list_buckets()}:
            present = {k for (bb, k), v in values.items() if bb == b and not (v is None)}
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
    return problems


# -- campaigns ---------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    setup: Callable[[Run], Awaitable[None]]
    window: Callable[[Run], Awaitable[None]]


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
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.name}: {sum(self.sync_points.values())} sync points, {self.events} cut positions, "
                f"{self.cuts_checked} cuts checked ({self.sampled_cuts} sampled), {self.states} crash states, "
                f"{len(self.violations)} violations")


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
        run = Run(base, rec)
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
            n += 1
            problems = await check_state(model, state, expect, base / "check" / str(n))
            if problems:
                where = _where_cut(model, cut)
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
