"""A GET's reads of one remote shard go over one streamed call (``RemoteDisk.open_range`` and
``disk/read_stream``) instead of one ``read_range`` call per span; the shards of one GET on one
peer go over one call together (``RemoteDisk.open_ranges`` and ``disk/read_streams``).

A real peer (``PeerRpcServer`` + ``DiskService`` over a ``LocalDisk`` on a loopback port) and
a ``RemoteDisk`` to it; calls are counted where they are served.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
from aiohttp import web
from rpc_testkit import RpcNode, closed_peer_session, make_rpc  # noqa: F401 - autouse fixture

from buckets.cluster import remotedisk
from buckets.cluster import rpcframe as wire
from buckets.cluster.diskservice import DiskService
from buckets.cluster.remotedisk import RemoteDisk
from buckets.cluster.rpcclient import PeerTimeouts
from buckets.cluster.rpcerrors import BadPeerRequest
from buckets.errors import DiskError, DiskOffline, FileNotFound
from buckets.storage import LocalDisk

KiB, MiB = 1 << 10, 1 << 20
FILE = "shards/part.1"
SPAN = 100 * KiB


class Peer:
    def __init__(self, root: str, *, with_stream: bool = True, more: tuple[str, ...] = (),
                 with_streams: bool = True) -> None:
        self.root = root
        self.local = LocalDisk(root, "disk-1")
        self.locals = [self.local] + [LocalDisk(r, f"disk-{i}") for i, r in enumerate(more, 2)]
        self.rpc = make_rpc()
        DiskService({d.root: d for d in self.locals}).register(self.rpc)
        if not with_stream:  # a peer of the version before disk/read_stream
            del self.rpc._handlers[("disk", "read_stream")]
        if not with_streams:  # a peer of the version before disk/read_streams
            del self.rpc._handlers[("disk", "read_streams")]
        self.node = RpcNode(self.rpc)
        self.served: Counter = Counter()

    async def start(self) -> None:
        @web.middleware
        async def count(request: web.Request, handler):
            self.served["/".join(request.path.rsplit("/", 2)[-2:])] += 1
            return await handler(request)

        app = web.Application(middlewares=[count])
        app.router.add_routes(self.rpc.routes())
        self.node.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self.node.runner.setup()
        await web.TCPSite(self.node.runner, "127.0.0.1", self.node.port, reuse_address=True).start()

    def disk(self, **timeouts: float) -> RemoteDisk:
        options = {"timeouts": PeerTimeouts(**timeouts)} if timeouts else {}
        client = self.node.client(**options)
        return RemoteDisk(client, self.root, f"{self.node.endpoint}{self.root}", "disk-1")

    def all_disks(self, **timeouts: float) -> list[RemoteDisk]:
        """A RemoteDisk for each of the peer's disks, through one client (as a node has)."""
        options = {"timeouts": PeerTimeouts(**timeouts)} if timeouts else {}
        client = self.node.client(**options)
        return [RemoteDisk(client, d.root, f"{self.node.endpoint}{d.root}", d.disk_id if hasattr(d, "disk_id")
                           else f"disk-{i}") for i, d in enumerate(self.locals, 1)]


@pytest.fixture
def content(tmp_path) -> bytes:
    data = os.urandom(4 * MiB + 12345)
    os.makedirs(tmp_path / "d1" / "shards")
    (tmp_path / "d1" / FILE).write_bytes(data)
    return data


@pytest.fixture
async def peer(tmp_path, content):
    p = Peer(str(tmp_path / "d1"))
    await p.start()
    yield p
    await p.node.stop()
    await p.local.close()


async def read_spans(reader, start: int, end: int, span: int = SPAN) -> bytes:
    out = bytearray()
    for offset in range(start, end, span):
        data = await reader.read(offset, min(span, end - offset))
        assert data is not None
        out += data
    return bytes(out)


