"""Ranged GETs (every HTTP form), InvalidRange, and part_number reads."""

from __future__ import annotations

import pytest
from engine_testkit import BLOCK, INLINE, MiB, content, get_bytes, read_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buckets import errors
from buckets.engine import reader
from buckets.engine.store import resolve_range
from buckets.engine.types import CompletePart

SIZE = 5 * BLOCK + 321


def http_slice(data: bytes, first: int | None, last: int | None) -> bytes:
    """What RFC 9110 says a satisfiable byte range returns."""
    size = len(data)
    if first is None:
        return data[max(0, size - last):]
    return data[first:size if last is None else min(last + 1, size)]


@pytest.mark.parametrize("rng,expected", [
    ((0, 0), (0, 1)),
    ((0, 9), (0, 10)),
    ((10, 19), (10, 20)),
    ((BLOCK - 1, BLOCK), (BLOCK - 1, BLOCK + 1)),  # straddles a block boundary
    ((BLOCK, 2 * BLOCK - 1), (BLOCK, 2 * BLOCK)),  # exactly one block
    ((100, None), (100, SIZE)),
    ((SIZE - 1, None), (SIZE - 1, SIZE)),
    ((0, SIZE + 1000), (0, SIZE)),  # last past the end is clamped
    ((None, 1), (SIZE - 1, SIZE)),
    ((None, 500), (SIZE - 500, SIZE)),
    ((None, SIZE + 10), (0, SIZE)),  # suffix longer than the object: whole object
    ((0, None), (0, SIZE)),
])
async def test_range_forms(store, bucket, rng, expected) -> None:
    data = content("r", SIZE)
    await store.put_object(bucket, "r", data, SIZE)
    reader = await store.get_object(bucket, "r", range=rng)
    assert (reader.range.start, reader.range.end) == expected
    assert reader.length == expected[1] - expected[0]
    assert reader.info.size == SIZE
    assert await read_all(reader) == data[expected[0]:expected[1]]


@pytest.mark.parametrize("size", [0, 1, 100, SIZE])
@pytest.mark.parametrize("rng", [(None, 0), (5, 2)])
async def test_unsatisfiable_ranges(store, bucket, size, rng) -> None:
    await store.put_object(bucket, "r", content("r", size), size)
    with pytest.raises(errors.InvalidRange) as exc:
        await store.get_object(bucket, "r", range=rng)
    assert exc.value.status == 416


@pytest.mark.parametrize("size", [0, 1, 100, SIZE])
async def test_range_starting_at_or_past_the_end(store, bucket, size) -> None:
    await store.put_object(bucket, "r", content("r", size), size)
    for first in (size, size + 1, size + 10**9):
        with pytest.raises(errors.InvalidRange) as exc:
            await store.get_object(bucket, "r", range=(first, None))
        assert exc.value.extra.get("ActualObjectSize") == str(size)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 10**7), first=st.none() | st.integers(0, 10**7), last=st.none() | st.integers(0, 10**7))
def test_resolve_range_matches_http_semantics(size, first, last) -> None:
    data_len = size
    if first is None and last is None:
        return
    satisfiable = (last is not None and last > 0) if first is None else (
        first < data_len and (last is None or last >= first))
    if not satisfiable:
        with pytest.raises(errors.InvalidRange):
            resolve_range((first, last), size)
        return
    r = resolve_range((first, last), size)
    if first is None:
        assert (r.start, r.end) == (max(0, size - last), size)
    else:
        assert (r.start, r.end) == (first, size if last is None else min(last + 1, size))
    assert 0 <= r.start < r.end <= size


@pytest.mark.parametrize("size", [INLINE - 1, 3 * BLOCK + 17])
async def test_random_ranges_read_the_right_bytes(store, bucket, size) -> None:
    data = content(f"rr{size}", size)
    await store.put_object(bucket, "r", data, size)

    # hypothesis draws the ranges synchronously; the reads then run on the test's loop
    cases: list = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(first=st.integers(0, size - 1), length=st.integers(1, size), suffix=st.booleans())
    def draw(first, length, suffix):
        cases.append((None, length) if suffix else (first, first + length - 1))

    draw()
    for rng in cases:
        got = await get_bytes(store, bucket, "r", range=rng)
        assert got == http_slice(data, *rng), rng


