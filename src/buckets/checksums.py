"""S3 flexible checksums: CRC32, CRC32C, CRC64NVME, SHA1 and SHA256.

Owns the one definition of each algorithm S3 accepts in ``x-amz-checksum-*`` headers and
trailers: streaming digests (:func:`new_checksum`), header-name mapping, base64
validation, and the two ways S3 derives a multipart object's checksum:

* COMPOSITE (:func:`composite`): the algorithm applied to the concatenated raw part
  digests, suffixed ``-N``.
* FULL_OBJECT (:func:`combine_full_object`): the CRC the whole object would have had,
  computed from each part's CRC and length alone, without re-reading any data.

Used by the storage engine (while streaming blocks) and by the S3 layer (headers,
trailers, CompleteMultipartUpload). Knows nothing about HTTP or disks. CRCs come from
``awscrt`` (C, the same code the AWS SDKs use); SHAs from ``hashlib``. Digests are the
big-endian bytes S3 puts, base64-encoded, on the wire.
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from awscrt import checksums as _crt

from buckets.errors import InvalidArgument, InvalidRequest

ALGORITHMS: tuple[str, ...] = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
CRC_ALGORITHMS: tuple[str, ...] = ("CRC32", "CRC32C", "CRC64NVME")

DIGEST_SIZES: dict[str, int] = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}

# What S3 computes, as a full-object checksum, for an object (or a multipart upload's parts)
# uploaded without any checksum of the client's.
DEFAULT_ALGORITHM = "CRC64NVME"

_HEADER_PREFIX = "x-amz-checksum-"


def normalize_algorithm(alg: str) -> str:
    """Return the canonical upper-case name of ``alg``; unknown names are a client error."""
    name = alg.strip().upper() if isinstance(alg, str) else ""
    if name not in DIGEST_SIZES:
        raise InvalidArgument(
            f"Checksum algorithm {alg!r} is not supported; use one of {', '.join(ALGORITHMS)}.",
            ArgumentName="x-amz-checksum-algorithm", ArgumentValue=str(alg))
    return name


def is_crc(alg: str) -> bool:
    return normalize_algorithm(alg) in CRC_ALGORITHMS


def digest_size(alg: str) -> int:
    return DIGEST_SIZES[normalize_algorithm(alg)]


def header_name(alg: str) -> str:
    """``"CRC32"`` -> ``"x-amz-checksum-crc32"``."""
    return _HEADER_PREFIX + normalize_algorithm(alg).lower()


def alg_from_header(name: str) -> str | None:
    """``"X-Amz-Checksum-CRC32C"`` -> ``"CRC32C"``; anything that is not a checksum value header -> None.

    ``x-amz-checksum-mode``/``-type``/``-algorithm`` are not value headers and give None.
    """
    lowered = name.strip().lower()
    if not lowered.startswith(_HEADER_PREFIX):
        return None
    candidate = lowered[len(_HEADER_PREFIX):].upper()
    return candidate if candidate in DIGEST_SIZES else None


# --- streaming digests --------------------------------------------------------------------


class Checksum(abc.ABC):
    """A running digest of one algorithm. ``update`` may be called from a worker thread."""

    algorithm: str

    @abc.abstractmethod
    def update(self, data: bytes | bytearray | memoryview) -> None: ...

    @abc.abstractmethod
    def digest(self) -> bytes: ...

    @abc.abstractmethod
    def copy(self) -> Checksum: ...

    def b64(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


class _CrcChecksum(Checksum):
    """CRC kept as an int and fed to awscrt with the running value (no state object needed)."""

    __slots__ = ("algorithm", "_fn", "_size", "_value")

    def __init__(self, algorithm: str, fn: Callable[[bytes, int], int], size: int, value: int = 0) -> None:
        self.algorithm = algorithm
        self._fn = fn
        self._size = size
        self._value = value

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._value = self._fn(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")

    def copy(self) -> Checksum:
        return _CrcChecksum(self.algorithm, self._fn, self._size, self._value)


class _HashlibChecksum(Checksum):
    __slots__ = ("algorithm", "_hash")

    def __init__(self, algorithm: str, hash_obj: hashlib._Hash) -> None:  # type: ignore[name-defined]
        self.algorithm = algorithm
        self._hash = hash_obj

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    def copy(self) -> Checksum:
        return _HashlibChecksum(self.algorithm, self._hash.copy())


_CRC_FUNCTIONS: dict[str, Callable[[bytes, int], int]] = {
    "CRC32": _crt.crc32,
    "CRC32C": _crt.crc32c,
    "CRC64NVME": _crt.crc64nvme,
}


def new_checksum(alg: str) -> Checksum:
    """A fresh running checksum for ``alg`` (case-insensitive)."""
    name = normalize_algorithm(alg)
    if name in _CRC_FUNCTIONS:
        return _CrcChecksum(name, _CRC_FUNCTIONS[name], DIGEST_SIZES[name])
    return _HashlibChecksum(name, hashlib.new(name.lower()))


def checksum_of(alg: str, data: bytes) -> bytes:
    """Raw digest of ``data`` in one call."""
    checksum = new_checksum(alg)
    checksum.update(data)
    return checksum.digest()


def encode_b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def validate_b64(alg: str, value: str) -> bytes:
    """Decode a header/trailer value and check it is a digest of the right size for ``alg``."""
    name = normalize_algorithm(alg)
    try:
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raw = None
    if raw is None or len(raw) != DIGEST_SIZES[name]:
        raise InvalidRequest(f"Value for {header_name(name)} header is invalid.")
    return raw


# --- multipart: COMPOSITE -----------------------------------------------------------------


def composite(alg: str, part_digests: list[bytes]) -> str:
    """S3's COMPOSITE multipart checksum: ``base64(alg(d1 || d2 || ... ))-N``."""
    checksum = new_checksum(alg)
    for digest in part_digests:
        checksum.update(digest)
    return f"{checksum.b64()}-{len(part_digests)}"


