"""Reed-Solomon arithmetic through Intel's ISA-L (``libisal.so.2``), bit for bit zfec's.

zfec computes parity a byte at a time through lookup tables: about 2 ms of CPU per MiB of a
2+2 block on the bench machine, half of all the CPU a 16 MiB PUT costs. ISA-L does the same
GF(2^8) arithmetic with SIMD (split 4-bit tables through PSHUFB/AVX2/AVX-512), about 80 times
faster. Both use the field of the polynomial x^8+x^4+x^3+x^2+1 (0x11d), and ISA-L computes
parity from any coefficient matrix given to it: this module hands it zfec's (read once per
layout by encoding unit vectors with zfec itself), so every parity piece it writes is the
piece zfec would write. Shards written either way read back either way; on-disk format is
unchanged. Each layout is checked against zfec on a random block before use, and a layout
whose check fails stays on zfec.

Decoding (a block read with data pieces missing): the rows of the k pieces read, from the
full generator matrix (identity for the data pieces, zfec's rows for parity), are inverted
over GF(2^8) (ISA-L's ``gf_invert_matrix``); the inverse's rows for the missing data pieces
are a coefficient matrix like parity's, applied to the pieces read.

The library is loaded through ctypes (no build step; Debian's ``libisal2``, installed by the
Makefile). A call releases the GIL, like zfec's. Where the library is missing, or the
server's ``--erasure-simd off``, ``available()`` is False and the codec uses zfec alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

import zfec

log = logging.getLogger("buckets.erasure")

# A block whose pieces x data pieces x parity pieces come to less than this many bytes is left
# to zfec: a call through ctypes costs ~7 us plus ~2.5 us per piece, zfec ~0.8 ns per byte per
# (data, parity) pair (measured: 2+2 at 2 KiB pieces 6.8 us zfec, 7.5 ISA-L; at 4 KiB 13.0 and
# 7.6; 4+4 at 1 KiB 12.8 and 11.7).
MIN_WORK = 16384


def worth(piece: int, k: int, m: int) -> bool:
    """Is ISA-L cheaper than zfec for k+m pieces of ``piece`` bytes?"""
    return piece * k * m >= MIN_WORK


enabled = True  # the server's --erasure-simd / BUCKETS_ERASURE_SIMD

_lib: ctypes.CDLL | None = None
_loaded = False
_load_lock = threading.Lock()


def _load() -> ctypes.CDLL | None:
    global _lib, _loaded
    if _loaded:  # every call after the first: no lock
        return _lib
    with _load_lock:
        if _loaded:
            return _lib
        _loaded = True
        names = ["libisal.so.2", ctypes.util.find_library("isal")]
        for name in filter(None, names):
            try:
                lib = ctypes.CDLL(name)
                lib.ec_init_tables.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
                lib.ec_init_tables.restype = None
                lib.ec_encode_data.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                               ctypes.c_void_p, ctypes.c_void_p]
                lib.ec_encode_data.restype = None
                lib.gf_invert_matrix.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
                lib.gf_invert_matrix.restype = ctypes.c_int
            except (OSError, AttributeError):
                continue
            _lib = lib
            break
        return _lib


def available() -> bool:
    return enabled and _load() is not None


def zfec_matrix(k: int, m: int) -> list[list[int]]:
    """zfec's parity coefficients for k+m: row r, column i = parity piece k+r of data piece i's
    unit vector (the code is linear, so that is the coefficient)."""
    enc = zfec.Encoder(k, k + m)
    rows = [[0] * k for _ in range(m)]
    for i in range(k):
        unit = [b"\x01" if j == i else b"\x00" for j in range(k)]
        for r, piece in enumerate(enc.encode(unit, list(range(k, k + m)))):
            rows[r][i] = piece[0]
    return rows


class _PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.py_object), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None
_PYBUF_SIMPLE = 0  # contiguous bytes; read-only allowed


class _Pinned:
    """The addresses of bytes-like objects (bytes, bytearray, memoryviews of either), held
    (the buffer protocol's export) until ``release``: no copy, read-only ones included."""

    def __init__(self) -> None:
        self._held: list[_PyBuffer] = []

    def address(self, obj) -> int:
        view = _PyBuffer()
        if _get_buffer(obj, ctypes.byref(view), _PYBUF_SIMPLE) != 0:
            raise BufferError("not a contiguous buffer")
        self._held.append(view)
        return view.buf or 0

    def release(self) -> None:
        for view in self._held:
            _release_buffer(ctypes.byref(view))
        self._held.clear()


class Coder:
    """ISA-L tables for one coefficient matrix (``rows`` x k): ``apply`` computes its rows'
    pieces from k source pieces of equal length. Read-only after construction: thread-safe."""

    def __init__(self, k: int, rows: list[list[int]]) -> None:
        lib = _load()
        assert lib is not None
        self.k, self.rows = k, len(rows)
        self._tables = ctypes.create_string_buffer(32 * k * len(rows))
        lib.ec_init_tables(k, len(rows), bytes(v for row in rows for v in row), self._tables)

    def apply(self, sources: list, length: int) -> list[bytearray]:
        """The ``rows`` pieces of ``length`` bytes computed from the k ``sources`` (bytes-like,
        each exactly ``length`` bytes; read where they are, not copied)."""
        lib = _load()
        assert lib is not None and len(sources) == self.k
        for i, s in enumerate(sources):
            if len(s) != length:
                raise ValueError(f"piece {i}: {len(s)} bytes, expected {length}")
        outs = [bytearray(length) for _ in range(self.rows)]
        pinned = _Pinned()
        try:
            src = (ctypes.c_void_p * self.k)(*(pinned.address(s) for s in sources))
            dst = (ctypes.c_void_p * self.rows)(*(pinned.address(o) for o in outs))
            lib.ec_encode_data(length, self.k, self.rows, self._tables, src, dst)
        finally:
            pinned.release()
        return outs


def invert(matrix: list[list[int]]) -> list[list[int]] | None:
    """The inverse of a k x k matrix over GF(2^8), None if singular."""
    lib = _load()
    assert lib is not None
    k = len(matrix)
    out = ctypes.create_string_buffer(k * k)
    if lib.gf_invert_matrix(bytes(v for row in matrix for v in row), out, k) != 0:
        return None
    raw = out.raw
    return [list(raw[r * k:(r + 1) * k]) for r in range(k)]


def self_check(k: int, m: int, encode, reference) -> bool:
    """Does ``encode`` (ISA-L) give ``reference``'s (zfec's) parity on a random block?"""
    length = MIN_WORK + 64
    pieces = [os.urandom(length) for _ in range(k)]
    try:
        return [bytes(p) for p in encode(pieces, length)] == [bytes(p) for p in reference(pieces)]
    except Exception:  # noqa: BLE001 - any failure means: not this library
        log.exception("ISA-L self-check of %d+%d failed", k, m)
        return False
