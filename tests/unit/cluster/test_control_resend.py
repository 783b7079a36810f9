"""A change sent through a follower whose forward to the leader is lost.

pysyncobj forwards a follower's command to the leader and waits for the answer until the
leader changes; a forward sent while the follower's connection to the leader is down (a
reconnect under load) is dropped without a word. ``ControlPlane.apply`` sends the command
again when no answer came within ``resend_after``: the same request id, so the state machine
applies it once. Three real control-plane nodes in this process (pysyncobj over loopback)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from buckets.cluster.control import ControlConfig, ControlPlane
from serverproc import free_port

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


async def three(tmp_path: Path, **overrides) -> list[ControlPlane]:
    port = free_port()
    members = tuple(f"{h}:{port}" for h in HOSTS)
    planes = [ControlPlane(ControlConfig(address=a, members=members, secret="resend-test-secret",
                                         directory=str(tmp_path / a.replace(":", "_")), **overrides))
              for a in members]
    for plane in planes:
        await plane.start()
    await planes[0].wait_leader(timeout=30)
    await planes[0].read(linearizable=True, timeout=30)
    return planes


def drop(plane: ControlPlane, kind: str, count: int) -> list[dict]:
    """The next ``count`` messages of type ``kind`` that ``plane`` sends are lost on the way."""
    transport = plane._raft._SyncObj__transport
    real_send = transport.send
    dropped: list[dict] = []

    def send(node, message):
        if isinstance(message, dict) and message.get("type") == kind and len(dropped) < count:
            dropped.append(message)
            return True  # as when the connection is down: nothing arrives, no error
        return real_send(node, message)

    transport.send = send
    return dropped


@pytest.mark.parametrize("lost", ["forward", "answer"])
async def test_a_change_whose_forward_or_answer_is_lost_is_sent_again_and_applied_once(tmp_path: Path, lost) -> None:
    planes = await three(tmp_path, commit_timeout=8.0, resend_after=0.5)
    try:
        leader_address = await planes[0].wait_leader(timeout=30)
        leader = next(p for p in planes if p.config.address == leader_address)
        follower = next(p for p in planes if p.config.address != leader_address)
        if lost == "forward":  # the leader never hears of it
            dropped = drop(follower, "apply_command", 1)
        else:  # the leader appends it, the follower never hears where: it never learns it committed
            dropped = drop(leader, "apply_command_response", 1)
        started = time.monotonic()
        # Applied twice, the second would be refused (BucketAlreadyOwnedByYou): the request
        # id makes the second sending answer the first one's result.
        created = await follower.apply("create_bucket", name="photos", owner="alice")
        took = time.monotonic() - started
        assert created["name"] == "photos" and len(dropped) == 1
        assert took < 8.0  # not the whole budget: the first answer never comes
        for plane in planes:
            state = await plane.read(linearizable=True, timeout=30)
            assert list(state.buckets) == ["photos"]
    finally:
        await asyncio.gather(*(p.close() for p in planes))


async def test_forwards_lost_for_longer_than_the_budget_end_in_no_quorum(tmp_path: Path) -> None:
    planes = await three(tmp_path, commit_timeout=2.0, resend_after=0.3)
    try:
        leader_address = await planes[0].wait_leader(timeout=30)
        follower = next(p for p in planes if p.config.address != leader_address)
        dropped = drop(follower, "apply_command", 1000)
        started = time.monotonic()
        try:
            await follower.apply("create_bucket", name="never", owner="alice")
        except Exception as exc:  # noqa: BLE001 - the type is checked just below
            assert type(exc).__name__ == "NoQuorum", exc
        else:
            raise AssertionError("a change no leader heard of was acknowledged")
        assert time.monotonic() - started >= 2.0
        assert len(dropped) >= 3  # sent again while the budget lasted (0.3, 0.6, 1.2 s)
        leader = next(p for p in planes if p.config.address == leader_address)
        assert "never" not in (await leader.read(linearizable=True, timeout=30)).buckets
    finally:
        await asyncio.gather(*(p.close() for p in planes))


async def test_a_membership_change_made_meanwhile_by_another_node_is_done(tmp_path: Path) -> None:
    """A forced ``cluster remove-node`` commits the node's REMOVED state, then removes it from
    Raft; the leader's ``finish_removals`` removes it as soon as it sees that state. When the
    leader's change came first while the proposer's view still listed the member, the
    proposer's change was refused ("another membership change in progress") until its budget
    ran out, and the admin call answered 409 though the node was gone (seen once in
    ``tests/cluster/test_growth.py::test_force_remove_a_killed_node_then_heal``). Here the
    proposer's view is held stale while the leader removes the member; once its view shows the
    change, its own is done."""
    port = free_port()
    members = tuple(f"127.0.0.{i}:{port}" for i in (1, 2, 3, 4))
    planes = [ControlPlane(ControlConfig(address=a, members=members, secret="resend-test-secret",
                                         directory=str(tmp_path / a.replace(":", "_")), commit_timeout=8.0))
              for a in members]
    for plane in planes:
        await plane.start()
    try:
        leader_address = await planes[0].wait_leader(timeout=30)
        await planes[0].read(linearizable=True, timeout=30)
        leader = next(p for p in planes if p.config.address == leader_address)
        dead, proposer = [p for p in planes if p is not leader][:2]
        await dead.close()
        raft = proposer._raft
        raft.removeOnTickCallback(raft._publish_status)  # the proposer's view: frozen, the member still in it
        assert await leader.remove_member(dead.config.address, timeout=8.0) is True
        asyncio.get_running_loop().call_later(0.5, raft.addOnTickCallback, raft._publish_status)
        started = time.monotonic()
        assert await proposer.remove_member(dead.config.address, timeout=8.0) is True
        assert time.monotonic() - started < 4.0  # not the whole budget
        assert dead.config.address not in proposer._raft.published_status.members
    finally:
        await asyncio.gather(*(p.close() for p in planes if p is not dead))