# --- multipart: FULL_OBJECT (CRC combination) ---------------------------------------------
#
# A reflected CRC with init = xorout = all ones satisfies, for byte strings A and B,
#     crc(A || B) = crc(A) * x^(8*len(B)) mod P  xor  crc(B)
# where the multiplication is in GF(2)[x]/P on the bit-reflected representation (the
# pre/post conditioning cancels out). This is zlib's crc32_combine (1.2.12+, the
# multmodp/x2nmodp form), written for any width so one routine serves CRC32, CRC32C and
# CRC64NVME. Cost per part is O(log len) multiplications of `width` steps each.


@dataclass(frozen=True)
class _ReflectedCrc:
    width: int
    poly: int  # bit-reflected generator polynomial

    @property
    def top(self) -> int:
        return 1 << (self.width - 1)  # x^0 in reflected order

    def multmodp(self, a: int, b: int) -> int:
        """a(x) * b(x) mod P, both in reflected representation."""
        m = self.top
        product = 0
        while True:
            if a & m:
                product ^= b
                if (a & (m - 1)) == 0:
                    return product
            m >>= 1
            b = (b >> 1) ^ self.poly if b & 1 else b >> 1
            if m == 0:  # a == 0
                return product


_CRC_PARAMS: dict[str, _ReflectedCrc] = {
    "CRC32": _ReflectedCrc(32, 0xEDB88320),
    "CRC32C": _ReflectedCrc(32, 0x82F63B78),
    "CRC64NVME": _ReflectedCrc(64, 0x9A6C9329AC4BC9B5),
}


@lru_cache(maxsize=None)
def _x2n_table(alg: str) -> tuple[int, ...]:
    """x^(2^k) mod P for k = 0..71: enough for any 64-bit length in bits, no periodicity assumed."""
    crc = _CRC_PARAMS[alg]
    power = crc.top >> 1  # x^1
    table = [power]
    for _ in range(71):
        power = crc.multmodp(power, power)
        table.append(power)
    return tuple(table)


@lru_cache(maxsize=1024)
def _shift_operator(alg: str, length: int) -> int:
    """x^(8*length) mod P: the factor that shifts a CRC past ``length`` zero bytes.

    Cached because most parts of an upload share one length.
    """
    crc = _CRC_PARAMS[alg]
    table = _x2n_table(alg)
    result = crc.top  # x^0
    n, k = length, 3  # 8*length bits = length * 2^3
    while n:
        if n & 1:
            result = crc.multmodp(table[k], result)
        n >>= 1
        k += 1
    return result


def crc_combine(alg: str, crc1: int, crc2: int, len2: int) -> int:
    """The CRC of A||B from crc(A), crc(B) and len(B)."""
    name = normalize_algorithm(alg)
    if name not in _CRC_PARAMS:
        raise InvalidRequest(f"The {name} algorithm cannot be combined; FULL_OBJECT checksums need a CRC.")
    if len2 < 0:
        raise ValueError("negative length")
    if len2 == 0:
        return crc1
    return _CRC_PARAMS[name].multmodp(_shift_operator(name, len2), crc1) ^ crc2


def combine_full_object(alg: str, parts: list[tuple[bytes, int]]) -> bytes:
    """FULL_OBJECT CRC of a multipart object from each part's (raw CRC digest, length).

    SHA algorithms cannot be combined, so S3 offers FULL_OBJECT only for CRCs.
    """
    name = normalize_algorithm(alg)
    if name not in _CRC_PARAMS:
        raise InvalidRequest(
            f"The FULL_OBJECT checksum type is not supported for {name}; use COMPOSITE or a CRC algorithm.")
    size = DIGEST_SIZES[name]
    value = 0  # CRC of the empty string for these parameterisations
    for digest, length in parts:
        if len(digest) != size:
            raise InvalidRequest(f"Value for {header_name(name)} header is invalid.")
        value = crc_combine(name, value, int.from_bytes(digest, "big"), length)
    return value.to_bytes(size, "big")