async def test_part_number_of_a_single_part_object(store, bucket) -> None:
    data = content("p", 2 * BLOCK)
    await store.put_object(bucket, "p", data, len(data))
    reader = await store.get_object(bucket, "p", part_number=1)
    assert (reader.range.start, reader.range.end) == (0, len(data))
    assert await read_all(reader) == data
    with pytest.raises((errors.InvalidPartNumber, errors.InvalidPart, errors.InvalidRange)) as exc:
        await store.get_object(bucket, "p", part_number=2)
    assert 400 <= exc.value.status < 500
    await store.put_object(bucket, "empty", b"", 0)
    assert await get_bytes(store, bucket, "empty", part_number=1) == b""


async def test_part_number_and_ranges_of_a_multipart_object(store, bucket) -> None:
    sizes = [5 * MiB, 5 * MiB + 7, 1234]
    bodies = [content(f"part{i}", s) for i, s in enumerate(sizes)]
    up = await store.create_multipart_upload(bucket, "mp")
    parts = []
    for i, body in enumerate(bodies, 1):
        p = await store.put_part(bucket, "mp", up.upload_id, i, body, len(body))
        parts.append(CompletePart(i, p.etag))
    await store.complete_multipart_upload(bucket, "mp", up.upload_id, parts)
    whole = b"".join(bodies)
    offset = 0
    for i, body in enumerate(bodies, 1):
        reader = await store.get_object(bucket, "mp", part_number=i)
        assert (reader.range.start, reader.range.end) == (offset, offset + len(body))
        assert await read_all(reader) == body
        offset += len(body)
    with pytest.raises((errors.InvalidPartNumber, errors.InvalidPart, errors.InvalidRange)):
        await store.get_object(bucket, "mp", part_number=4)
    # ranges that cross part boundaries
    b1 = sizes[0]
    for rng in [(b1 - 10, b1 + 10), (b1 - 1, b1), (b1, b1), (b1 - BLOCK, sizes[0] + sizes[1] + 5),
                (None, sizes[2] + 3), (0, None)]:
        assert await get_bytes(store, bucket, "mp", range=rng) == http_slice(whole, *rng), rng


def test_span_sizing(monkeypatch, two_block_spans) -> None:
    """A span brings at least 512 KiB per shard, 2 blocks at least, 8 MiB of object at most."""
    assert two_block_spans == 512 * 1024
    monkeypatch.setattr(reader, "SPAN_SHARD_BYTES", two_block_spans)
    assert reader.span_blocks(2, MiB) == 2  # 2+2: 512 KiB pieces
    assert reader.span_blocks(4, MiB) == 2
    assert reader.span_blocks(12, MiB) == 6  # 12+4: 87 KiB pieces, 6 per read
    assert reader.span_blocks(16, MiB) == 8
    assert reader.span_blocks(32, MiB) == 8  # capped at 8 MiB of object
    assert reader.span_blocks(2, 16 * 1024) == 64
    assert reader.span_blocks(2, 8 * MiB) == 1
    assert reader.span_blocks(2, 16 * MiB) == 1  # a block is never split


async def test_reads_with_the_servers_span_sizes(monkeypatch, two_block_spans, store, bucket) -> None:
    """Spans sized as the server sizes them (64 blocks of 16 KiB here): whole reads and ranges
    across their boundaries return the right bytes."""
    monkeypatch.setattr(reader, "SPAN_SHARD_BYTES", two_block_spans)
    per_span = reader.span_blocks(2, BLOCK)
    assert per_span == 64
    size = 3 * per_span * BLOCK + 5  # 3 full spans and a bit
    data = content("spans", size)
    await store.put_object(bucket, "s", data, size)
    assert await get_bytes(store, bucket, "s") == data
    edge = per_span * BLOCK
    for first, last in [(0, edge - 1), (edge - 1, edge), (edge - 10, 2 * edge + 10), (2 * edge, None),
                        (17, size - 18), (size - 3, None)]:
        got = await get_bytes(store, bucket, "s", range=(first, last))
        assert got == http_slice(data, first, last), (first, last)
