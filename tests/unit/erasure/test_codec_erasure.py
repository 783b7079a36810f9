"""Property tests for the erasure codec: any k good pieces give the block back, bitrot is
caught at the piece, and fewer than k good pieces is a clear error, never wrong bytes."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buckets.erasure import ErasureCodec, ShardGeometry, frame_piece, unframe_piece
from buckets.erasure.codec import CHECKSUM_SIZE
from buckets.errors import CorruptData, ReadQuorumLost

BLOCK = 4096
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode_object(codec: ErasureCodec, data: bytes) -> list[list[bytes]]:
    """Framed pieces per block, as the writer produces them."""
    return [codec.encode_block(data[off:off + codec.block_size])
            for off in range(0, len(data), codec.block_size)]


@st.composite
def layouts_and_data(draw):
    k = draw(st.integers(1, 8))
    m = draw(st.integers(0, 4))
    size = draw(st.integers(0, 3 * BLOCK + 100) | st.sampled_from([0, 1, k - 1, k, k + 1, BLOCK - 1, BLOCK,
                                                                    BLOCK + 1, 2 * BLOCK]))
    seed = draw(st.integers(0, 2**32 - 1))
    data = (seed.to_bytes(4, "little") * (size // 4 + 1))[:size]
    # make the content less regular than a repeated word so a mix-up of pieces shows
    data = bytes((b + i * 7) & 0xFF for i, b in enumerate(data))
    return k, m, data


def flip(frame: bytes, pos: int, bits: int) -> bytes:
    b = bytearray(frame)
    b[pos % len(b)] ^= bits or 1
    return bytes(b)


@PROPS
@given(case=layouts_and_data(), rnd=st.randoms(use_true_random=False))
def test_any_k_good_pieces_decode_to_the_original(case, rnd) -> None:
    k, m, data = case
    codec = ErasureCodec(k, m, BLOCK)
    geo = ShardGeometry(k, BLOCK, len(data))
    blocks = encode_object(codec, data)
    assert len(blocks) == geo.blocks
    out = bytearray()
    for b, frames in enumerate(blocks):
        assert len(frames) == k + m
        damaged = rnd.sample(range(k + m), rnd.randint(0, m))
        pieces: dict[int, bytes] = {}
        for i, frame in enumerate(frames):
            assert len(frame) == geo.frame_len(b)
            if i in damaged:
                how = rnd.choice(["lose", "flip", "truncate"])
                if how == "lose":
                    continue
                frame = flip(frame, rnd.randrange(len(frame)), rnd.randrange(256)) if how == "flip" \
                    else frame[:rnd.randrange(len(frame))]
                with pytest.raises(CorruptData):
                    unframe_piece(frame, geo.piece_len(b))
                continue
            pieces[i] = unframe_piece(frame, geo.piece_len(b))
        out += codec.decode_block(pieces, geo.block_len(b))
    assert bytes(out) == data


@PROPS
@given(case=layouts_and_data(), rnd=st.randoms(use_true_random=False))
def test_more_than_m_lost_is_an_error_never_wrong_bytes(case, rnd) -> None:
    k, m, data = case
    if not data:
        return
    codec = ErasureCodec(k, m, BLOCK)
    geo = ShardGeometry(k, BLOCK, len(data))
    for b, frames in enumerate(encode_object(codec, data)):
        lost = set(rnd.sample(range(k + m), m + 1))
        pieces = {i: unframe_piece(f, geo.piece_len(b)) for i, f in enumerate(frames) if i not in lost}
        assert len(pieces) == k - 1
        with pytest.raises(ReadQuorumLost):
            codec.decode_block(pieces, geo.block_len(b))


@PROPS
@given(case=layouts_and_data(), rnd=st.randoms(use_true_random=False))
def test_reconstruct_pieces_rebuilds_the_exact_frames(case, rnd) -> None:
    k, m, data = case
    if not data:
        return
    codec = ErasureCodec(k, m, BLOCK)
    geo = ShardGeometry(k, BLOCK, len(data))
    for b, frames in enumerate(encode_object(codec, data)):
        want = sorted(rnd.sample(range(k + m), rnd.randint(1, max(1, m))))
        if m == 0:
            want = []
        good = {i: unframe_piece(f, geo.piece_len(b)) for i, f in enumerate(frames) if i not in want}
        rebuilt = codec.reconstruct_pieces(good, geo.block_len(b), want)
        assert rebuilt == {i: frames[i] for i in want}


@PROPS
@given(case=layouts_and_data())
def test_shard_geometry_matches_the_written_shard_files(case) -> None:
    """A shard file is the concatenation of one slot's frames; the geometry must find each."""
    k, m, data = case
    codec = ErasureCodec(k, m, BLOCK)
    geo = ShardGeometry(k, BLOCK, len(data))
    blocks = encode_object(codec, data)
    for slot in range(k + m):
        shard = b"".join(frames[slot] for frames in blocks)
        assert len(shard) == geo.shard_size
        for b, frames in enumerate(blocks):
            off = geo.frame_offset(b)
            assert shard[off:off + geo.frame_len(b)] == frames[slot]
    assert sum(geo.block_len(b) for b in range(geo.blocks)) == len(data)


