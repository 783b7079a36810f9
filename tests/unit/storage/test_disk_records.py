"""The record log of the Disk protocol (``append_records``, ``read_record``, ``walk_records``,
``list_segments``, ``delete_segment``), run against every implementation in
``disk_factories.DISK_FACTORIES`` (LocalDisk, FaultyDisk with no fault, RemoteDisk over a real
peer RPC server). The backing directory is touched only to tear a segment's tail, as a power
cut would."""

from __future__ import annotations

import asyncio
import os

import pytest

from buckets.errors import CorruptData, DiskError, DiskFaulty, FileNotFound
from buckets.storage import LocalDisk
from buckets.storage import records as rlog
from buckets.storage.faulty import FaultyDisk
from buckets.storage.format import LOG_DIR


def payload(i: int, size: int = 300) -> bytes:
    return (f"record {i} ".encode() * (size // 8 + 1))[:size]


async def test_append_then_read_each_record(disk) -> None:
    recs = [payload(i, 100 + i) for i in range(5)] + [b""]
    locs = await disk.append_records(recs, sync=True)
    assert len(locs) == len(recs)
    for loc, rec in zip(locs, recs):
        assert len(loc) == 3 and loc[2] == len(rec) + rlog.HEADER_SIZE
        assert await disk.read_record(loc) == rec
    # one segment, records back to back in order
    assert [loc[0] for loc in locs] == [locs[0][0]] * len(recs)
    assert [loc[1] for loc in locs] == sorted(loc[1] for loc in locs)
    for a, b in zip(locs, locs[1:]):
        assert a[1] + a[2] == b[1]
    assert await disk.append_records([], sync=True) == []


async def test_concurrent_appends_are_all_durable_and_distinct(disk) -> None:
    """Many callers at once (a burst of small PUTs): each gets its own locations, none overlap,
    every record reads back whole."""
    batches = [[payload(i * 10 + j, 64 + i) for j in range(i % 3 + 1)] for i in range(40)]
    results = await asyncio.gather(*(disk.append_records(b, sync=bool(i % 2)) for i, b in enumerate(batches)))
    spans = []
    for batch, locs in zip(batches, results):
        assert len(locs) == len(batch)
        for loc, rec in zip(locs, batch):
            assert await disk.read_record(loc) == rec
            spans.append((loc[0], loc[1], loc[1] + loc[2]))
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        assert a[0] != b[0] or a[2] <= b[1], f"records overlap: {a} {b}"


async def test_walk_and_list_segments(disk) -> None:
    assert [r async for r in disk.walk_records()] == []
    assert await disk.list_segments() == []
    locs = await disk.append_records([payload(i) for i in range(20)], sync=True)
    walked = [r async for r in disk.walk_records()]
    assert [loc for loc, _ in walked] == locs
    assert [p for _, p in walked] == [payload(i) for i in range(20)]
    segs = await disk.list_segments()
    assert segs == [[locs[0][0], locs[-1][1] + locs[-1][2]]]
    assert [r async for r in disk.walk_records(locs[0][0])] == walked
    assert [r async for r in disk.walk_records(locs[0][0] + 1)] == []


@pytest.mark.parametrize("bad", [[1, 0], [1, 0, 5], [-1, 0, 40], [1, -3, 40], ["1", 0, 40], None, [1, 0, 1 << 40]])
async def test_read_record_refuses_a_malformed_location(disk, bad) -> None:
    await disk.append_records([b"x"], sync=False)
    with pytest.raises(DiskError):
        await disk.read_record(bad)


async def test_read_record_of_a_missing_segment_or_a_wrong_offset(disk) -> None:
    locs = await disk.append_records([payload(1), payload(2)], sync=True)
    with pytest.raises(FileNotFound):
        await disk.read_record([locs[0][0] + 7, 0, locs[0][2]])
    with pytest.raises(CorruptData):  # not where a record starts
        await disk.read_record([locs[0][0], locs[0][1] + 3, locs[0][2]])
    with pytest.raises(CorruptData):  # wrong length
        await disk.read_record([locs[0][0], locs[0][1], locs[0][2] + 1])
    with pytest.raises(CorruptData):  # past the end
        await disk.read_record([locs[1][0], locs[1][1] + locs[1][2], 64])


async def test_a_torn_tail_is_ignored_and_a_damaged_record_skipped(open_disk, tmp_path) -> None:
    disk = await open_disk("torn")
    locs = await disk.append_records([payload(i, 500) for i in range(4)], sync=True)
    seg_file = tmp_path / "torn" / LOG_DIR / rlog.segment_name(locs[0][0])
    last = locs[-1]
    # a power cut in the middle of the last record: its bytes end early
    os.truncate(seg_file, last[1] + last[2] - 100)
    walked = [r async for r in disk.walk_records()]
    assert [loc for loc, _ in walked] == locs[:-1]
    with pytest.raises(CorruptData):
        await disk.read_record(last)
    # a record damaged in place (bit rot) fails its read, and a scan skips it to the next one
    with open(seg_file, "r+b") as f:
        f.seek(locs[1][1] + rlog.HEADER_SIZE + 10)
        f.write(b"\xff" * 20)
    assert [loc for loc, _ in [r async for r in disk.walk_records()]] == [locs[0], locs[2]]
    with pytest.raises(CorruptData):
        await disk.read_record(locs[1])
    assert await disk.read_record(locs[0]) == payload(0, 500)
    # its header too: the scan still finds the records after it
    with open(seg_file, "r+b") as f:
        f.seek(locs[1][1])
        f.write(b"\0" * rlog.HEADER_SIZE)
    assert [loc for loc, _ in [r async for r in disk.walk_records()]] == [locs[0], locs[2]]


async def test_released_records_give_their_blocks_back_and_nothing_else_changes(open_disk, tmp_path) -> None:
    """A removed write's records (``release_records``) read as zeros and give their whole blocks
    back at once; a partial block is freed once all of it is released; a record that is not the
    named write's, or a location that names no record, is left alone; scans skip the holes."""
    disk = await open_disk("r")
    wid_a, wid_b = "a" * 32, "b" * 32

    def rec(i: int) -> bytes:  # ~10 KB records, of write a (odd i) or b (even i), as an engine record names its wid
        return f"wid {wid_a if i % 2 else wid_b} record {i} ".encode() + bytes([i]) * 10_000

    locs = await disk.append_records([rec(i) for i in range(24)], sync=True)
    seg_file = tmp_path / "r" / LOG_DIR / rlog.segment_name(locs[0][0])
    before = os.stat(seg_file).st_blocks * 512
    odd = [locs[i] for i in range(24) if i % 2]
    freed = sum(await asyncio.gather(*(disk.release_records(wid_a, [loc]) for loc in odd)))  # one by one, at once
    after = os.stat(seg_file).st_blocks * 512
    if freed == 0 and isinstance(disk, LocalDisk) and after == before:
        pytest.skip("this file system does not punch holes")
    assert freed == before - after and freed >= 12 * 4096, (freed, before, after)  # a whole block of each at least
    assert os.stat(seg_file).st_size == locs[-1][1] + locs[-1][2]  # the file keeps its length
    for i, loc in enumerate(locs):
        if i % 2:
            with pytest.raises(CorruptData):
                await disk.read_record(loc)
        else:
            assert await disk.read_record(loc) == rec(i)
    assert [loc for loc, _ in [r async for r in disk.walk_records()]] == locs[0::2]
    # write a's name on write b's record: left alone; a location inside a record: no record there
    assert await disk.release_records(wid_a, [locs[0], [locs[2][0], locs[2][1] + 16, 1000]]) == 0
    assert await disk.read_record(locs[0]) == rec(0) and await disk.read_record(locs[2]) == rec(2)
    assert await disk.release_records(wid_a, odd) == 0  # released already
    # the rest: the blocks the two writes' records shared go too; what is left is the last
    # partial block (an append may write there) and the one it may share
    await disk.release_records(wid_b, locs[0::2])
    assert os.stat(seg_file).st_blocks * 512 <= 2 * 4096, os.stat(seg_file).st_blocks
    assert [r async for r in disk.walk_records()] == []
    more = await disk.append_records([rec(99)], sync=True)  # appends go on after the holes
    assert await disk.read_record(more[0]) == rec(99)
    with pytest.raises(DiskError):
        await disk.release_records(wid_a, [[locs[0][0], -1, 100]])


async def test_a_new_process_appends_to_a_new_segment_and_sealed_ones_can_go(open_disk, tmp_path) -> None:
    first = await open_disk("d")
    old = await first.append_records([payload(1)], sync=True)
    with pytest.raises(DiskError):  # the segment being appended to stays
        await first.delete_segment(old[0][0])
    # a second disk object over the same directory (a restart) starts its own segment
    second = LocalDisk(str(tmp_path / "d"), "again")
    try:
        new = await second.append_records([payload(2)], sync=True)
        assert new[0][0] > old[0][0] and new[0][1] == 0
        assert [s for s, _ in await second.list_segments()] == [old[0][0], new[0][0]]
        walked = [loc async for loc, _ in second.walk_records()]
        assert walked == old + new
    finally:
        await second.close()


async def test_delete_a_sealed_segment(open_disk, tmp_path) -> None:
    earlier = LocalDisk(str(tmp_path / "s"), "earlier")
    os.makedirs(tmp_path / "s")
    try:
        sealed = await earlier.append_records([payload(1), payload(2)], sync=True)
    finally:
        await earlier.close()
    disk = await open_disk("s", create=False)
    current = await disk.append_records([payload(3)], sync=True)
    await disk.delete_segment(sealed[0][0])
    await disk.delete_segment(sealed[0][0])  # gone already: not an error
    with pytest.raises(FileNotFound):
        await disk.read_record(sealed[0])
    assert [s for s, _ in await disk.list_segments()] == [current[0][0]]
    assert await disk.read_record(current[0]) == payload(3)


async def test_an_oversized_record_is_refused_and_nothing_is_appended(disk) -> None:
    with pytest.raises(DiskError):
        await disk.append_records([b"x" * (rlog.MAX_RECORD + 1)], sync=False)
    assert [r async for r in disk.walk_records()] == []


# -- FaultyDisk on the record log ----------------------------------------------------------------

async def test_faulty_disk_fails_and_tears_appends(tmp_path) -> None:
    os.makedirs(tmp_path / "f")
    disk = FaultyDisk(LocalDisk(str(tmp_path / "f"), "f"))
    try:
        disk.fail("append_records", times=1)
        with pytest.raises(DiskFaulty):
            await disk.append_records([b"abc"], sync=True)
        disk.tear("append_records", keep=2, silent=True, times=1)
        locs = await disk.append_records([b"abcdef"], sync=True)
        assert await disk.read_record(locs[0]) == b"ab"  # the frame checks; the content is cut
        disk.fail("read_record", error=CorruptData, times=1)
        with pytest.raises(CorruptData):
            await disk.read_record(locs[0])
        assert disk.calls["append_records"] == 2 and disk.calls["read_record"] == 2
    finally:
        await disk.close()


def test_scan_across_reads_and_damage() -> None:
    """The segment scanner, fed in pieces as a walk reads it: every intact record, once, with
    its location, whatever the cut points and wherever the damage."""
    recs = [payload(i, 50 + i * 13) for i in range(30)]
    blob = bytearray(b"".join(rlog.frame(r) for r in recs))
    starts, pos = [], 0
    for r in recs:
        starts.append(pos)
        pos += len(r) + rlog.HEADER_SIZE
    blob[starts[7] + 2] ^= 0xFF  # a damaged magic
    blob[starts[12] + rlog.HEADER_SIZE + 3] ^= 0x01  # a damaged payload
    blob[starts[20] + 4:starts[20] + 8] = (10 ** 6).to_bytes(4, "little")  # a damaged length
    blob += rlog.frame(b"torn")[:9]  # and a torn tail
    want = [(starts[i], recs[i]) for i in range(30) if i not in (7, 12, 20)]
    for step in (17, 64, 333, 4096, len(blob)):
        got, base, pending = [], 0, b""
        for at in range(0, len(blob) + 1, step):
            chunk = bytes(blob[at:at + step])
            final = len(chunk) < step
            data = pending + chunk
            found, used = rlog.scan(data, base, 9, final)
            got += [(loc[1], p) for loc, p in found]
            if final:
                break
            base += used
            pending = data[used:]
        assert got == want, f"read in pieces of {step}"


async def test_a_record_read_before_its_segment_went_is_not_read_again(open_disk, tmp_path) -> None:
    """A disk keeps a descriptor of a segment it read (page-cache reads on the event loop): once
    the segment is deleted, by compaction or by hand (a wiped disk), reads fail as for any
    missing segment instead of finding the old bytes through that descriptor."""
    earlier = LocalDisk(str(tmp_path / "w"), "earlier")
    os.makedirs(tmp_path / "w")
    try:
        sealed = await earlier.append_records([payload(1), payload(2)], sync=True)
    finally:
        await earlier.close()
    disk = await open_disk("w", create=False)
    await disk.append_records([payload(3)], sync=True)
    for _ in range(2):  # the second read takes the kept descriptor
        assert await disk.read_record(sealed[1]) == payload(2)
    await disk.delete_segment(sealed[0][0])
    with pytest.raises(FileNotFound):
        await disk.read_record(sealed[1])
    again = LocalDisk(str(tmp_path / "w"), "again")
    try:  # removed behind the disk's back: the same
        fresh = await again.append_records([payload(4)], sync=True)
        assert await disk.read_record(fresh[0]) == payload(4)
        assert await disk.read_record(fresh[0]) == payload(4)
        os.remove(tmp_path / "w" / LOG_DIR / rlog.segment_name(fresh[0][0]))
        with pytest.raises(FileNotFound):
            await disk.read_record(fresh[0])
    finally:
        await again.close()


async def test_a_peer_handle_appends_through_its_owner(tmp_path) -> None:
    """A cluster node serves its disks to peers through a second handle on each
    (``peer_handle``): both append to one segment, and neither may delete it while it is
    appended to, so compaction (which leaves alone only the segment its handle appends to)
    never removes a segment the disk service is still writing."""
    os.makedirs(tmp_path / "p")
    owner = LocalDisk(str(tmp_path / "p"), "p")
    served = owner.peer_handle()
    try:
        mine = await owner.append_records([payload(1)], sync=True)
        theirs = await served.append_records([payload(2), payload(3)], sync=True)
        assert {loc[0] for loc in mine + theirs} == {mine[0][0]}
        assert [s for s, _ in await owner.list_segments()] == [mine[0][0]]
        for handle in (owner, served):
            with pytest.raises(DiskError, match="being appended to"):
                await handle.delete_segment(mine[0][0])
        assert await owner.read_record(theirs[1]) == payload(3)
        assert await served.read_record(mine[0]) == payload(1)
        await served.close()  # the service's handle goes; the store's keeps appending
        more = await owner.append_records([payload(4)], sync=True)
        assert more[0][0] == mine[0][0] and await owner.read_record(more[0]) == payload(4)
    finally:
        await served.close()
        await owner.close()
