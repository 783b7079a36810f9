"""When a node takes itself out of load balancers' rotation for a slow link
(``cluster/slowlink.py``): the peers' views, the rounds in a row, at most one node out."""

from __future__ import annotations

import asyncio
import logging

from buckets.cluster import slowlink
from buckets.cluster.slowlink import SlowLinkWatch, named_slow
from buckets.engine import hedge

A, B, C, D = (f"http://127.0.0.{i}:9000" for i in range(1, 5))


def views(*peers: str, slow: tuple[str, ...] = (), out: tuple[str, ...] = ()) -> dict[str, dict]:
    return {p: {"slow": list(slow), "out": p in out} for p in peers}


def test_every_peer_that_answered_must_name_the_node_and_they_must_be_a_majority() -> None:
    assert named_slow(C, views(A, B, D, slow=(C,)), members=3)
    assert not named_slow(C, {**views(A, B, slow=(C,)), **views(D)}, members=3)  # D keeps up with it
    assert named_slow(C, views(A, B, slow=(C,)), members=3)  # D did not answer: two of three
    assert not named_slow(C, views(A, slow=(C,)), members=3)  # one view is not enough
    assert not named_slow(C, views(A, B, slow=(C,)), members=4)  # two of four is not a majority
    assert not named_slow(C, views(A, B, slow=(f"{C}/d1",)), members=2)  # a disk of it, not the node


def test_two_slow_nodes_of_four_take_out_only_one_and_a_healthy_node_never() -> None:
    """A and B behind slow links: each of them finds every peer slow (everything lags behind
    its own disks); C and D find A and B slow. C is named by A and B only: D disagrees."""
    seen = {A: (B, C, D), B: (A, C, D), C: (A, B), D: (A, B)}
    watches = {n: SlowLinkWatch(n) for n in seen}
    history = []
    for _ in range(slowlink.ROUNDS_OUT + 3):
        outs = {n: w.out for n, w in watches.items()}
        for n, w in watches.items():
            w.round({p: {"slow": list(seen[p]), "out": outs[p]} for p in seen if p != n}, members=3)
        history.append([n for n, w in watches.items() if w.out])
    # A and B went out in the same round (neither saw the other out yet); B gave way at the next
    assert history[slowlink.ROUNDS_OUT - 1] == [A, B] and history[slowlink.ROUNDS_OUT:] == [[A]] * 3


def test_it_goes_out_after_rounds_in_a_row_and_comes_back_after_more(caplog) -> None:
    w = SlowLinkWatch(C)
    named = views(A, B, D, slow=(C,))
    caplog.set_level(logging.WARNING, "buckets.cluster.slowlink")
    for _ in range(slowlink.ROUNDS_OUT - 1):
        assert not w.round(named, 3) and not w.out
    assert w.round(named, 3) and w.out
    assert "find this node's link slow" in caplog.text and w.named_by == [A, B, D]
    # One round in a gap between two of a peer's periods does not bring it back ...
    assert not w.round({**named, B: {"slow": [], "out": False}}, 3) and w.out
    assert not w.round(named, 3) and w.out
    # ... rounds in a row do
    for _ in range(slowlink.ROUNDS_IN - 1):
        assert not w.round(views(A, B, D), 3) and w.out
    assert w.round(views(A, B, D), 3) and not w.out
    assert "no longer find" in caplog.text


def test_a_node_does_not_go_out_while_another_is() -> None:
    w = SlowLinkWatch(C)
    for _ in range(slowlink.ROUNDS_OUT + 1):
        w.round(views(A, B, D, slow=(C,), out=(D,)), 3)
    assert not w.out


async def test_peers_that_fail_or_do_not_answer_are_left_out_of_the_round(monkeypatch) -> None:
    monkeypatch.setattr(slowlink, "ASK_TIMEOUT", 0.2)

    async def names_c() -> dict:
        return {"slow": [C], "out": False}

    async def fails() -> dict:
        raise ConnectionError("offline")

    async def hangs() -> dict:
        await asyncio.sleep(60)
        return {}

    w = SlowLinkWatch(C)
    got = await asyncio.wait_for(w.ask({A: names_c, B: names_c, D: fails, "http://x": hangs}), 10)
    assert got == {A: {"slow": [C], "out": False}, B: {"slow": [C], "out": False}}


def test_only_sources_surely_slow_are_named() -> None:
    now = [100.0]
    slow = hedge.SlowSources(clock=lambda: now[0])
    slow.mark("peer-a", A, 0.5)  # one read's hedge: a GC pause can make one
    assert slow.names() == [A] and slow.surely_names() == []
    slow.mark("peer-b", B, 1.0, "writes to")  # a write left it out
    assert slow.surely_names() == [B]
    now[0] += hedge.SLOW_FOR + 0.1
    assert slow.surely_names() == []