@PROPS
@given(case=layouts_and_data())
def test_code_is_systematic(case) -> None:
    """Data pieces are slices of the block: a healthy read needs no decoding."""
    k, m, data = case
    codec = ErasureCodec(k, m, BLOCK)
    geo = ShardGeometry(k, BLOCK, len(data))
    for b, frames in enumerate(encode_object(codec, data)):
        block = data[b * BLOCK:(b + 1) * BLOCK]
        joined = b"".join(frames[i][CHECKSUM_SIZE:] for i in range(k))
        assert joined[:len(block)] == block
        assert set(joined[len(block):]) <= {0}  # only zero padding after the data
        assert len(frames[0]) - CHECKSUM_SIZE == geo.piece_len(b)


def test_frame_round_trip_and_every_single_bit_flip_is_caught() -> None:
    piece = bytes(range(40))
    frame = frame_piece(piece)
    assert len(frame) == CHECKSUM_SIZE + len(piece)
    assert unframe_piece(frame, len(piece)) == piece
    assert unframe_piece(memoryview(frame), len(piece)) == piece
    for pos in range(len(frame)):
        for bit in range(8):
            with pytest.raises(CorruptData):
                unframe_piece(flip(frame, pos, 1 << bit), len(piece))


def test_wrong_length_frames_are_corrupt_not_misread() -> None:
    frame = frame_piece(b"abcdef")
    with pytest.raises(CorruptData, match="short"):
        unframe_piece(frame, 7)
    with pytest.raises(CorruptData, match="short"):
        unframe_piece(frame + b"x", 6)
    with pytest.raises(CorruptData):
        unframe_piece(b"", 0)
    assert unframe_piece(frame_piece(b""), 0) == b""


@pytest.mark.parametrize("k,m", [(0, 1), (-1, 0), (1, -1), (200, 57)])
def test_invalid_layouts_are_refused(k: int, m: int) -> None:
    with pytest.raises(ValueError):
        ErasureCodec(k, m, BLOCK)


@pytest.mark.parametrize("k,m,quorum", [(1, 0, 1), (1, 1, 2), (2, 1, 2), (2, 2, 3), (4, 4, 5), (12, 4, 12)])
def test_write_quorum(k: int, m: int, quorum: int) -> None:
    assert ErasureCodec(k, m, BLOCK).write_quorum == quorum


def test_no_parity_layout_needs_every_piece() -> None:
    codec = ErasureCodec(3, 0, BLOCK)
    frames = codec.encode_block(b"x" * 100)
    assert len(frames) == 3
    pieces = {i: unframe_piece(f, 34) for i, f in enumerate(frames)}
    assert codec.decode_block(pieces, 100) == b"x" * 100
    del pieces[1]
    with pytest.raises(ReadQuorumLost):
        codec.decode_block(pieces, 100)


@pytest.mark.parametrize("k,m,size", [(2, 2, 1 << 20), (2, 2, 1000), (4, 2, 12345), (1, 1, 77), (12, 4, 1 << 20)])
def test_a_block_s_frame_parts_are_its_frames(k, m, size) -> None:
    """``encode_block_parts`` (what the shard writers get) joins to ``encode_block``'s frames."""
    codec = ErasureCodec(k, m)
    block = random.Random(size).randbytes(size)
    assert [b"".join(parts) for parts in codec.encode_block_parts(block)] == codec.encode_block(block)
