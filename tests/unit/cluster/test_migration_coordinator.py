"""The migration coordinator's state machine over a real (single-member) control plane.

The job lives in pysyncobj-backed ``ControlPlane`` exactly as in a cluster; the data plane is
an in-memory ``Mover`` (objects as entries with a ``disks`` list, a move commits the new
list), so every case is fast and deterministic: claim and checkpoint compare-and-set, a
second coordinator superseding the first and resuming from its cursor, pause and resume,
throttle changes, failed moves retried by the next pass, and the token bucket with a
virtual clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from buckets import errors
from buckets.cluster import migration
from buckets.cluster.control import ControlConfig, ControlPlane
from buckets.cluster.migration import (
    JOB_KEY, Limiter, MigrationCoordinator, MoveOutcome, Superseded, TokenBucket, Window, check_throttle,
    start_migration, status_of, update_job,
)
from serverproc import free_port


# --- the data plane, in memory -------------------------------------------------------------------
class World:
    def __init__(self, buckets: dict[str, int], size: int = 1000) -> None:
        self.entries = {b: {f"k{i:04d}": {"disks": ["a", "b"], "size": size, "wid": f"{b}{i}"}
                            for i in range(n)} for b, n in buckets.items()}
        self.commits: dict[tuple[str, str], int] = {}

    def unmoved(self) -> list[tuple[str, str]]:
        return [(b, k) for b, keys in self.entries.items() for k, e in keys.items() if e["disks"] != ["a", "c"]]


class MemoryMover:
    def __init__(self, world: World) -> None:
        self.world = world
        self.gate: asyncio.Event | None = None  # when set, moves wait for it (after starting)
        self.hold_after: int | None = None  # with a gate: only moves once this many objects committed
        self.started: list[tuple[str, str]] = []
        self.fail_once: set[tuple[str, str]] = set()
        self.prepared: list[str] = []
        self.swept: list[tuple[str, str]] = []

    def buckets(self) -> list[str]:
        return sorted(self.world.entries, key=str.encode)

    async def page(self, bucket, after, limit):
        keys = sorted((k for k in self.world.entries[bucket] if k.encode() > after.encode()), key=str.encode)
        chosen = keys[:limit]
        return [(k, dict(self.world.entries[bucket][k])) for k in chosen], len(keys) > limit

    def target(self, bucket, key, entry, to_gen):
        return None if entry["disks"] == ["a", "c"] else ["a", "c"]

    def shard_bytes(self, entry, target):
        return entry["size"]

    def pending_indexes(self, to_gen):
        return [b for b in self.buckets() if b not in self.prepared]

    async def prepare_bucket(self, bucket, to_gen):
        if bucket not in self.prepared:
            self.prepared.append(bucket)

    async def move(self, bucket, key, entry, target, to_gen, pace):
        self.started.append((bucket, key))
        if self.gate is not None and (self.hold_after is None or len(self.world.commits) >= self.hold_after):
            await self.gate.wait()
        if (bucket, key) in self.fail_once:
            self.fail_once.discard((bucket, key))
            return MoveOutcome("failed", error=f"{bucket}/{key}: disk b offline")
        current = self.world.entries[bucket][key]
        if current["disks"] == target:
            return MoveOutcome("skipped")
        await pace(entry["size"])
        current["disks"] = list(target)
        current.update(gen=to_gen, moved_from={"wid": current["wid"], "disks": ["b"]})
        self.world.commits[(bucket, key)] = self.world.commits.get((bucket, key), 0) + 1
        return MoveOutcome("moved", entry["size"], into={"node-c": entry["size"]}, out_of={"node-b": entry["size"]})

    async def sweep(self, bucket, key, entry):
        self.swept.append((bucket, key))

    async def drain(self):
        return None

    async def close(self):
        return None


class Node:  # what start_migration needs of a cluster node
    def __init__(self, control: ControlPlane) -> None:
        self.control = control


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
async def plane(tmp_path: Path):
    address = f"127.0.0.1:{free_port()}"
    cp = ControlPlane(ControlConfig(address=address, members=(address,), secret="migration-unit-secret",
                                    directory=str(tmp_path / "control"), election_timeout=(0.35, 0.5)))
    await cp.start()
    await cp.wait_leader(timeout=30)
    try:
        yield cp
    finally:
        await cp.close()


async def eventually(what: str, predicate, timeout: float = 60.0) -> None:  # a bound, not a pace: loaded CI machines are slow
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(0.01)


def job(cp: ControlPlane) -> dict:
    return cp.snapshot.jobs[JOB_KEY].value


def coordinator(cp, mover, name="n1", leader=lambda: True, **kw) -> MigrationCoordinator:
    return MigrationCoordinator(cp, mover, name, poll=0.02, checkpoint_every=0.05, page=7, is_leader=leader, **kw)


# --- pure parts --------------------------------------------------------------------------------
async def test_token_bucket_paces_bytes_and_takes_rate_changes_at_once() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(1000, clock=lambda: now[0], sleep=sleep)
    await bucket.take(1000)  # the bucket starts empty: a full second's worth takes a second
    assert now[0] == pytest.approx(1.0)
    for _ in range(10):
        await bucket.take(100)
    assert now[0] == pytest.approx(2.0)  # 1000 bytes at 1000 B/s
    assert max(slept) <= bucket.max_wait + 1e-9  # waits in short steps, so a change is seen soon
    bucket.set_rate(10_000)
    start = now[0]
    await bucket.take(5000)
    assert now[0] - start == pytest.approx(0.5)
    bucket.set_rate(0)  # unlimited
    start = now[0]
    await bucket.take(10**9)
    assert now[0] == start
    bucket.set_rate(100)  # a request bigger than the burst passes once the bucket is full
    start = now[0]
    await bucket.take(1000)
    assert now[0] - start == pytest.approx(1.0)
    await bucket.take(100)  # ... and leaves a debt that the next request pays
    assert now[0] - start == pytest.approx(1.0 + 10.0)


async def test_limiter_grows_and_shrinks_at_run_time() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    waiter = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    await limiter.set_limit(2)
    await waiter
    assert limiter.active == 2
    await limiter.set_limit(1)
    await limiter.release()
    third = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    assert not third.done()  # still one active, limit 1
    await limiter.release()
    await third
    await limiter.release()
    await limiter.idle()


def test_window_cursor_is_the_last_key_below_which_everything_finished() -> None:
    w = Window("")
    for k in ("a", "b", "c", "d"):
        w.add(k)
    w.finish("b")
    assert w.cursor == ""
    w.finish("a")
    assert w.cursor == "b"
    w.finish("d")
    assert w.cursor == "b"
    w.finish("c")
    assert w.cursor == "d"


def test_throttle_validation() -> None:
    assert check_throttle({"bytes_per_s": 0}) == {"bytes_per_s": 0, "objects": 4}
    assert check_throttle({"objects": 2}, {"bytes_per_s": 5, "objects": 1}) == {"bytes_per_s": 5, "objects": 2}
    for bad in ({"objects": 0}, {"objects": 65}, {"bytes_per_s": -1}, {"bytes_per_s": True}, {"bytes_per_s": 1.5},
                {"speed": 1}, [1]):
        with pytest.raises(errors.InvalidArgument):
            check_throttle(bad)


def test_status_estimates_remaining_and_eta() -> None:
    value = migration.new_job(1, 2, now=100.0)
    value.update(planned={"objects": 10, "bytes": 1000}, pass_objects=4, pass_errors=1, pass_bytes=400,
                 rate={"bytes_per_s": 100.0, "objects_per_s": 1.0})
    status = status_of(value, now=110.0)
    assert status["remaining_objects"] == 5 and status["remaining_bytes"] == 600
    assert status["eta_seconds"] == 6.0 and status["elapsed_seconds"] == 10.0
    assert status_of(None) == {"state": "none"}
    assert status_of(dict(value, state="done"))["remaining_objects"] == 0


# --- the coordinator over the control plane ------------------------------------------------------
async def test_runs_to_done_with_counters_and_a_clean_final_pass(plane) -> None:
    world = World({"beta": 9, "alpha": 12, "gamma": 0})
    mover = MemoryMover(world)
    await start_migration(Node(plane), 1, 2, throttle={"bytes_per_s": 0, "objects": 3})
    c = coordinator(plane, mover)
    c.start()
    try:
        await eventually("done", lambda: job(plane)["state"] == "done")
    finally:
        await c.stop()
    value = job(plane)
    assert world.unmoved() == []
    assert all(n == 1 for n in world.commits.values()) and len(world.commits) == 21
    assert value["moved_objects"] == 21 and value["moved_bytes"] == 21000 and value["errors"] == 0
    assert value["pass"] == 2 and value["planned"] == {"objects": 0, "bytes": 0}  # pass 2 found nothing
    assert value["nodes"]["node-c"]["objects_in"] == 21 and value["nodes"]["node-b"]["bytes_out"] == 21000
    assert value["owner"] is None and value["finished"] is not None
    assert mover.prepared == ["alpha", "beta", "gamma"]  # buckets in name order, index moved first
    assert c.counters.objects_moved == 21
    status = status_of(value)
    assert status["remaining_objects"] == 0 and status["state"] == "done"


async def test_a_run_finishes_though_a_cancel_of_its_checkpoint_ticker_is_swallowed(plane, monkeypatch) -> None:
    """On Python 3.11 ``asyncio.wait_for`` (inside every control-plane commit) returns its
    call's result instead of raising a cancel that lands as that call finishes. The run's
    checkpoint ticker is cancelled when the run ends: a swallowed cancel left it ticking, and
    the run waited for it forever, "running" at pass 2 with nothing left to move (fresh-clone
    run 268, ``test_growth_under_load[fast]``). Here the ticker's commit swallows the first
    cancel every time."""
    real_apply = plane.apply
    swallowed: list[str] = []
    inside = asyncio.Event()  # the ticker's commit is under way

    async def racy_apply(op, /, **kw):
        task = asyncio.current_task()
        if task is not None and task.get_name() == "migration-checkpoint" and not swallowed:
            inside.set()
            try:
                await asyncio.Event().wait()  # the commit under way when the cancel comes
            except asyncio.CancelledError:
                swallowed.append(op)
                return await real_apply(op, **kw)  # what 3.11's wait_for does: the result, no cancel
        return await real_apply(op, **kw)

    class WaitingMover(MemoryMover):
        async def move(self, *args, **kw):
            # The run may not end before the ticker is inside a commit (a run faster than its
            # first tick, as a loaded machine can make it, left nothing to swallow: fresh-clone run 308).
            await inside.wait()
            return await super().move(*args, **kw)

    monkeypatch.setattr(plane, "apply", racy_apply)
    world = World({"alpha": 5})
    await start_migration(Node(plane), 1, 2, throttle={"bytes_per_s": 0, "objects": 2})
    c = coordinator(plane, WaitingMover(world))
    c.start()
    try:
        await eventually("done", lambda: job(plane)["state"] == "done", timeout=30)
        await eventually("the run ended", lambda: not c.running, timeout=30)
    finally:
        await c.stop()
    assert swallowed == ["put_job"] and world.unmoved() == []
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "migration-checkpoint"]


async def test_a_second_migration_is_refused_while_one_runs_and_replaces_a_done_one(plane) -> None:
    node = Node(plane)
    await start_migration(node, 1, 2)
    assert (await start_migration(node, 1, 2))["to_gen"] == 2  # a retry of the same start
    with pytest.raises(migration.MigrationInProgress):
        await start_migration(node, 2, 3)
    await update_job(plane, migration.pause)
    assert migration.migration_in_progress(plane.snapshot)  # paused is still in progress
    with pytest.raises(migration.MigrationInProgress):
        await start_migration(node, 2, 3)
    await update_job(plane, lambda v: dict(v, state="done"))
    assert not migration.migration_in_progress(plane.snapshot)
    with pytest.raises(migration.MigrationFinished):
        await update_job(plane, migration.pause)
    await update_job(plane, lambda v: dict(v, throttle={"bytes_per_s": 7, "objects": 2}))
    value = await start_migration(node, 2, 3)
    assert value["from_gen"] == 2 and value["state"] == "running"
    assert value["throttle"] == {"bytes_per_s": 7, "objects": 2}  # the operator's throttle is kept


async def test_a_stale_coordinator_cannot_checkpoint_and_the_new_one_resumes(plane) -> None:
    world = World({"photos": 40})
    mover_a, mover_b = MemoryMover(world), MemoryMover(world)
    await start_migration(Node(plane), 1, 2, throttle={"bytes_per_s": 0, "objects": 1})
    leader = {"a": True}
    a = coordinator(plane, mover_a, "a", leader=lambda: leader["a"])
    mover_a.gate, mover_a.hold_after = asyncio.Event(), 10  # a's 11th move hangs, as on a node cut off
    a.start()
    await eventually("a is stuck in a move", lambda: len(mover_a.started) > len(world.commits) == 10)
    await eventually("a checkpointed", lambda: job(plane).get("moved_objects", 0) == 10)
    cursor = job(plane)["cursor"]
    assert cursor[0] == "photos" and cursor[1] >= "k0009"

    # b becomes leader and claims the job; a has not noticed yet (its leader check still says yes)
    b = coordinator(plane, mover_b, "b", leader=lambda: not leader["a"])
    with pytest.raises(Superseded):
        a.progress.moved_objects += 1000  # what a stale coordinator would write
        b.progress, _ = await b._claim()
        b.token = b.token
        await a._checkpoint()
    assert job(plane)["moved_objects"] < 1000  # the stale checkpoint was refused
    leader["a"] = False
    await eventually("a stopped", lambda: not a.running)
    mover_a.gate.set()
    b.token = None  # let b's supervisor claim afresh
    b.start()
    try:
        await eventually("done", lambda: job(plane)["state"] == "done")
    finally:
        await a.stop()
        await b.stop()
    assert world.unmoved() == []
    assert all(n == 1 for n in world.commits.values()), "an object was committed twice"
    assert mover_b.started and min(mover_b.started)[1] >= cursor[1]  # b resumed from the cursor, not from the start
    # b took over from a coordinator that never let go: it swept what a may have left behind
    assert sorted(mover_b.swept) == sorted(world.commits)
    assert not mover_a.swept and job(plane)["sweep"] is False
    assert job(plane)["moved_objects"] == 40


async def test_pause_stops_moving_and_resume_finishes_from_the_checkpoint(plane) -> None:
    world = World({"logs": 30})
    mover = MemoryMover(world)
    await start_migration(Node(plane), 1, 2, throttle={"bytes_per_s": 0, "objects": 2})
    c = coordinator(plane, mover)
    mover.gate, mover.hold_after = asyncio.Event(), 5  # moves after the 5th are held in flight
    c.start()
    try:
        await eventually("moves in flight", lambda: len(world.commits) == 5 and len(mover.started) >= 6)
        await update_job(plane, migration.pause)
        await eventually("the coordinator let go", lambda: not c.running)
        started, committed = len(mover.started), dict(world.commits)
        mover.gate.set()  # the cancelled moves never commit
        for _ in range(20):  # several polls: nothing starts while paused
            await asyncio.sleep(c.poll)
        assert len(mover.started) == started and world.commits == committed
        value = job(plane)
        assert value["state"] == "paused" and value["moved_objects"] == len(committed)
        assert value["owner"] is None  # a paused job has no coordinator
        assert world.unmoved()
        mover.gate = mover.hold_after = None
        await update_job(plane, migration.resume)
        await eventually("done", lambda: job(plane)["state"] == "done")
    finally:
        await c.stop()
    assert world.unmoved() == [] and all(n == 1 for n in world.commits.values())


async def test_throttle_changes_reach_the_coordinator(plane) -> None:
    world = World({"b": 1})
    mover = MemoryMover(world)
    mover.gate = asyncio.Event()
    await start_migration(Node(plane), 1, 2, throttle={"bytes_per_s": 1000, "objects": 1})
    c = coordinator(plane, mover)
    c.start()
    try:
        await eventually("first throttle", lambda: c.bucket.rate == 1000 and c.limiter.limit == 1)
        await update_job(plane, lambda v: dict(v, throttle=check_throttle({"bytes_per_s": 5 << 20, "objects": 8},
                                                                          v["throttle"])))
        await eventually("new throttle", lambda: c.bucket.rate == 5 << 20 and c.limiter.limit == 8)
        assert job(plane)["state"] == "running"  # a checkpoint never undoes the operator's change
        mover.gate.set()
        await eventually("done", lambda: job(plane)["state"] == "done")
        assert job(plane)["throttle"] == {"bytes_per_s": 5 << 20, "objects": 8}
    finally:
        await c.stop()


async def test_failed_moves_are_retried_by_the_next_pass(plane) -> None:
    world = World({"data": 8})
    mover = MemoryMover(world)
    mover.fail_once = {("data", "k0003"), ("data", "k0006")}
    await start_migration(Node(plane), 1, 2)
    c = coordinator(plane, mover)
    c.start()
    try:
        await eventually("done", lambda: job(plane)["state"] == "done", timeout=30)
    finally:
        await c.stop()
    value = job(plane)
    assert world.unmoved() == []
    assert value["errors"] == 2 and value["moved_objects"] == 8 and value["pass"] == 3
    assert "disk b offline" in value["last_error"]
    assert c.counters.errors == 2


async def test_a_run_stopped_mid_page_gives_back_every_permit(plane) -> None:
    """A walk that fails while it queues a page's moves (here: the target of the fourth key)
    cancels the moves it queued before any ran; each one's permit comes back (3 leaked
    before, and with the throttle at 3 objects every later run waited forever), and the next
    run finishes with one object at a time."""
    world = World({"data": 12})
    mover = MemoryMover(world)
    real_target, calls = mover.target, [0]

    def failing_target(bucket, key, entry, to_gen):
        calls[0] += 1
        if calls[0] == 4:
            raise KeyError("http://127.0.0.4:10000")  # as a node not adopted yet did
        return real_target(bucket, key, entry, to_gen)

    mover.target = failing_target
    await start_migration(Node(plane), 1, 2, throttle={"bytes_per_s": 0, "objects": 3})
    c = coordinator(plane, mover)
    c.progress, to_gen = await c._claim()
    with pytest.raises(KeyError):
        await c._walk(to_gen)
    await asyncio.sleep(0)  # the wake-ups of release_soon
    assert not mover.started and c.limiter.active == 0
    mover.target = real_target
    await update_job(plane, lambda v: dict(v, throttle={"bytes_per_s": 0, "objects": 1}))
    c.start()
    try:
        await eventually("done", lambda: job(plane)["state"] == "done", timeout=30)
    finally:
        await c.stop()
    assert world.unmoved() == [] and c.limiter.active == 0


async def test_a_run_waits_until_this_node_adopted_the_generation(plane) -> None:
    """The job can reach a node before the topology it migrates to is adopted there."""
    world = World({"data": 3})
    mover = MemoryMover(world)
    adopted = asyncio.Event()

    async def ready(to_gen):
        await adopted.wait()

    mover.ready = ready
    await start_migration(Node(plane), 1, 2)
    c = coordinator(plane, mover)
    c.start()
    try:
        await eventually("claimed", lambda: (job(plane).get("owner") or {}).get("node") == "n1")
        await asyncio.sleep(0.1)
        assert not mover.started and not mover.prepared
        adopted.set()
        await eventually("done", lambda: job(plane)["state"] == "done", timeout=30)
    finally:
        await c.stop()
    assert world.unmoved() == []


async def test_a_follower_never_moves(plane) -> None:
    world = World({"b": 3})
    mover = MemoryMover(world)
    await start_migration(Node(plane), 1, 2)
    c = coordinator(plane, mover, leader=lambda: False)
    c.start()
    try:
        for _ in range(20):
            await asyncio.sleep(c.poll)
        assert not mover.started and job(plane)["owner"] is None
    finally:
        await c.stop()
