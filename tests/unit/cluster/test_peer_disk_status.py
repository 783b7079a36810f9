"""The disk monitor's probe and a metrics scrape ask a peer about all its disks in one call.

A real peer: a ``PeerRpcServer`` with the ``DiskService`` over four ``LocalDisk``s on a
loopback port; this side: four ``RemoteDisk``s sharing one ``PeerClient``, as a cluster node
wires them. Calls are counted where they are made (``PeerClient.health.calls``: every
request this client sent) and where they are served (the server's access log would show the
same; here a count per method on the server).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
from aiohttp import web
from rpc_testkit import RpcNode, closed_peer_session, make_rpc  # noqa: F401 - autouse fixture

from buckets.cluster import remotedisk
from buckets.cluster.diskservice import DiskService
from buckets.cluster.remotedisk import RemoteDisk
from buckets.cluster.rpcchannel import CHANNEL_PATH
from buckets.cluster.rpcclient import PeerState, PeerTimeouts
from buckets.cluster.rpcerrors import BadPeerRequest
from buckets.errors import DiskError, DiskOffline, DiskSlow
from buckets.obs.access import METRICS_KEY
from buckets.storage import LocalDisk

DISKS = 4


class Peer:
    """One peer node serving four formatted local disks; counts the disk calls it serves."""

    def __init__(self, base: str, *, with_status: bool = True) -> None:
        self.paths = [os.path.join(base, f"d{i}") for i in range(1, DISKS + 1)]
        self.local = {p: LocalDisk(p, f"disk-{i}") for i, p in enumerate(self.paths, 1)}
        self.rpc = make_rpc()
        DiskService(self.local).register(self.rpc)
        if not with_status:  # a peer of the version before disk/status
            del self.rpc._handlers[("disk", "status")]
        self.served: Counter = Counter()
        self.node = RpcNode(self.rpc)

    async def start(self) -> None:
        for i, path in enumerate(self.paths, 1):
            await self.local[path].write_format(f'{{"disk": {i}}}'.encode(), create_root=True, sync=False)

        @web.middleware
        async def count(request: web.Request, handler):  # calls over HTTP
            if request.path != CHANNEL_PATH:
                self.served[request.path.rsplit("/", 2)[-2] + "/" + request.path.rsplit("/", 1)[-1]] += 1
            return await handler(request)

        served = self.served

        class CallsOnChannels:  # what the server reports to metrics for each call on a channel
            @staticmethod
            def observe(api: str, status: int, seconds: float, received: int, sent: int) -> None:
                served[api.split(".", 1)[1].replace(".", "/")] += 1

        app = web.Application(middlewares=[count])
        app[METRICS_KEY] = CallsOnChannels()
        app.router.add_routes(self.rpc.routes())

        async def go_away(app: web.Application) -> None:
            await self.rpc.go_away(app)

        app.on_shutdown.append(go_away)
        self.node.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self.node.runner.setup()
        await web.TCPSite(self.node.runner, "127.0.0.1", self.node.port, reuse_address=True).start()

    async def stop(self) -> None:
        await self.node.stop()
        for disk in self.local.values():
            await disk.close()


@pytest.fixture
async def peer(tmp_path):
    p = Peer(str(tmp_path))
    await p.start()
    yield p
    await p.stop()


def remote_disks(peer: Peer, client=None) -> list[RemoteDisk]:
    client = client or peer.node.client()
    return [RemoteDisk(client, path, f"{peer.node.endpoint}{path}", f"disk-{i}")
            for i, path in enumerate(peer.paths, 1)]


async def probe_round(disks: list[RemoteDisk]) -> list:
    """What the disk monitor does: every disk's format, all at once."""
    return await asyncio.gather(*(d.read_format() for d in disks), return_exceptions=True)


async def scrape(disks: list[RemoteDisk]) -> list:
    """What a /metrics scrape does: every disk's info, all at once (``Store.disk_infos``)."""
    return await asyncio.gather(*(d.info() for d in disks))


