"""``ErasureWriter``'s pipeline: blocks go through the digest chains and the encode-then-write
chain side by side (engine/writer.py). What must hold whatever the interleaving: the digests
are of the body in order, each shard file holds its frames in block order, a failure stops
every chain (nothing left running behind the caller's abort), and the stream is never read
more than the pipeline's depth ahead of the disks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

import blake3
import pytest

from buckets.checksums import new_checksum
from buckets.engine import writer as writer_mod
from buckets.engine.writer import ErasureWriter
from buckets.erasure import ErasureCodec
from buckets.errors import DiskFaulty, WriteQuorumLost
from buckets.runtime import Workers
from buckets.storage import TMP_DIR, LocalDisk
from buckets.storage.faulty import FaultyDisk

K, M = 2, 2


@pytest.fixture
async def disks(tmp_path):
    out = []
    for i in range(K + M):
        root = tmp_path / f"d{i}"
        root.mkdir()
        out.append(FaultyDisk(LocalDisk(str(root), f"disk-{i}")))
    yield out
    for d in out:
        await d.close()


@pytest.fixture
def cpu():
    pool = Workers(max_workers=4, thread_name_prefix="test-cpu")
    yield pool
    pool.shutdown()


def _paths() -> list[str]:
    return [f"{TMP_DIR}/w/part.{i}" for i in range(K + M)]


async def _chunks(body: bytes, size: int, seen: list[int] | None = None):
    for at in range(0, len(body), size):
        if seen is not None:
            seen.append(at + min(size, len(body) - at))
        yield body[at:at + size]
        await asyncio.sleep(0)


def _expected_shards(codec: ErasureCodec, body: bytes) -> list[bytes]:
    shards = [bytearray() for _ in range(codec.n)]
    for at in range(0, len(body), codec.block_size):
        for i, frame in enumerate(codec.encode_block(body[at:at + codec.block_size])):
            shards[i] += frame
    return [bytes(s) for s in shards]


def _leftover_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


# 64 KiB blocks are hashed in the CPU pool (POOL_MIN) and encoded there too unless the codec
# encodes them quickly (ISA-L: then on the loop); 4 KiB blocks are hashed and encoded on the
# loop. Chunk sizes that straddle block edges, and a tail block.
@pytest.mark.parametrize("quick", [True, False], ids=["encoded-on-loop", "encoded-in-pool"])
@pytest.mark.parametrize("block_size,chunk", [(64 << 10, 50_000), (64 << 10, 200_000), (4096, 3000)])
async def test_many_blocks_are_hashed_in_order_and_written_in_order(disks, cpu, monkeypatch, block_size, chunk,
                                                                     quick):
    codec = ErasureCodec(K, M, block_size)
    monkeypatch.setattr(codec, "encodes_quickly", lambda n: quick)
    handed: list[str] = []
    real_run_in = writer_mod.run_in

    def counted(pool, fn, *args):
        handed.append(getattr(fn, "__name__", ""))
        return real_run_in(pool, fn, *args)

    monkeypatch.setattr(writer_mod, "run_in", counted)
    body = random.Random(block_size + chunk).randbytes(block_size * 9 + block_size // 2 + 7)
    w = ErasureWriter(codec, disks, _paths(), cpu, algorithms=("crc32c",), inline_limit=-1)
    result = await w.run(_chunks(body, chunk), len(body))
    assert await w.finish(sync=True) == [0, 1, 2, 3]
    pooled = block_size >= writer_mod.POOL_MIN
    assert handed.count("update_digests") == (9 if pooled else 0)
    assert handed.count("encode_block_parts") == (9 if pooled and not quick else 0)
    assert handed.count("update_content") == (9 if pooled and not quick else 0)  # BLAKE3 goes with the encoding
    assert handed.count("encode_block") == 0  # the tail block: below POOL_MIN

    assert result.size == len(body)
    assert result.md5 == hashlib.md5(body).digest()
    assert result.content_hash == blake3.blake3(body).hexdigest()
    crc = new_checksum("crc32c")
    crc.update(body)
    assert result.checksum_raw["CRC32C"] == crc.digest()
    expected = _expected_shards(codec, body)
    for i, d in enumerate(disks):
        with open(d.local_path(_paths()[i]), "rb") as fh:
            assert fh.read() == expected[i], f"shard {i}"
    assert not _leftover_tasks()


async def test_a_quorum_lost_midway_stops_every_chain(disks, cpu):
    codec = ErasureCodec(K, M, 64 << 10)
    body = os.urandom((64 << 10) * 12)
    # Two of four disks fail their 4th write: 2 left, write quorum is 3.
    disks[0].fail("shard.write", error=DiskFaulty, after=3)
    disks[3].fail("shard.write", error=DiskFaulty, after=3)
    w = ErasureWriter(codec, disks, _paths(), cpu, inline_limit=-1)
    seen: list[int] = []
    with pytest.raises(WriteQuorumLost):
        await w.run(_chunks(body, 64 << 10, seen), len(body))
    # It stopped reading the body within the pipeline's depth of the failed block.
    assert len(seen) <= 4 + writer_mod.PIPELINE + 1
    assert not _leftover_tasks()
    await w.abort()
    for i, d in enumerate(disks):
        assert not os.path.exists(d.local_path(_paths()[i]))


async def test_a_body_that_breaks_off_leaves_nothing_running(disks, cpu):
    codec = ErasureCodec(K, M, 64 << 10)

    class Gone(Exception):
        pass

    async def stream():
        for _ in range(5):
            yield os.urandom(64 << 10)
        raise Gone("the client went away")

    for d in disks:  # slow disks: writes are still queued when the body breaks off
        d.delay("shard.write", seconds=0.01)
    w = ErasureWriter(codec, disks, _paths(), cpu, inline_limit=-1)
    with pytest.raises(Gone):
        await w.run(stream(), None)
    assert not _leftover_tasks()
    await w.abort()


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_the_body_is_never_read_more_than_the_pipeline_ahead_of_the_disks(disks, cpu, monkeypatch, depth):
    """Memory: with slow disks, the stream waits; it does not pile blocks up."""
    monkeypatch.setattr(writer_mod, "PIPELINE", depth)
    bs = 64 << 10
    codec = ErasureCodec(K, M, bs)
    ahead: list[int] = []
    for d in disks:
        d.delay("shard.write", seconds=0.005)

    async def stream():
        for b in range(20):
            # blocks handed over minus blocks whose write on disk 0 has started
            ahead.append(b - disks[0].calls["shard.write"])
            yield os.urandom(bs)

    w = ErasureWriter(codec, disks, _paths(), cpu, inline_limit=-1)
    result = await w.run(stream(), 20 * bs)
    await w.finish(sync=False)
    assert result.size == 20 * bs
    # At most ``depth`` blocks wait for a write to start (the chains hold them); the disks
    # being slow, the stream did get that far ahead, and waited there.
    assert max(ahead) == depth, ahead


async def test_a_slow_disk_does_not_hold_the_others_back_between_blocks(disks, cpu):
    """Each shard file is appended in order, but there is no barrier across the disks between
    blocks: a disk done with block b starts block b+1 while a slower one still writes b (at
    most the pipeline's blocks apart). The files still hold their frames in block order."""
    bs = 64 << 10
    codec = ErasureCodec(K, M, bs)
    disks[0].delay("shard.write", seconds=0.02)
    lead: list[int] = []  # at each write disk 1 starts: its writes started minus disk 0's
    before = disks[1]._before

    async def watched(name: str) -> None:
        if name == "shard.write":
            lead.append(disks[1].calls[name] + 1 - disks[0].calls[name])
        await before(name)

    disks[1]._before = watched

    async def stream():
        for _ in range(12):
            yield body_blocks.pop(0)

    body = os.urandom(bs * 12)
    body_blocks = [body[at:at + bs] for at in range(0, len(body), bs)]
    w = ErasureWriter(codec, disks, _paths(), cpu, inline_limit=-1)
    result = await w.run(stream(), len(body))
    assert await w.finish(sync=False) == [0, 1, 2, 3]
    assert result.md5 == hashlib.md5(body).digest()
    # Disk 1 started a block's write before the slow disk 0 had started that block's: with
    # a barrier between blocks it never could (disk 0's piece is always queued first).
    assert max(lead) >= 1, lead
    assert max(lead) <= writer_mod.PIPELINE + 1, lead
    expected = _expected_shards(codec, body)
    for i, d in enumerate(disks):
        with open(d.local_path(_paths()[i]), "rb") as fh:
            assert fh.read() == expected[i], f"shard {i}"
    assert not _leftover_tasks()
