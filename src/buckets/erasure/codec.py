"""zfec Reed-Solomon over fixed-size blocks, with xxh3-framed pieces.

An object (or a multipart part) is cut into blocks of ``block_size`` bytes (the last one
may be shorter). Each block is split into k equal pieces (the last padded with zeros) and
zfec computes m parity pieces. The code is systematic: piece i < k *is* a slice of the
data, so a healthy read never decodes. Where Intel's ISA-L is installed, the same arithmetic
(zfec's own coefficients, the same field) runs through its SIMD routines instead, ~80 times
faster, with identical pieces (``erasure/isal.py``).

On disk every piece is a frame: 8 bytes little-endian xxh3_64 of the piece, then the
piece. A shard file is the frames of one shard index for every block, in block order, so
the offset of block b in a shard is ``b * frame_size(full block)`` and a ranged read
touches only the frames it needs.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import xxhash
import zfec

from buckets.erasure import isal
from buckets.errors import CorruptData, ReadQuorumLost

CHECKSUM_SIZE = 8
_CK = struct.Struct("<Q")


def frame_piece(piece: bytes | memoryview) -> bytes:
    return _CK.pack(xxhash.xxh3_64_intdigest(piece)) + piece


def frame_parts(piece: bytes | memoryview) -> tuple[bytes, bytes | memoryview]:
    """A piece's frame as (checksum, piece): written one after the other it is
    ``frame_piece(piece)``, without copying the piece into a new bytes object first."""
    return _CK.pack(xxhash.xxh3_64_intdigest(piece)), piece


def unframe_piece(frame: bytes | memoryview, expected_len: int) -> memoryview:
    """The piece inside ``frame`` (a view, no copy) or CorruptData (short, or checksum mismatch)."""
    if len(frame) != CHECKSUM_SIZE + expected_len:
        raise CorruptData(f"short piece: {len(frame)} bytes, expected {CHECKSUM_SIZE + expected_len}")
    piece = memoryview(frame)[CHECKSUM_SIZE:]
    if _CK.unpack_from(frame, 0)[0] != xxhash.xxh3_64_intdigest(piece):
        raise CorruptData("piece checksum mismatch")
    return piece


def _joined(pieces: list, block_len: int) -> bytes:
    """The first ``block_len`` bytes of the pieces, in one copy: the padding is cut from the
    last pieces before the join (a join then a slice copied the whole block twice)."""
    excess = sum(len(p) for p in pieces) - block_len
    if excess > 0:
        pieces = list(pieces)
        while excess > 0 and pieces:
            last = memoryview(pieces[-1])
            if len(last) <= excess:
                excess -= len(last)
                pieces.pop()
            else:
                pieces[-1] = last[:len(last) - excess]
                excess = 0
    return b"".join(pieces)


class _Simd:
    """ISA-L coders for one k+m layout: parity (zfec's rows), and decoders by the set of
    pieces read (cached: at most C(n, k) sets, and few of them in practice)."""

    DECODERS_KEPT = 256

    def __init__(self, k: int, m: int) -> None:
        self.k, self.m = k, m
        self.parity_rows = isal.zfec_matrix(k, m)
        self.parity = isal.Coder(k, self.parity_rows)
        self._decoders: dict[tuple[int, ...], isal.Coder] = {}
        self._lock = threading.Lock()

    def row(self, index: int) -> list[int]:
        """Generator row of piece ``index``: a unit row for data, zfec's for parity."""
        if index < self.k:
            return [1 if i == index else 0 for i in range(self.k)]
        return self.parity_rows[index - self.k]

    def decoder(self, nums: tuple[int, ...]) -> isal.Coder:
        """The coder that computes the missing data pieces from the pieces ``nums``."""
        coder = self._decoders.get(nums)
        if coder is None:
            inverse = isal.invert([self.row(i) for i in nums])
            if inverse is None:  # cannot happen for an MDS code; zfec would say so too
                raise ReadQuorumLost(f"pieces {list(nums)} do not determine the block")
            missing = [j for j in range(self.k) if j not in nums]
            coder = isal.Coder(self.k, [inverse[j] for j in missing])
            with self._lock:
                if len(self._decoders) >= self.DECODERS_KEPT:
                    self._decoders.clear()
                self._decoders[nums] = coder
        return coder


_simd_layouts: dict[tuple[int, int], _Simd | None] = {}
_simd_lock = threading.Lock()


def _simd_for(k: int, m: int) -> _Simd | None:
    """The ISA-L coders of a layout, once they gave zfec's pieces on a random block (encoding,
    and decoding with data pieces missing); None: zfec alone."""
    if not m or not isal.available():
        return None
    with _simd_lock:
        if (k, m) in _simd_layouts:
            return _simd_layouts[(k, m)]
    simd: _Simd | None = None
    try:
        simd = _Simd(k, m)
        encoder = zfec.Encoder(k, k + m)
        ok = isal.self_check(k, m, simd.parity.apply, lambda pieces: encoder.encode(pieces, list(range(k, k + m))))
        if ok:
            length = isal.MIN_WORK + 8
            pieces = [bytes([i + 1]) * length for i in range(k)]
            parity = simd.parity.apply(pieces, length)
            nums = tuple(range(min(m, k), k)) + tuple(range(k, k + min(m, k)))
            have = {i: (pieces[i] if i < k else parity[i - k]) for i in nums}
            rebuilt = simd.decoder(nums).apply([have[i] for i in nums], length)
            ok = [bytes(p) for p in rebuilt] == pieces[:min(m, k)]
    except Exception:  # noqa: BLE001 - any failure of the library: zfec does the work
        isal.log.exception("ISA-L for %d+%d unusable", k, m)
        ok = False
    if not ok:
        isal.log.warning("ISA-L does not reproduce zfec's %d+%d pieces here: zfec alone for it", k, m)
        simd = None
    with _simd_lock:
        _simd_layouts[(k, m)] = simd
    return simd


def coder_name(k: int, m: int) -> str:
    """Which library computes k+m's parity on this node: ``"isal"`` or ``"zfec"``."""
    return "isal" if _simd_for(k, m) is not None else "zfec"


@dataclass(frozen=True, slots=True)
class ShardGeometry:
    """Where each block's frame sits in a shard file, for an encoded stream of ``size`` bytes."""

    k: int
    block_size: int
    size: int

    @property
    def blocks(self) -> int:
        return (self.size + self.block_size - 1) // self.block_size

    def block_len(self, b: int) -> int:
        return min(self.block_size, self.size - b * self.block_size)

    def piece_len(self, b: int) -> int:
        return (self.block_len(b) + self.k - 1) // self.k

    def frame_offset(self, b: int) -> int:
        full = CHECKSUM_SIZE + (self.block_size + self.k - 1) // self.k
        return b * full

    def frame_len(self, b: int) -> int:
        return CHECKSUM_SIZE + self.piece_len(b)

    @property
    def shard_size(self) -> int:
        if self.size == 0:
            return 0
        last = self.blocks - 1
        return self.frame_offset(last) + self.frame_len(last)


class ErasureCodec:
    """RS(k, m) for one layout. Thread-safe: zfec encoders/decoders hold no per-call state."""

    def __init__(self, k: int, m: int, block_size: int = 1 << 20) -> None:
        if k < 1 or m < 0 or k + m > 256:
            raise ValueError(f"invalid erasure layout {k}+{m}")
        self.k, self.m, self.n = k, m, k + m
        self.block_size = block_size
        self._encoder = zfec.Encoder(k, self.n) if m else None
        self._decoder = zfec.Decoder(k, self.n) if m else None
        self._parity_nums = list(range(k, self.n))
        self._simd = _simd_for(k, m)

    @property
    def write_quorum(self) -> int:
        return self.k + 1 if self.k == self.m else self.k

    def encodes_quickly(self, block_len: int) -> bool:
        """Does a block of ``block_len`` bytes encode in about as little CPU as a hand-off to
        another thread costs (ISA-L's parity, or none: ~130 µs per MiB at 2+2), rather than
        zfec's ~2 ms per MiB? The writer then encodes it where it is (``ErasureWriter``)."""
        return not self.m or (self._simd is not None and isal.worth(-(-block_len // self.k), self.k, self.m))

    def split(self, block: bytes) -> list[bytes | memoryview]:
        """The k data pieces of one block (the last padded with zeros to equal length): views
        of ``block`` where a piece is whole (zfec and the framing read them as they are; a
        copy here cost 1 MiB of memmove per MiB written), bytes where padded."""
        k = self.k
        if k == 1:
            return [block]
        plen = (len(block) + k - 1) // k
        mv = memoryview(block)
        pieces: list[bytes | memoryview] = [mv[i * plen:(i + 1) * plen] for i in range(k)]
        for i in range(k):  # the last piece, or trailing empty ones of a block shorter than k bytes
            if len(pieces[i]) < plen:
                pieces[i] = bytes(pieces[i]) + b"\0" * (plen - len(pieces[i]))
        return pieces

    def _pieces(self, block: bytes) -> list[bytes | memoryview]:
        """The n pieces of a block (k data, then m parity), unframed."""
        data = self.split(block)
        if self._encoder is not None and len(data[0]):
            if self._simd is not None and isal.worth(len(data[0]), self.k, self.m):
                parity = self._simd.parity.apply(data, len(data[0]))
            else:
                parity = self._encoder.encode(data, self._parity_nums)
        else:
            parity = [b""] * self.m
        return data + list(parity)

    def encode_block(self, block: bytes) -> list[bytes]:
        """All n framed pieces of a block, in shard order."""
        return [frame_piece(p) for p in self._pieces(block)]

    def encode_block_parts(self, block: bytes) -> list[tuple[bytes, bytes | memoryview]]:
        """``encode_block``'s frames as (checksum, piece) pairs for a shard writer, which takes a
        sequence of buffers: the pieces are not copied into new frames first (at 2+2, 2 MiB of
        memmove saved per MiB written)."""
        return [frame_parts(p) for p in self._pieces(block)]

    def decode_block(self, pieces: dict[int, bytes | memoryview], block_len: int) -> bytes:
        """Rebuild a block from >= k verified pieces ({shard index: piece bytes})."""
        k = self.k
        if all(i in pieces for i in range(k)):
            return _joined([pieces[i] for i in range(k)], block_len)
        if len(pieces) < k or self._decoder is None:
            raise ReadQuorumLost(f"only {len(pieces)} of the {k} pieces needed are readable")
        nums = sorted(pieces)[:k]
        plen = len(pieces[nums[0]])
        if self._simd is not None and isal.worth(plen, k, self.m):
            rebuilt = iter(self._simd.decoder(tuple(nums)).apply([pieces[i] for i in nums], plen))
            data = [pieces[j] if j in pieces else next(rebuilt) for j in range(k)]
        else:
            data = self._decoder.decode([bytes(pieces[i]) for i in nums], nums)
        return _joined(data, block_len)

    def reconstruct_pieces(self, pieces: dict[int, bytes], block_len: int, want: list[int]) -> dict[int, bytes]:
        """Recompute the pieces ``want`` (data or parity) of one block from >= k good pieces."""
        block = self.decode_block(pieces, block_len)
        framed = self.encode_block(block)
        return {i: framed[i] for i in want}