async def test_a_range_read_span_by_span_is_one_call(peer: Peer, content: bytes) -> None:
    disk = peer.disk()
    start, end = 3 * SPAN, len(content)
    reader = disk.open_range(FILE, start, end - start, chunk=SPAN)
    assert await read_spans(reader, start, end) == content[start:end]
    assert peer.served == Counter({"disk/read_stream": 1})
    assert disk._peer_disks.read_streams == 0  # read to its end: released
    assert await disk.read_range(FILE, 0, 10) == content[:10]  # the connection went back to the pool


async def test_chunks_that_do_not_match_the_reads(peer: Peer, content: bytes) -> None:
    disk = peer.disk()
    reader = disk.open_range(FILE, 0, MiB, chunk=7 * KiB + 3)
    assert await read_spans(reader, 0, MiB, span=64 * KiB + 1) == content[:MiB]


async def test_a_range_past_the_end_of_the_file_reads_short_like_read_range(peer: Peer, content: bytes) -> None:
    disk = peer.disk()
    start = len(content) - SPAN - 10
    reader = disk.open_range(FILE, start, 3 * SPAN, chunk=SPAN)
    assert await reader.read(start, SPAN) == content[start:start + SPAN]
    assert await reader.read(start + SPAN, SPAN) == content[start + SPAN:]
    assert await reader.read(start + 2 * SPAN, SPAN) is None  # nothing left to stream: the caller asks directly
    assert await disk.read_range(FILE, start + 2 * SPAN, SPAN) == b""
    assert disk._peer_disks.read_streams == 0


async def test_a_read_out_of_order_is_left_to_the_caller(peer: Peer, content: bytes) -> None:
    disk = peer.disk()
    reader = disk.open_range(FILE, 0, 4 * SPAN, chunk=SPAN)
    assert await reader.read(SPAN, SPAN) is None  # not where the stream is
    assert await reader.read(0, SPAN) == content[:SPAN]
    assert await reader.read(0, SPAN) is None  # behind it
    assert await reader.read(SPAN, 4 * SPAN) is None  # past the range's end
    reader.close()
    assert disk._peer_disks.read_streams == 0


async def test_reads_asked_for_at_once_are_served_in_turn(peer: Peer, content: bytes) -> None:
    disk = peer.disk()
    reader = disk.open_range(FILE, 0, 8 * SPAN, chunk=SPAN)
    got = await asyncio.gather(*(reader.read(i * SPAN, SPAN) for i in range(8)))
    assert b"".join(got) == content[:8 * SPAN]
    assert peer.served == Counter({"disk/read_stream": 1})


async def test_a_missing_file_is_the_same_typed_error_on_every_read(peer: Peer) -> None:
    disk = peer.disk()
    reader = disk.open_range("shards/nope", 0, 4 * SPAN, chunk=SPAN)
    with pytest.raises(FileNotFound):
        await reader.read(0, SPAN)
    with pytest.raises(DiskError):
        await reader.read(SPAN, SPAN)
    assert disk.online  # the peer answered: a missing file is not a disk failure
    assert disk._peer_disks.read_streams == 0


async def test_a_peer_that_goes_away_midway_is_disk_offline(peer: Peer) -> None:
    # Far more than the socket buffers and the stream's read buffer hold between them, so
    # the peer is still sending when it goes.
    size = 64 * MiB
    with open(os.path.join(peer.root, "shards/big"), "wb") as fh:
        fh.write(os.urandom(MiB) * 64)
    disk = peer.disk()
    reader = disk.open_range("shards/big", 0, size, chunk=SPAN)
    assert len(await reader.read(0, SPAN)) == SPAN
    await peer.node.stop()
    with pytest.raises(DiskOffline):
        await read_spans(reader, SPAN, size)
    assert not disk.online
    with pytest.raises(DiskError):
        await reader.read(size - 1, 1)
    assert disk._peer_disks.read_streams == 0


async def test_a_consumer_slower_than_the_idle_timeout_is_not_the_peers_fault(peer: Peer, content: bytes) -> None:
    """A GET's client may take its time between spans: the stream pauses (its buffer full)
    and the idle timeout only counts while bytes are expected."""
    disk = peer.disk(connect=5.0, call=30.0, idle=0.5, probe=5.0)
    reader = disk.open_range(FILE, 0, len(content), chunk=SPAN)
    assert await reader.read(0, SPAN) == content[:SPAN]
    await asyncio.sleep(1.5)  # three idle timeouts
    assert await read_spans(reader, SPAN, len(content)) == content[SPAN:]
    assert disk.online