async def test_a_probe_round_is_one_call_per_peer_and_a_scrape_right_after_shares_it(peer: Peer) -> None:
    disks = remote_disks(peer)
    client = disks[0].client
    formats = await probe_round(disks)
    assert formats == [f'{{"disk": {i}}}'.encode() for i in range(1, DISKS + 1)]
    assert client.health.calls == 1
    assert peer.served == Counter({"disk/status": 1})

    infos = await scrape(disks)  # within STATUS_TTL of the probe: its answer serves
    assert [i.online for i in infos] == [True] * DISKS
    assert all(i.total > 0 and i.endpoint == d.endpoint for i, d in zip(infos, disks))
    assert client.health.calls == 1
    assert peer.served == Counter({"disk/status": 1})


async def test_every_round_after_the_ttl_asks_again_and_sees_a_disk_that_went_offline(
        peer: Peer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remotedisk, "STATUS_TTL", 0.0)  # every round is past the TTL
    disks = remote_disks(peer)
    client = disks[0].client
    await scrape(disks)
    await probe_round(disks)
    assert client.health.calls == 2 and peer.served == Counter({"disk/status": 2})

    # Disk 2's root stops being a directory on the peer: the next round says so.
    root = peer.paths[1]
    os.rename(root, root + ".away")
    with open(root, "wb") as fh:
        fh.write(b"not a directory")
    results = await probe_round(disks)
    assert isinstance(results[1], DiskOffline) and not disks[1].online
    assert [r for i, r in enumerate(results) if i != 1] == [f'{{"disk": {i}}}'.encode() for i in (1, 3, 4)]
    assert all(d.online for i, d in enumerate(disks) if i != 1)
    assert peer.served == Counter({"disk/status": 3})

    # It comes back: the next probe round (what brings a disk back online) sees it.
    os.remove(root)
    os.rename(root + ".away", root)
    assert (await probe_round(disks))[1] == b'{"disk": 2}'
    assert peer.served == Counter({"disk/status": 4})
    # ... and the peer's own handle on it, which latched offline, reports it online again,
    # with its usage (a scrape showed it offline for good once)
    disks[1].mark_online()  # what the monitor does on that answer
    infos = await scrape(disks)
    assert infos[1].online and infos[1].total > 0 and not infos[1].error


async def test_a_disk_that_failed_after_the_answer_was_fetched_is_asked_afresh(peer: Peer) -> None:
    disks = remote_disks(peer)
    await probe_round(disks)
    disks[2].mark_offline("a read_range timed out")
    assert await disks[2].read_format() == b'{"disk": 3}'
    assert peer.served == Counter({"disk/status": 2})
    await probe_round(disks)  # the fresh answer serves the others too
    assert peer.served == Counter({"disk/status": 2})


async def test_a_peer_that_went_down_fails_every_disk_with_one_call(peer: Peer) -> None:
    disks = remote_disks(peer)
    client = disks[0].client
    await peer.node.stop()
    results = await probe_round(disks)
    assert all(isinstance(r, DiskOffline) for r in results)
    assert not any(d.online for d in disks)
    assert client.health.calls == 1
    infos = await scrape(disks)  # offline disks are reported without asking
    assert [i.online for i in infos] == [False] * DISKS and client.health.calls == 1


