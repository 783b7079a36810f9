"""The replicated index under random interleavings, checked for linearizability.

Three replicas in one process (test_index_replication.py's harness) behind a transport that
delays every call by a random few milliseconds, three coordinators, and clients doing what
the engine does on a cluster: a blind PUT (``put_displacing``), a DELETE after a read, a
conditional PUT from the value just read (``write_checked``, If-Match), and GETs, on two keys.
The history (call and return times on the loop's clock) goes through the cluster suite's
checker (tests/cluster/linearizability.py). Seeds are fixed, but the registries' commit
threads make each run's interleaving a little different. With the conditional writes' key
locks alone (as first committed, a6e43e1: before a write refused by a conditional commit
that did not see it was merged again, and before the blind PUT's re-merge rules), 15 of 30
histories were not linearizable (8 of 10 runs of the three seeds); none of 120 since.

Each history runs twice: with the engine's usual writes (``engine``) and with a wider mix
(``wide``: PUTs under a fresh version, ``ReplicatedIndex.put``, and conditional DELETEs), which
found a conditional commit replacing a write its check had not seen (session 26).

The same with a third of the calls lost (before delivery or their answer): failed writes are
outcome unknown, and a failed blind PUT is undone where it was merged (``retract``). Before a
writer asked the replicas whose answers were lost whether they held its first version
(``ReplicatedIndex._holding``), an old acknowledged value came back in 1 of 15 histories.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import pytest
from test_index_replication import NODES, start_trio, stop_trio

from buckets import errors

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cluster"))
from linearizability import CAS, DELETE, GET, PUT, Op, check  # noqa: E402

KEYS = ("k0", "k1")


def jittery(net, rng: random.Random) -> None:
    """Every call (and every answer) waits a random 0-4 ms: messages overtake each other."""
    real = net.transport_for

    def transport_for(src: str):
        call = real(src)

        async def delayed(node: str, method: str, args: dict):
            await asyncio.sleep(rng.random() * 0.004)
            ans = await call(node, method, args)
            await asyncio.sleep(rng.random() * 0.002)
            return ans
        return delayed

    net.transport_for = transport_for


def lossy(net, rng: random.Random, p: float) -> None:
    """On top of ``jittery``: a call between two nodes is lost with probability ``p``, half the
    time before it is delivered and half the time after (its answer lost): writes fail, some
    after a replica applied them (undone there, or left to appear)."""
    real = net.transport_for

    def transport_for(src: str):
        call = real(src)

        async def unreliable(node: str, method: str, args: dict):
            roll = rng.random()
            if roll < p / 2:
                raise errors.ServiceUnavailable(f"{node}: lost on the way")
            ans = await call(node, method, args)
            if roll < p:
                raise errors.ServiceUnavailable(f"{node}: answer lost")
            return ans
        return unreliable

    net.transport_for = transport_for


def value_entry(value: str) -> dict:
    return {"wid": value, "size": 1, "etag": value, "mt": 1.0, "vid": "null"}


# The engine's other index writes (``wide``): a PUT merged under a fresh version without
# reporting what it displaced (``ReplicatedIndex.put``, ``_write_new``), and a conditional DELETE
# (``If-Match`` on a DELETE: ``write_checked`` with a tombstone).
PUT_FRESH, CDEL = "put_fresh", "cdel"
MIXES = {"engine": ([PUT, GET, DELETE, CAS], [30, 40, 15, 15]),
         "wide": ([PUT, PUT_FRESH, GET, DELETE, CAS, CDEL], [20, 10, 40, 10, 12, 8])}


async def client(idx, c: int, rng: random.Random, history: list[Op], ops: int, mix: str = "engine") -> None:
    loop = asyncio.get_running_loop()
    for seq in range(ops):
        node = rng.choice(NODES)
        key = rng.choice(KEYS)
        kind = rng.choices(*MIXES[mix])[0]
        value = f"{key}:{c}:{seq}"
        call = loop.time()
        seen: str | None = None
        try:
            if kind == PUT:
                await idx[node].put_displacing("b", key, value_entry(value))
            elif kind == PUT_FRESH:
                kind = PUT
                await idx[node].put("b", key, value_entry(value))
            elif kind == DELETE:
                current = await idx[node].get("b", key)  # the engine reads the entry it deletes
                if current is not None:
                    await idx[node].delete("b", key, current["wid"])
                else:
                    kind, value = GET, None  # nothing to delete: it was a read
            elif kind == GET:
                got = await idx[node].get("b", key)
                value = got["wid"] if got is not None else None
            else:
                read_at = loop.time()
                deleting = kind == CDEL
                kind = GET  # until the read has answered: a failure is a failed GET
                got = await idx[node].get("b", key)
                seen = got["wid"] if got is not None else None
                history.append(Op(c, key, GET, seen, read_at, loop.time()))
                if deleting and seen is None:
                    continue  # nothing to delete (If-Match on an absent key: 404)
                call, kind = loop.time(), CAS
                if deleting:
                    value = None  # a conditional DELETE: from the value read to absent

                def judge(current: dict | None, seen=seen) -> None:
                    if (current["wid"] if current is not None else None) != seen:
                        raise errors.ConditionalRequestConflict()

                try:
                    await idx[node].write_checked("b", key, value_entry(value) if value is not None else None, judge)
                except errors.ConditionalRequestConflict:
                    continue  # refused: no effect
                value = (seen, value)
            history.append(Op(c, key, kind, value, call, loop.time()))
        except (errors.WriteQuorumLost, errors.ReadQuorumLost, errors.KeyLocked, errors.SlowDown):
            # (a failed conditional write's condition is the value its read saw)
            history.append(Op(c, key, kind, value if kind != CAS else (seen, value), call, None))


async def anti_entropy(idx, rng: random.Random, done: asyncio.Event) -> int:
    """Anti-entropy passes (``sync_bucket``) on random replicas while the clients run, every
    10-50 ms (a node runs one a minute: here they meet the writes in flight far more often);
    the number of passes."""
    passes = 0
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), rng.uniform(0.01, 0.05))
        except asyncio.TimeoutError:
            await idx[rng.choice(NODES)].sync_bucket("b")
            passes += 1
    return passes


async def run_history(tmp_path, seed: int, lost: float = 0.0, mix: str = "engine", entropy: bool = False,
                      **options) -> tuple[list[Op], dict]:
    """Four clients' 60 operations each through three coordinators over a jittery (and, with
    ``lost``, lossy) transport, the operations drawn from ``MIXES[mix]``, with ``entropy``
    anti-entropy passes beside them; the history and the coordinators (stopped)."""
    net, idx, regs = await start_trio(tmp_path, **options)
    rng = random.Random(seed)
    jittery(net, rng)
    if lost:
        lossy(net, rng, lost)
    for n in NODES:  # the coordinators' transports were made before: make them again
        idx[n].transport = net.transport_for(n)
    history: list[Op] = []
    done = asyncio.Event()
    passes = asyncio.ensure_future(anti_entropy(idx, random.Random(seed * 7 + 1), done)) if entropy else None
    try:
        await asyncio.gather(*(client(idx, c, random.Random(seed * 100 + c), history, 60, mix) for c in range(4)))
    finally:
        done.set()
        if passes is not None:
            await passes
        await stop_trio(idx, regs)
    return history, idx


@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_interleavings_are_linearizable(tmp_path, seed, mix) -> None:
    history, idx = await run_history(tmp_path, seed, mix=mix)
    kinds = {k: sum(1 for op in history if op.kind == k) for k in (PUT, GET, DELETE, CAS)}
    result = check(history)
    served = sum(i.leases.served for i in idx.values())  # read leases are on, as on a server
    print(f"seed {seed}: {len(history)} operations {kinds}, {served} lookups from a read lease; {result.report()}")
    assert kinds[CAS] >= 5 and kinds[DELETE] >= 5, kinds
    if mix == "wide":  # conditional DELETEs among the conditional writes
        assert sum(1 for op in history if op.kind == CAS and op.value[1] is None) >= 3
    assert result.ok, result.report()


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_interleavings_beside_anti_entropy_are_linearizable(tmp_path, seed) -> None:
    """The same with anti-entropy passes on random replicas every 10-50 ms, copying what a
    replica lacks while writes are still on their way to it: the histories stay linearizable.
    (With lost calls, in ``make test-fuzz`` and the finder, passes also meet failed writes and
    failed conditional commits.)"""
    history, idx = await run_history(tmp_path, seed, mix="wide", entropy=True)
    result = check(history)
    print(f"seed {seed}: {len(history)} operations, {sum(i.entropy_repairs for i in idx.values())} "
          f"anti-entropy repairs; {result.report()}")
    assert result.ok, result.report()


LOSSY_SEEDS = [int(s) for s in os.environ.get("LOSSY_SEEDS", "").split(",") if s] or \
    [random.SystemRandom().randrange(1 << 20) for _ in range(6)]


@pytest.mark.fuzz
@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize("seed", LOSSY_SEEDS)
async def test_random_interleavings_with_lost_messages_are_linearizable(tmp_path, seed, mix, monkeypatch) -> None:
    """A failed blind PUT is undone on the replicas that took it (``retract``) unless a read
    returned it: with a third of the calls lost, the histories, failed writes counted as
    outcome unknown, stay linearizable, and some writes are undone.

    Random exploration (``make test-fuzz``; ``LOSSY_SEEDS=1,2`` repeats seeds), not in ``make
    test``: thread timing makes a seed's history differ between runs, and about 1 history in
    40 was not linearizable until a blind PUT refused by a conditional commit that did not see
    it was merged again even on a quorum (0 of 108 since; ROADMAP "Next" has what is open)."""
    import buckets.cluster.index as index_module
    import buckets.cluster.leases as leases_module
    # Lost unlocks and lease calls cost their full waits: shorter ones keep the test short.
    monkeypatch.setattr(index_module, "KEY_LOCK_SECONDS", 0.5)
    monkeypatch.setattr(index_module, "KEY_LOCK_WAIT", 0.3)
    monkeypatch.setattr(index_module, "HOLDER_WAIT", 0.1)
    monkeypatch.setattr(leases_module, "HOLDER_WAIT", 0.1)
    # Anti-entropy passes beside the clients for odd seeds (``lossy_trace.py``: LOSSY_ENTROPY).
    history, idx = await run_history(tmp_path, seed, lost=0.35, lease_seconds=0.4, mix=mix, entropy=bool(seed % 2))
    result = check(history)
    undone = sum(i.retractions for i in idx.values())
    failed = sum(1 for op in history if op.ret is None)
    print(f"seed {seed}: {len(history)} operations, {failed} with unknown outcome, {undone} merges undone; "
          f"{result.report()}")
    assert undone > 0 and failed > 0
    assert result.ok, result.report()