async def test_closing_midway_frees_the_stream(peer: Peer, content: bytes) -> None:
    disk = peer.disk()
    reader = disk.open_range(FILE, 0, len(content), chunk=SPAN)
    assert await reader.read(0, SPAN) == content[:SPAN]
    assert disk._peer_disks.read_streams == 1
    reader.close()
    assert disk._peer_disks.read_streams == 0
    assert await reader.read(SPAN, SPAN) is None


async def test_at_most_so_many_streams_per_peer_then_span_by_span(peer: Peer, monkeypatch) -> None:
    monkeypatch.setattr(remotedisk, "READ_STREAMS_PER_PEER", 2)
    disk = peer.disk()
    first = disk.open_range(FILE, 0, 4 * SPAN, chunk=SPAN)
    second = disk.open_range(FILE, 0, 4 * SPAN, chunk=SPAN)
    assert first is not None and second is not None
    assert disk.open_range(FILE, 0, 4 * SPAN, chunk=SPAN) is None
    first.close()
    assert disk.open_range(FILE, 0, 4 * SPAN, chunk=SPAN) is not None


async def test_a_peer_without_read_stream_is_read_span_by_span(tmp_path, content: bytes) -> None:
    old = Peer(str(tmp_path / "d1"), with_stream=False)
    await old.start()
    try:
        disk = old.disk()
        reader = disk.open_range(FILE, 0, 4 * SPAN, chunk=SPAN)
        assert await reader.read(0, SPAN) is None
        assert disk.open_range(FILE, 0, 4 * SPAN, chunk=SPAN) is None  # not asked again
        assert disk._peer_disks.read_streams == 0
    finally:
        await old.node.stop()
        await old.local.close()


async def test_read_stream_refuses_bad_arguments(peer: Peer) -> None:
    client = peer.node.client()
    base = {"disk": peer.root, "path": FILE, "offset": 0, "length": 10, "chunk": SPAN}
    for bad in ({"offset": -1}, {"length": "10"}, {"chunk": 10}, {"chunk": 2 * MiB}, {"offset": True}):
        with pytest.raises(BadPeerRequest):
            await client.call_stream_out("disk", "read_stream", dict(base, **bad))


# -- several shards of one peer in one call (open_ranges, disk/read_streams) -------------------

THREE = 3


def three_files(tmp_path, sizes=(4 * MiB + 12345,) * THREE) -> tuple[list[str], list[bytes]]:
    roots, contents = [], []
    for i, size in enumerate(sizes, 1):
        root = tmp_path / f"g{i}"
        os.makedirs(root / "shards")
        data = os.urandom(size) if size else b""
        if size is not None:
            (root / FILE).write_bytes(data)
        roots.append(str(root))
        contents.append(data)
    return roots, contents


@pytest.fixture
async def group_peer(tmp_path):
    roots, contents = three_files(tmp_path)
    p = Peer(roots[0], more=tuple(roots[1:]))
    await p.start()
    yield p, contents
    await p.node.stop()
    for d in p.locals:
        await d.close()


async def read_all_spans(readers, start: int, end: int, span: int = SPAN) -> list[bytes]:
    """Span by span, every reader's span at once (as a GET reads its data shards)."""
    outs = [bytearray() for _ in readers]
    for offset in range(start, end, span):
        got = await asyncio.gather(*(r.read(offset, min(span, end - offset)) for r in readers))
        for out, data in zip(outs, got):
            assert data is not None
            out += data
    return [bytes(o) for o in outs]


async def test_the_shards_of_one_peer_are_read_in_one_call(group_peer) -> None:
    peer, contents = group_peer
    disks = peer.all_disks()
    start, end = 2 * SPAN, len(contents[0])
    readers = disks[0].open_ranges(disks, FILE, start, end - start, chunk=SPAN)
    assert readers is not None and len(readers) == THREE
    got = await read_all_spans(readers, start, end)
    assert got == [c[start:end] for c in contents]
    assert peer.served == Counter({"disk/read_streams": 1})
    assert disks[0]._peer_disks.read_streams == 0  # read to its end: released
    assert await disks[1].read_range(FILE, 0, 10) == contents[1][:10]


