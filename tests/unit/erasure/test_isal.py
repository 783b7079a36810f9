"""ISA-L's arithmetic gives zfec's pieces exactly, so shards written with either read back
with either (the on-disk format does not depend on which library is installed)."""

from __future__ import annotations

import itertools
import random

import pytest

from buckets.erasure import codec as codec_mod
from buckets.erasure import isal
from buckets.erasure.codec import ErasureCodec, unframe_piece

pytestmark = pytest.mark.skipif(not isal.available(), reason="libisal.so.2 is not installed (make venv installs it)")

LAYOUTS = [(1, 1), (2, 1), (2, 2), (3, 2), (4, 4), (6, 3), (8, 4), (12, 4), (8, 8), (16, 16)]


@pytest.fixture
def zfec_only():
    """A codec factory with ISA-L turned off (the server's --erasure-simd off)."""
    def make(k: int, m: int, bs: int = 1 << 20) -> ErasureCodec:
        isal.enabled = False
        try:
            return ErasureCodec(k, m, bs)
        finally:
            isal.enabled = True
    return make


def test_the_matrix_is_zfecs_and_the_layouts_pass_their_check() -> None:
    for k, m in LAYOUTS:
        c = ErasureCodec(k, m)
        assert c._simd is not None, (k, m)
        assert c._simd.parity_rows == isal.zfec_matrix(k, m)


@pytest.mark.parametrize("k,m", LAYOUTS)
def test_encoding_gives_zfecs_frames(k, m, zfec_only) -> None:
    rng = random.Random(k * 100 + m)
    fast, slow = ErasureCodec(k, m), zfec_only(k, m)
    assert fast._simd is not None and slow._simd is None
    # around the size where ISA-L takes over, odd lengths (padded last piece), a full block
    edge = isal.MIN_WORK // m  # the block size where ISA-L takes over
    for size in (1, edge - 1, edge, edge + 1, 100_003, 1 << 20):
        block = rng.randbytes(size)
        assert fast.encode_block(block) == slow.encode_block(block), (k, m, size)


@pytest.mark.parametrize("k,m", [(2, 2), (3, 2), (4, 4), (6, 3), (12, 4)])
def test_every_set_of_k_pieces_decodes_the_block(k, m, zfec_only) -> None:
    rng = random.Random(k * 7 + m)
    fast, slow = ErasureCodec(k, m), zfec_only(k, m)
    size = 3 * isal.MIN_WORK // m + 5
    block = rng.randbytes(size)
    frames = fast.encode_block(block)
    plen = (size + k - 1) // k
    pieces = {i: unframe_piece(f, plen) for i, f in enumerate(frames)}  # views, as reads give them
    sets = list(itertools.combinations(range(k + m), k))
    for nums in rng.sample(sets, min(len(sets), 60)):
        have = {i: pieces[i] for i in nums}
        assert fast.decode_block(have, size) == block, nums
        assert slow.decode_block({i: bytes(p) for i, p in have.items()}, size) == block, nums


def test_a_library_that_does_not_reproduce_zfec_is_not_used(monkeypatch) -> None:
    """The self-check at a layout's first use: a library giving other parity is refused, and
    that layout stays on zfec (what it writes stays readable by any node)."""
    monkeypatch.setattr(codec_mod, "_simd_layouts", {})
    real = isal.Coder.apply

    def wrong(self, sources, length):
        out = real(self, sources, length)
        out[0][0] ^= 1
        return out

    monkeypatch.setattr(isal.Coder, "apply", wrong)
    c = ErasureCodec(3, 2)
    assert c._simd is None
    monkeypatch.setattr(isal.Coder, "apply", real)
    block = random.Random(1).randbytes(50_000)
    frames = c.encode_block(block)
    plen = (len(block) + 2) // 3
    assert c.decode_block({i: unframe_piece(frames[i], plen) for i in (1, 3, 4)}, len(block)) == block


def test_off_means_zfec_alone(monkeypatch) -> None:
    monkeypatch.setattr(isal, "enabled", False)
    assert not isal.available()
    assert ErasureCodec(2, 2)._simd is None


def test_a_block_encodes_quickly_with_isal_or_without_parity(zfec_only) -> None:
    """What the writer encodes on the event loop rather than in the CPU pool."""
    assert ErasureCodec(2, 2).encodes_quickly(1 << 20)
    assert ErasureCodec(4, 0).encodes_quickly(1 << 20) and zfec_only(4, 0).encodes_quickly(1 << 20)  # no parity
    assert not zfec_only(2, 2).encodes_quickly(1 << 20)  # zfec: ~2 ms per MiB
    assert not ErasureCodec(2, 2).encodes_quickly(2048)  # below ISA-L's worth: zfec's tables
