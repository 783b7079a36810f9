"""Shard files written with O_DIRECT (``storage/local.py``): whatever the sizes of the writes,
the file holds exactly the bytes written, its tail (less than a block) included; the buffers
go back to the free list on close and on abort; a file system that refuses O_DIRECT
writes gets buffered ones; and the switch turns it off."""

from __future__ import annotations

import fcntl
import os
import random

import pytest

from buckets.storage import local

KiB, MiB = 1024, 1024 * 1024


def _body(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def disk(local_disk):
    return local_disk


def _o_direct(writer) -> bool:
    return bool(fcntl.fcntl(writer._fh.fileno(), fcntl.F_GETFL) & os.O_DIRECT)


@pytest.mark.parametrize("sizes", [
    [], [1], [4095], [4096], [4097], [MiB - 1], [MiB], [MiB + 1],
    [512 * KiB + 37] * 7,  # a 2+2 shard's framed pieces
    [87 * KiB + 5] * 13,  # a 12+4 one's
    [1, 2, 4093, 8192, 3 * MiB + 11, 100, 4096, 17],
])
async def test_a_file_holds_exactly_what_was_written(disk, sizes) -> None:
    writer = await disk.create_file("d/f")
    chunks = [_body(n, i) for i, n in enumerate(sizes)]
    for c in chunks:
        await writer.write(c)
        if c:
            assert _o_direct(writer)  # on ext4: the data goes straight to the device
    await writer.close(sync=True)
    with open(os.path.join(disk.root, "d/f"), "rb") as f:
        assert f.read() == b"".join(chunks)


async def test_buffers_are_reused_and_given_back_on_abort(disk) -> None:
    local._direct_free.clear()  # size -> buffers
    first = await disk.create_file("d/a")
    await first.write(_body(MiB + 5, 1))
    await first.close(sync=False)
    kept = [buf for bufs in local._direct_free.values() for buf in bufs]
    assert [len(b) for b in kept] == [local.DIRECT_BUFFER]  # a chunk of a stream, not a frame: the least buffer
    second = await disk.create_file("d/b")
    await second.write(_body(10, 2))
    assert second._direct._buf is kept[0]  # the same buffer again (any free one large enough)
    assert not any(local._direct_free.values())
    await second.abort()
    assert [buf for bufs in local._direct_free.values() for buf in bufs] == kept
    assert not os.path.exists(os.path.join(disk.root, "d/b"))


@pytest.mark.parametrize("piece", [512 * KiB, 256 * KiB, 87 * KiB + 5, MiB])
async def test_each_framed_piece_leaves_in_one_direct_write(disk, monkeypatch, piece) -> None:
    """A frame (checksum, piece) is copied into a buffer sized by the first one and written
    in one call of whole blocks; the part block left over waits for the next frame."""
    calls: list[int] = []
    real = local._write_all

    def counted(fh, data) -> None:
        calls.append(len(data))
        real(fh, data)

    monkeypatch.setattr(local, "_write_all", counted)
    writer = await disk.create_file("d/f")
    frames = [(_body(8, i), _body(piece, 100 + i)) for i in range(6)]
    for frame in frames:
        await writer.write(frame)
    assert len(calls) == len(frames) and all(n % local.DIRECT_ALIGN == 0 for n in calls)
    await writer.close(sync=True)
    assert len(calls) == len(frames) + 1  # the tail, less than a block, at the close
    with open(os.path.join(disk.root, "d/f"), "rb") as f:
        assert f.read() == b"".join(a + b for a, b in frames)


@pytest.mark.parametrize("sizes", [[2 * MiB + 3], [100, 5000, MiB]])
async def test_a_file_system_refusing_direct_writes_gets_buffered_ones(disk, monkeypatch, sizes) -> None:
    """Some file systems take the O_DIRECT flag and then refuse the writes with EINVAL."""
    real = local._write_all

    def picky(fh, data) -> None:
        if fcntl.fcntl(fh.fileno(), fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        real(fh, data)

    monkeypatch.setattr(local, "_write_all", picky)
    writer = await disk.create_file("d/f")
    chunks = [_body(n, i) for i, n in enumerate(sizes)]
    for c in chunks:
        await writer.write(c)
    assert writer._direct._refused and not _o_direct(writer)
    await writer.close(sync=True)
    with open(os.path.join(disk.root, "d/f"), "rb") as f:
        assert f.read() == b"".join(chunks)


async def test_the_switch_turns_it_off(disk, monkeypatch) -> None:
    monkeypatch.setattr(local, "direct_writes", False)
    writer = await disk.create_file("d/f")
    await writer.write(_body(MiB, 4))
    assert writer._direct is None and not _o_direct(writer)
    await writer.close(sync=True)