async def test_grouped_reads_keep_reading_files_removed_under_them(group_peer) -> None:
    """The peer reads each range through one descriptor from its first chunk on: an overwrite
    through another node removing the files meanwhile does not cut the GET (4 MiB per file,
    far more than the peer sends ahead of the reads)."""
    peer, contents = group_peer
    disks = peer.all_disks()
    end = len(contents[0])
    readers = disks[0].open_ranges(disks, FILE, 0, end, chunk=SPAN)
    first = await asyncio.gather(*(r.read(0, SPAN) for r in readers))
    for d in disks:
        await d.delete(FILE)
    rest = await read_all_spans(readers, SPAN, end)
    assert [a + b for a, b in zip(first, rest)] == contents


async def test_grouped_reads_that_do_not_match_the_chunks_or_each_other(group_peer) -> None:
    peer, contents = group_peer
    disks = peer.all_disks()
    readers = disks[0].open_ranges(disks, FILE, 0, MiB, chunk=7 * KiB + 3)
    # one reader far ahead of the others: the chunks for the others wait in their buffers
    assert await read_spans(readers[2], 0, MiB, span=64 * KiB + 1) == contents[2][:MiB]
    assert await read_spans(readers[0], 0, MiB, span=3 * KiB) == contents[0][:MiB]
    assert await read_spans(readers[1], 0, MiB, span=MiB) == contents[1][:MiB]
    assert disks[0]._peer_disks.read_streams == 0


async def test_a_grouped_read_asked_again_while_in_flight_waits_its_turn(group_peer) -> None:
    peer, contents = group_peer
    disks = peer.all_disks()
    readers = disks[0].open_ranges(disks, FILE, 0, 8 * SPAN, chunk=SPAN)
    got = await asyncio.gather(*(r.read(i * SPAN, SPAN) for i in range(8) for r in readers))
    for j in range(THREE):
        assert b"".join(got[i * THREE + j] for i in range(8)) == contents[j][:8 * SPAN]


async def test_a_short_or_missing_file_ends_its_range_and_the_others_go_on(tmp_path) -> None:
    roots, contents = three_files(tmp_path, sizes=(4 * MiB, SPAN + 100, None))
    peer = Peer(roots[0], more=tuple(roots[1:]))
    await peer.start()
    try:
        disks = peer.all_disks()
        readers = disks[0].open_ranges(disks, FILE, 0, 4 * SPAN, chunk=SPAN)
        first = await asyncio.gather(*(r.read(0, SPAN) for r in readers[:2]))
        assert first == [contents[0][:SPAN], contents[1][:SPAN]]
        with pytest.raises(FileNotFound):
            await readers[2].read(0, SPAN)
        assert await readers[1].read(SPAN, SPAN) == contents[1][SPAN:]  # short: the file ends
        assert await readers[1].read(SPAN + 100, SPAN) == b""  # past the end of the file: nothing
        assert await read_spans(readers[0], SPAN, 4 * SPAN) == contents[0][SPAN:4 * SPAN]
        with pytest.raises(DiskError):
            await readers[2].read(0, SPAN)  # the same error on every read
        assert all(d.online for d in disks)  # a missing file is not a disk failure
        for r in readers:
            r.close()
        assert disks[0]._peer_disks.read_streams == 0
    finally:
        await peer.node.stop()
        for d in peer.locals:
            await d.close()


async def test_a_peer_that_goes_away_midway_takes_every_grouped_range_offline(group_peer, tmp_path) -> None:
    peer, _ = group_peer
    for d in peer.locals:  # far more than the socket buffers hold, so the peer is still sending
        with open(os.path.join(d.root, "shards/big"), "wb") as fh:
            fh.write(os.urandom(MiB) * 32)
    disks = peer.all_disks()
    readers = disks[0].open_ranges(disks, "shards/big", 0, 32 * MiB, chunk=SPAN)
    assert [len(x) for x in await asyncio.gather(*(r.read(0, SPAN) for r in readers))] == [SPAN] * THREE
    await peer.node.stop()
    with pytest.raises(DiskOffline):
        await read_all_spans(readers, SPAN, 32 * MiB)
    assert not any(d.online for d in disks)
    for r in readers:
        with pytest.raises(DiskError):
            await r.read(r._pos, 1)
    assert disks[0]._peer_disks.read_streams == 0


