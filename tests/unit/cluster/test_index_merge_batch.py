"""Index merges to one peer, batched (``MergeBatcher`` on the writer, ``index/merge_batch`` on
the replica): merges that wait while one is in flight go in one call; each caller gets its own
answer or error, exactly as from a call of its own."""

from __future__ import annotations

import asyncio

import pytest

from buckets import errors
from buckets.cluster.index import MAX_MERGE_BATCH, MergeBatcher
from buckets.cluster.rpcerrors import BadPeerRequest, PeerOffline, UnknownPeerMethod, error_to_wire

from test_index_replication import entry, held, start_trio, stop_trio


class FakeClient:
    """A peer client whose calls each wait for ``gate`` (when set) and are answered by
    ``answer(method, args)``; records every call."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.sent: list[tuple[str, dict]] = []
        self.gate: asyncio.Event | None = None

    async def call(self, service: str, method: str, args: dict):
        assert service == "index"
        self.sent.append((method, args))
        if self.gate is not None:
            await self.gate.wait()
        return await self.answer(method, args)


def merge_args(key: str) -> dict:
    return {"bucket": "b", "key": key, "entry": None, "ts": [1, key]}


async def echo(method: str, args: dict):
    if method == "merge":
        return {"applied": True, "key": args["key"]}
    return {"answers": [{"ok": {"applied": True, "key": a["key"]}} for a in args["merges"]]}


async def test_merges_waiting_behind_a_call_go_in_one_batch() -> None:
    client = FakeClient(echo)
    client.gate = asyncio.Event()
    b = MergeBatcher(client)
    first = asyncio.ensure_future(b.merge(merge_args("k0")))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(b.merge(merge_args(f"k{i}"))) for i in range(1, 6)]
    await asyncio.sleep(0)
    client.gate.set()
    answers = await asyncio.gather(first, *rest)
    assert [a["key"] for a in answers] == [f"k{i}" for i in range(6)]  # each its own answer
    assert [m for m, _ in client.sent] == ["merge", "merge_batch"]  # the first alone, then the rest
    assert [a["key"] for a in client.sent[1][1]["merges"]] == [f"k{i}" for i in range(1, 6)]
    assert (b.calls, b.merges) == (2, 6)


async def test_a_batch_holds_at_most_the_maximum() -> None:
    client = FakeClient(echo)
    client.gate = asyncio.Event()
    b = MergeBatcher(client)
    calls = [asyncio.ensure_future(b.merge(merge_args(f"k{i}"))) for i in range(MAX_MERGE_BATCH + 3)]
    await asyncio.sleep(0)
    client.gate.set()
    await asyncio.gather(*calls)
    sizes = [len(a["merges"]) if m == "merge_batch" else 1 for m, a in client.sent]
    assert max(sizes) <= MAX_MERGE_BATCH and sum(sizes) == MAX_MERGE_BATCH + 3


async def test_each_merge_gets_its_own_error() -> None:
    async def answer(method: str, args: dict):
        return {"answers": [{"error": error_to_wire(errors.KeyLocked("locked"))} if a["key"] == "bad"
                            else {"ok": {"applied": True}} for a in args["merges"]]}

    client = FakeClient(answer)
    b = MergeBatcher(client)
    # both queued in the same turn of the loop, before the sender runs: one batch of two
    ok = asyncio.ensure_future(b.merge(merge_args("good")))
    bad = asyncio.ensure_future(b.merge(merge_args("bad")))
    assert await ok == {"applied": True}
    with pytest.raises(errors.KeyLocked):
        await bad


async def test_a_failed_call_fails_every_merge_in_it_and_says_whether_it_was_sent() -> None:
    async def offline(method: str, args: dict):
        raise PeerOffline("peer is offline")

    b = MergeBatcher(FakeClient(offline))
    calls = [asyncio.ensure_future(b.merge(merge_args(f"k{i}"))) for i in range(3)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, PeerOffline) and r.unsent for r in results)


async def test_a_merge_cancelled_before_it_was_sent_is_not_sent() -> None:
    client = FakeClient(echo)
    client.gate = asyncio.Event()
    b = MergeBatcher(client)
    first = asyncio.ensure_future(b.merge(merge_args("k0")))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(b.merge(merge_args("gone")))
    kept = asyncio.ensure_future(b.merge(merge_args("kept")))
    await asyncio.sleep(0)
    gone.cancel()
    client.gate.set()
    await first
    assert (await kept)["key"] == "kept"
    assert [a["key"] for m, a in client.sent if m == "merge"] == ["k0", "kept"]  # "gone" never went


async def test_a_peer_without_merge_batch_gets_plain_merges() -> None:
    async def older(method: str, args: dict):
        if method == "merge_batch":
            raise UnknownPeerMethod("no index/merge_batch")
        return {"applied": True, "key": args["key"]}

    client = FakeClient(older)
    client.gate = asyncio.Event()
    b = MergeBatcher(client)
    calls = [asyncio.ensure_future(b.merge(merge_args(f"k{i}"))) for i in range(4)]
    await asyncio.sleep(0)
    client.gate.set()
    assert [r["key"] for r in await asyncio.gather(*calls)] == [f"k{i}" for i in range(4)]
    assert not b.batched
    assert (await b.merge(merge_args("later")))["key"] == "later"
    assert client.sent[-1][0] == "merge"


async def test_the_replica_runs_a_batch_as_separate_merges(tmp_path) -> None:
    net, idx, regs = await start_trio(tmp_path)
    try:
        replica = idx["n2"].local
        v = [idx["n2"].clock.now(), "w1"]
        good = {"bucket": "b", "key": "k", "entry": dict(entry("w1"), ts=v), "data": None, "ts": v}
        ans = await replica.merge_batch({"merges": [good, {"bucket": 3}, "junk"]})
        first, *bad = ans["answers"]
        assert first["ok"]["applied"] and held(regs, "n2")[0] == "w1"
        assert all(a["error"]["type"] == "BadPeerRequest" for a in bad)
    finally:
        await stop_trio(idx, regs)


@pytest.mark.parametrize("args", [{}, {"merges": []}, {"merges": "x"}, {"merges": [{}] * (MAX_MERGE_BATCH + 1)}])
async def test_a_malformed_batch_is_a_bad_request(tmp_path, args) -> None:
    net, idx, regs = await start_trio(tmp_path)
    try:
        with pytest.raises(BadPeerRequest):
            await idx["n1"].local.merge_batch(args)
        assert regs["n1"].count_objects() == 0
    finally:
        await stop_trio(idx, regs)
