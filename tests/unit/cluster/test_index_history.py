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
"""

from __future__ import annotations

import asyncio
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


def value_entry(value: str) -> dict:
    return {"wid": value, "size": 1, "etag": value, "mt": 1.0, "vid": "null"}


async def client(idx, c: int, rng: random.Random, history: list[Op], ops: int) -> None:
    loop = asyncio.get_running_loop()
    for seq in range(ops):
        node = rng.choice(NODES)
        key = rng.choice(KEYS)
        kind = rng.choices([PUT, GET, DELETE, CAS], [30, 40, 15, 15])[0]
        value = f"{key}:{c}:{seq}"
        call = loop.time()
        try:
            if kind == PUT:
                await idx[node].put_displacing("b", key, value_entry(value))
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
                got = await idx[node].get("b", key)
                seen = got["wid"] if got is not None else None
                history.append(Op(c, key, GET, seen, read_at, loop.time()))
                call = loop.time()

                def judge(current: dict | None, seen=seen) -> None:
                    if (current["wid"] if current is not None else None) != seen:
                        raise errors.ConditionalRequestConflict()

                try:
                    await idx[node].write_checked("b", key, value_entry(value), judge)
                except errors.ConditionalRequestConflict:
                    continue  # refused: no effect
                value = (seen, value)
            history.append(Op(c, key, kind, value, call, loop.time()))
        except (errors.WriteQuorumLost, errors.ReadQuorumLost, errors.KeyLocked, errors.SlowDown):
            history.append(Op(c, key, kind, value if kind != CAS else (None, value), call, None))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_interleavings_are_linearizable(tmp_path, seed) -> None:
    net, idx, regs = await start_trio(tmp_path)
    rng = random.Random(seed)
    jittery(net, rng)
    for n in NODES:  # the coordinators' transports were made before: make them again
        idx[n].transport = net.transport_for(n)
    history: list[Op] = []
    try:
        await asyncio.gather(*(client(idx, c, random.Random(seed * 100 + c), history, 60) for c in range(4)))
    finally:
        await stop_trio(idx, regs)
    kinds = {k: sum(1 for op in history if op.kind == k) for k in (PUT, GET, DELETE, CAS)}
    result = check(history)
    served = sum(i.leases.served for i in idx.values())  # read leases are on, as on a server
    print(f"seed {seed}: {len(history)} operations {kinds}, {served} lookups from a read lease; {result.report()}")
    assert kinds[CAS] >= 5 and kinds[DELETE] >= 5, kinds
    assert result.ok, result.report()
