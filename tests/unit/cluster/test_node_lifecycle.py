"""A cluster node's peer services while it starts and stops, and how many peers it waits for.

Real ``ClusterNode``s (``ClusterNode.create`` from a real command line's config) serve their
peer RPC on free ports of 127.0.0.1 (one port per node: the same host, several nodes), and
real ``PeerClient``s call them:

- every service is registered before the store opens: the index answers a typed, retryable
  ``PeerNotReady`` (the caller counts the replica as unavailable; the peer stays online),
  never "no peer method"; it serves once the store is open and stops before the store closes;
- ``node/info`` is a cluster node's method too;
- a new cluster waits for every peer; a restart waits for a majority, then goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rpc_testkit import RpcNode, closed_peer_session, free_port  # noqa: F401 - fixture

from buckets.cli.config import build_config
from buckets.cluster.index import IndexReplica, ReplicatedIndex
from buckets.cluster.node import ClusterNode, ClusterStartError
from buckets.cluster.rpcclient import PeerState
from buckets.cluster.rpcerrors import UnknownPeerMethod
from buckets.cluster.rpcserver import PeerNotReady
from buckets.registry import Registry


def make_nodes(tmp: Path, count: int = 4) -> list[ClusterNode]:
    """``count`` nodes of two disks each, all on 127.0.0.1 with their own ports, every one
    created from the same endpoint list (as ``buckets server`` does on each host)."""
    ports = [free_port() for _ in range(count)]
    urls = [f"http://127.0.0.1:{p}{tmp}/n{i}/d{{1...2}}" for i, p in enumerate(ports, start=1)]
    return [ClusterNode.create(build_config({"paths": urls, "address": f"127.0.0.1:{p}", "sync": "off"}, {}))
            for p in ports]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[list[ClusterNode], list[RpcNode]]]:
    """Four nodes; the peer RPC of each listens on its own port (start them as needed)."""
    nodes = make_nodes(tmp_path)
    listeners = [RpcNode(n.rpc, port=n.config.port) for n in nodes]
    try:
        yield nodes, listeners
    finally:
        for listener in listeners:
            await listener.stop()
        for node in nodes:
            await node.close()


async def test_index_answers_not_ready_until_the_store_opens_and_again_once_it_stops(
        served, tmp_path: Path) -> None:
    nodes, listeners = served
    node, listener = nodes[1], listeners[1]
    await listener.start()
    client = listener.client(secret=node.secret)
    try:
        with pytest.raises(PeerNotReady) as starting:  # not UnknownPeerMethod: the method exists
            await client.call("index", "get", {"bucket": "b", "key": "k"})
        assert not isinstance(starting.value, UnknownPeerMethod)
        assert starting.value.status == 503 and "starting" in starting.value.message
        assert client.state is PeerState.ONLINE  # it answered: its health is not in question

        # The store opened: the same registered method now answers from the node's replica.
        registry = Registry(str(tmp_path / "registry"), sync=False)
        registry.start()
        try:
            node.index = ReplicatedIndex(node.spec.me.url, IndexReplica(registry), node._transport,
                                         lambda bucket: [node.spec.me.url])
            node._store = object()  # what open_store sets once the store is open
            await node.index.put("b", "k", {"wid": "w1", "etag": "e"})
            answer = await client.call("index", "get", {"bucket": "b", "key": "k"})
            assert answer["entry"]["etag"] == "e"

            await node.stop()  # what `buckets server` does before it closes the store
            with pytest.raises(PeerNotReady) as stopping:
                await client.call("index", "get", {"bucket": "b", "key": "k"})
            assert "stopping" in stopping.value.message
        finally:
            await registry.close()
    finally:
        await client.close()


async def test_a_replicated_read_counts_a_starting_replica_as_unavailable(served) -> None:
    """The caller's side: a quorum read with one replica still starting fails as a quorum
    failure naming the not-ready replica, the same as with a replica that is down."""
    nodes, listeners = served
    for listener in listeners[1:3]:
        await listener.start()
    caller = nodes[0]
    others = [nodes[1].spec.me.url, nodes[2].spec.me.url]
    index = ReplicatedIndex(caller.spec.me.url, IndexReplica(None), caller._transport,  # type: ignore[arg-type]
                            lambda bucket: others)
    from buckets import errors

    with pytest.raises(errors.ReadQuorumLost) as lost:
        await index.get("b", "k")
    assert "starting" in lost.value.message and "no peer method" not in lost.value.message
    assert all(caller.clients[url].state is PeerState.ONLINE for url in others)


async def test_node_info_is_served_by_a_cluster_node(served) -> None:
    nodes, listeners = served
    node, listener = nodes[2], listeners[2]
    await listener.start()
    client = listener.client(secret=node.secret)
    try:
        info = await client.call("node", "info")
        assert info["address"] == node.config.address and info["disks"] == 8
        assert info["ready"] is False and info["deployment_id"] == ""
    finally:
        await client.close()


async def test_a_restart_waits_for_a_majority_not_for_every_node(served) -> None:
    nodes, listeners = served
    me = nodes[0]
    await listeners[1].start()  # nodes 2 and 3 answer, node 4 is down: 3 of 4 is a majority
    await listeners[2].start()
    assert me.majority_peers() == 2
    missing = await me.wait_for_peers(me.majority_peers(), grace=0.0)
    assert missing == [nodes[3].spec.me.url]


async def test_a_restart_gives_the_last_nodes_a_grace_period(served) -> None:
    nodes, listeners = served
    me = nodes[0]
    await listeners[1].start()
    await listeners[2].start()

    async def late() -> None:  # the last node comes up while the others are waited for
        await asyncio.sleep(0.3)
        await listeners[3].start()

    starting = asyncio.ensure_future(late())
    assert await me.wait_for_peers(me.majority_peers(), grace=30.0) == []
    await starting


async def test_without_a_majority_the_start_is_refused_with_one_line(served) -> None:
    nodes, listeners = served
    me = nodes[0]
    await listeners[1].start()  # 2 of 4: no majority
    with pytest.raises(ClusterStartError) as refused:
        await me.wait_for_peers(me.majority_peers(), timeout=1.0, grace=0.0)
    assert "1 of 3 peers answered" in str(refused.value) and "2 needed" in str(refused.value)


async def test_a_new_cluster_waits_for_every_node(served) -> None:
    nodes, listeners = served
    me = nodes[0]
    for listener in listeners[1:3]:
        await listener.start()
    with pytest.raises(ClusterStartError) as refused:
        await me.wait_for_peers(timeout=1.0, grace=0.0)
    assert nodes[3].spec.me.url in str(refused.value)


async def test_a_peer_with_another_cluster_secret_stops_the_start_with_one_clear_line(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(2)]
    urls = [f"http://127.0.0.1:{p}{tmp_path}/n{i}/d{{1...2}}" for i, p in enumerate(ports, start=1)]
    me = ClusterNode.create(build_config({"paths": urls, "address": f"127.0.0.1:{ports[0]}", "sync": "off"},
                                         {"BUCKETS_CLUSTER_SECRET": "the-one-cluster-secret"}))
    other = ClusterNode.create(build_config({"paths": urls, "address": f"127.0.0.1:{ports[1]}", "sync": "off"},
                                            {"BUCKETS_CLUSTER_SECRET": "another-cluster-secret"}))
    listener = RpcNode(other.rpc, port=other.config.port)
    try:
        await listener.start()
        with pytest.raises(ClusterStartError) as refused:
            await me.wait_for_peers(timeout=30.0)
        assert "different cluster secrets" in str(refused.value)
    finally:
        await listener.stop()
        await me.close()
        await other.close()