async def test_calls_that_time_out_while_the_peer_answers_others_leave_its_disks_online(
        peer: Peer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A saturated link: the deletes a write sends to clean up after a cut stream (one per disk
    of the peer) wait behind megabytes queued ahead of them and time out together, while the
    peer still answers other calls. The disks and the peer are slow, not gone: no disk is
    marked offline (each delete fails with ``DiskSlow``) and the peer stays online. Without
    the rule, those four timeouts took every disk of a live node offline (seen in
    ``tests/cluster/test_cluster_slow_link.py``)."""
    async def stalls(path: str, **_) -> None:
        await asyncio.sleep(60)

    for disk in peer.local.values():
        monkeypatch.setattr(disk, "delete", stalls)
    client = peer.node.client(timeouts=PeerTimeouts(connect=5.0, call=1.0, idle=1.0, probe=5.0))
    disks = remote_disks(peer, client)

    async def answered_meanwhile() -> None:
        for _ in range(8):
            await asyncio.sleep(0.25)
            assert await disks[0].exists("nothing-here") is False

    results = await asyncio.gather(*(d.delete("stage/cut/part.1") for d in disks), answered_meanwhile(),
                                   return_exceptions=True)
    assert all(isinstance(r, DiskSlow) for r in results[:DISKS]), results
    assert results[DISKS] is None, results
    assert all(d.online for d in disks) and client.state is PeerState.ONLINE
    assert client.status()["slow_timeouts"] == DISKS


async def test_a_disk_the_peer_does_not_serve(peer: Peer) -> None:
    disks = remote_disks(peer)
    stranger = RemoteDisk(disks[0].client, "/no/such/disk", f"{peer.node.endpoint}/no/such/disk", "x")
    with pytest.raises(DiskError, match="serves no disk"):
        await stranger.read_format()
    info = await stranger.info()
    assert not info.online and "serves no disk" in info.error
    assert [await d.read_format() for d in disks] == [f'{{"disk": {i}}}'.encode() for i in range(1, DISKS + 1)]
    assert peer.served == Counter({"disk/status": 1})  # the stranger's answer served everyone


async def test_a_peer_without_disk_status_is_asked_disk_by_disk(tmp_path) -> None:
    old = Peer(str(tmp_path), with_status=False)
    await old.start()
    try:
        disks = remote_disks(old)
        assert await probe_round(disks) == [f'{{"disk": {i}}}'.encode() for i in range(1, DISKS + 1)]
        assert [i.online for i in await scrape(disks)] == [True] * DISKS
        assert old.served == Counter({"disk/status": 1, "disk/read_format": DISKS, "disk/info": DISKS})
    finally:
        await old.stop()


async def test_disk_status_refuses_a_malformed_list(peer: Peer) -> None:
    client = peer.node.client()
    for bad in ("/a/disk", [1, 2], None, ["/d"] * 2000):
        with pytest.raises(BadPeerRequest):
            await client.call("disk", "status", {"disks": bad})


# -- small PUTs' records: one disk/append_batch call per peer, whatever the number of its disks --


async def test_concurrent_appends_to_all_of_a_peers_disks_share_one_call(peer) -> None:
    disks = remote_disks(peer)
    group = remotedisk.peer_disks(disks[0].client)
    writes = [(d, [f"put {n} on {d.path}".encode()]) for n in range(8) for d in disks]  # 8 PUTs x 4 disks
    locs = await asyncio.gather(*(d.append_records(recs, sync=True) for d, recs in writes))
    # the first call went alone; everything that queued meanwhile went in the next one
    assert group.append_calls <= 3 and peer.served["disk/append_batch"] == group.append_calls
    assert peer.served["disk/append_records"] == 0
    for (d, recs), got in zip(writes, locs):
        assert len(got) == 1
        assert await peer.local[d.path].read_record(got[0]) == recs[0]  # on that disk, at that place


async def test_one_disk_failing_in_a_batch_fails_only_its_appends(peer) -> None:
    disks = remote_disks(peer)
    await peer.local[peer.paths[1]].close()  # the peer's second disk is gone
    results = await asyncio.gather(*(d.append_records([b"record"], sync=False) for d in disks),
                                   return_exceptions=True)
    assert isinstance(results[1], DiskError)
    for i in (0, 2, 3):
        assert not isinstance(results[i], BaseException), results[i]
        assert await peer.local[peer.paths[i]].read_record(results[i][0]) == b"record"


async def test_a_full_disk_refuses_new_data_but_takes_a_deletion_sharing_its_call(peer, monkeypatch) -> None:
    """A peer's disk at its free-space reserve: a small PUT's record is refused (``DiskFull``)
    while a delete marker's, in the same disk/append_batch call, goes in."""
    from buckets.errors import DiskFull
    from buckets.storage import local

    disk = remote_disks(peer)[0]
    group = remotedisk.peer_disks(disk.client)
    monkeypatch.setattr(local, "disk_reserve", 100.0)  # the whole disk is reserve: no data goes in
    calls = group.append_calls
    results = await asyncio.gather(disk.append_records([b"new object"], sync=True, data=True),
                                   disk.append_records([b"delete marker"], sync=True),
                                   disk.append_records([b"another object"], sync=True, data=True),
                                   return_exceptions=True)
    assert isinstance(results[0], DiskFull) and isinstance(results[2], DiskFull), results
    assert "kept for deletions" in str(results[0])
    assert await peer.local[peer.paths[0]].read_record(results[1][0]) == b"delete marker"
    assert group.append_calls - calls <= 2  # batched as before
    assert disk.online  # full is not failing
    with pytest.raises(DiskFull, match="kept for deletions"):  # an inline object's metadata file too
        await disk.write_file("meta/new", b"new object", sync=True, new_data=True)
    await disk.write_file("meta/settings", b"a bucket's settings", sync=True)  # what is not new data goes in
    assert await disk.read_file("meta/settings") == b"a bucket's settings"
    monkeypatch.setattr(local, "disk_reserve", 0.0)
    got = await disk.append_records([b"new object"], sync=True, data=True)  # room again: in at once
    assert await peer.local[peer.paths[0]].read_record(got[0]) == b"new object"
    await disk.write_file("meta/new", b"new object", sync=True, new_data=True)
    assert await disk.read_file("meta/new") == b"new object"


async def test_a_peer_without_append_batch_gets_one_call_per_disk(tmp_path) -> None:
    old = Peer(str(tmp_path))  # a peer of the version before disk/append_batch
    del old.rpc._handlers[("disk", "append_batch")]
    await old.start()
    try:
        disks = remote_disks(old)
        locs = await asyncio.gather(*(d.append_records([d.path.encode()], sync=False) for d in disks))
        for d, got in zip(disks, locs):
            assert await old.local[d.path].read_record(got[0]) == d.path.encode()
        assert old.served["disk/append_records"] >= 4
        assert not remotedisk.peer_disks(disks[0].client).has_append_batch
    finally:
        await old.stop()


async def test_append_batch_refuses_malformed_arguments(peer) -> None:
    client = peer.node.client()
    for args in ({"disks": [1, 2]}, {"disks": {peer.paths[0]: {"records": ["text"]}}},
                 {"disks": {peer.paths[0]: {"records": b"x"}}},
                 {"disks": {peer.paths[0]: {"records": [b"x"], "data": [1]}}},
                 {"disks": {peer.paths[0]: {"records": [b"x"], "data": [False]}}},  # a bool is not an index
                 {"disks": {peer.paths[0]: {"records": [b"x"], "data": "all"}}}):
        with pytest.raises(BadPeerRequest):
            await client.call("disk", "append_batch", args)
    assert await peer.local[peer.paths[0]].list_segments() == []  # nothing appended


async def test_record_reads_asked_together_share_one_call_per_peer(peer) -> None:
    """A small GET asks its k slots at once: the reads of one peer's disks go in one call."""
    locals_ = list(peer.local.values())
    for d in locals_:
        await d.write_format(b"{}", create_root=True, sync=False)
    placed = [(path, (await peer.local[path].append_records([f"shard on {path}".encode()], sync=False))[0])
              for path in peer.paths]
    disks = {d.path: d for d in remote_disks(peer)}
    group = remotedisk.peer_disks(next(iter(disks.values())).client)
    bad = [placed[0][1][0] + 999, 0, placed[0][1][2]]  # a segment that does not exist
    got = await asyncio.gather(*(disks[path].read_record(loc) for path, loc in placed),
                               disks[peer.paths[0]].read_record(bad), return_exceptions=True)
    assert got[:4] == [f"shard on {path}".encode() for path in peer.paths]
    assert isinstance(got[4], DiskError)  # that read's own error, the others unharmed
    assert group.read_calls == 1 and peer.served["disk/read_records"] == 1
    assert peer.served["disk/read_record"] == 0


async def test_read_records_refuses_malformed_arguments(peer) -> None:
    client = peer.node.client()
    for args in ({"disks": "x"}, {"disks": {peer.paths[0]: "not a list"}},
                 {"disks": {peer.paths[0]: [[0, 0, 20]] * 300}}):
        with pytest.raises(BadPeerRequest):
            await client.call("disk", "read_records", args)
    answer = await client.call("disk", "read_records", {"disks": {peer.paths[0]: [["x"], [0, 0, 20]]}})
    assert [sorted(item) for item in answer["disks"][peer.paths[0]]] == [["error"], ["error"]]