async def test_closing_one_grouped_reader_leaves_the_others_and_closing_all_frees_the_stream(group_peer) -> None:
    peer, contents = group_peer
    disks = peer.all_disks()
    end = len(contents[0])
    readers = disks[0].open_ranges(disks, FILE, 0, end, chunk=SPAN)
    await read_all_spans(readers, 0, SPAN)
    readers[1].close()
    assert await readers[1].read(SPAN, SPAN) is None
    got = await read_all_spans([readers[0], readers[2]], SPAN, 3 * SPAN)
    assert got == [contents[0][SPAN:3 * SPAN], contents[2][SPAN:3 * SPAN]]
    assert disks[0]._peer_disks.read_streams == 1
    readers[0].close()
    readers[2].close()
    assert disks[0]._peer_disks.read_streams == 0
    assert await disks[0].read_range(FILE, 0, 10) == contents[0][:10]


async def test_a_peer_without_read_streams_is_read_one_shard_at_a_time(tmp_path) -> None:
    roots, contents = three_files(tmp_path)
    old = Peer(roots[0], more=tuple(roots[1:]), with_streams=False)
    await old.start()
    try:
        disks = old.all_disks()
        readers = disks[0].open_ranges(disks, FILE, 0, 4 * SPAN, chunk=SPAN)
        assert await readers[0].read(0, SPAN) is None  # the caller reads another way
        assert disks[0].open_ranges(disks, FILE, 0, 4 * SPAN, chunk=SPAN) is None  # not asked again
        assert disks[0]._peer_disks.read_streams == 0
        single = disks[1].open_range(FILE, 0, 4 * SPAN, chunk=SPAN)  # one stream per shard still works
        assert await read_spans(single, 0, 4 * SPAN) == contents[1][:4 * SPAN]
    finally:
        await old.node.stop()
        for d in old.locals:
            await d.close()


async def test_read_streams_refuses_bad_arguments(group_peer) -> None:
    peer, _ = group_peer
    client = peer.node.client()
    one = [peer.root, FILE, 0, 10]
    for bad in ({"reads": [], "chunk": SPAN}, {"reads": [one], "chunk": 10}, {"reads": [one], "chunk": 2 * MiB},
                {"reads": [[peer.root, FILE, -1, 10]], "chunk": SPAN}, {"reads": [[peer.root, FILE, 0]], "chunk": SPAN},
                {"reads": [[peer.root, FILE, True, 10]], "chunk": SPAN}, {"reads": one, "chunk": SPAN},
                {"reads": [one] * 257, "chunk": SPAN}):
        with pytest.raises(BadPeerRequest):
            await client.call_stream_out("disk", "read_streams", bad)
    with pytest.raises(DiskError):  # a disk the peer does not serve
        await client.call_stream_out("disk", "read_streams", {"reads": [["/nope", FILE, 0, 10]], "chunk": SPAN})


async def test_an_empty_range_opens_no_grouped_stream_and_the_peer_sends_it_nothing(group_peer) -> None:
    peer, contents = group_peer
    disks = peer.all_disks()
    assert disks[0].open_ranges(disks, FILE, 100, 0, chunk=SPAN) is None
    assert disks[0]._peer_disks.read_streams == 0
    # asked anyway, among others: no frame for it, the others as usual
    client = peer.node.client()
    stream = await client.call_stream_out("disk", "read_streams", {
        "reads": [[peer.root, FILE, 100, 0], [peer.root, FILE, 0, 10]], "chunk": SPAN})
    frames = [f async for f in stream]
    assert frames == [wire.range_tag(1, wire.RANGE_DATA, 10), contents[0][:10]]
