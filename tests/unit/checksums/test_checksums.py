"""Flexible checksums: check values, streaming, header names, base64 validation, COMPOSITE and
FULL_OBJECT multipart checksums (the CRC combination checked against the CRC of the concatenation)."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
from awscrt import checksums as crt
from hypothesis import given, settings
from hypothesis import strategies as st

from buckets import checksums
from buckets.errors import InvalidArgument, InvalidRequest

# The catalogued "check" value of each CRC (CRC RevEng) and the SHA digests, for b"123456789".
CHECK_VALUES = {
    "CRC32": "cbf43926",
    "CRC32C": "e3069283",
    "CRC64NVME": "ae8b14860a799888",
    "SHA1": "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
    "SHA256": "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
}


@pytest.mark.parametrize("alg", checksums.ALGORITHMS)
def test_check_values(alg: str) -> None:
    checksum = checksums.new_checksum(alg)
    checksum.update(b"123456789")
    assert checksum.digest().hex() == CHECK_VALUES[alg]
    assert checksum.b64() == base64.b64encode(bytes.fromhex(CHECK_VALUES[alg])).decode()
    assert len(checksum.digest()) == checksums.DIGEST_SIZES[alg]


@pytest.mark.parametrize("alg", checksums.ALGORITHMS)
def test_streaming_equals_one_shot_and_copy_forks(alg: str) -> None:
    data = bytes(range(256)) * 50
    running = checksums.new_checksum(alg.lower())  # names are case-insensitive
    for start in range(0, len(data), 777):
        running.update(memoryview(data)[start:start + 777])
    assert running.digest() == checksums.checksum_of(alg, data)
    fork = running.copy()
    fork.update(b"more")
    assert running.digest() == checksums.checksum_of(alg, data)
    assert fork.digest() == checksums.checksum_of(alg, data + b"more")


def test_empty_input_digests() -> None:
    assert checksums.checksum_of("CRC32", b"") == b"\0\0\0\0"
    assert checksums.checksum_of("CRC64NVME", b"") == b"\0" * 8
    assert checksums.checksum_of("SHA256", b"") == hashlib.sha256(b"").digest()


def test_crc32_is_zlibs() -> None:
    assert checksums.checksum_of("CRC32", b"hello world") == zlib.crc32(b"hello world").to_bytes(4, "big")


def test_unknown_algorithm() -> None:
    with pytest.raises(InvalidArgument):
        checksums.new_checksum("MD5")
    with pytest.raises(InvalidArgument):
        checksums.header_name("crc16")


def test_header_names() -> None:
    assert checksums.header_name("crc32") == "x-amz-checksum-crc32"
    assert checksums.header_name("CRC64NVME") == "x-amz-checksum-crc64nvme"
    assert checksums.alg_from_header("X-Amz-Checksum-CRC32C") == "CRC32C"
    assert checksums.alg_from_header("x-amz-checksum-sha256") == "SHA256"
    for not_a_value in ("x-amz-checksum-mode", "x-amz-checksum-type", "x-amz-checksum-algorithm", "content-md5"):
        assert checksums.alg_from_header(not_a_value) is None
    for alg in checksums.ALGORITHMS:
        assert checksums.alg_from_header(checksums.header_name(alg)) == alg


def test_validate_b64() -> None:
    good = base64.b64encode(checksums.checksum_of("CRC32", b"x")).decode()
    assert checksums.validate_b64("crc32", good) == checksums.checksum_of("CRC32", b"x")
    for bad in ("", "AAAA", "not base64!", base64.b64encode(b"\0" * 8).decode(), good + "AAAA", "AAAAAA=="[:-1]):
        with pytest.raises(InvalidRequest) as info:
            checksums.validate_b64("CRC32", bad)
        assert info.value.message == "Value for x-amz-checksum-crc32 header is invalid."
    with pytest.raises(InvalidRequest) as info:
        checksums.validate_b64("SHA256", good)
    assert info.value.message == "Value for x-amz-checksum-sha256 header is invalid."


def test_composite_format() -> None:
    parts = [b"part one", b"part two", b"three"]
    digests = [checksums.checksum_of("CRC32", p) for p in parts]
    expected = base64.b64encode(zlib.crc32(b"".join(digests)).to_bytes(4, "big")).decode()
    assert checksums.composite("CRC32", digests) == f"{expected}-3"
    sha_digests = [hashlib.sha256(p).digest() for p in parts]
    expected_sha = base64.b64encode(hashlib.sha256(b"".join(sha_digests)).digest()).decode()
    assert checksums.composite("sha256", sha_digests) == f"{expected_sha}-3"


def test_full_object_is_refused_for_sha() -> None:
    with pytest.raises(InvalidRequest):
        checksums.combine_full_object("SHA256", [(hashlib.sha256(b"a").digest(), 1)])
    with pytest.raises(InvalidRequest):
        checksums.combine_full_object("CRC32", [(b"\0" * 8, 1)])  # wrong digest size


def test_full_object_edge_cases() -> None:
    assert checksums.combine_full_object("CRC32", []) == checksums.checksum_of("CRC32", b"")
    one = checksums.checksum_of("CRC32C", b"solo")
    assert checksums.combine_full_object("CRC32C", [(one, 4)]) == one
    empty_part = checksums.checksum_of("CRC64NVME", b"")
    data = b"abc" * 1000
    assert checksums.combine_full_object(
        "CRC64NVME", [(checksums.checksum_of("CRC64NVME", data), len(data)), (empty_part, 0)]
    ) == checksums.checksum_of("CRC64NVME", data)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=6),
       alg=st.sampled_from(checksums.CRC_ALGORITHMS))
def test_full_object_equals_crc_of_concatenation(data: bytes, cuts: list[int], alg: str) -> None:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])] or [data]
    parts = [(checksums.checksum_of(alg, piece), len(piece)) for piece in pieces]
    assert checksums.combine_full_object(alg, parts) == checksums.checksum_of(alg, data)


@pytest.mark.parametrize("alg,crt_combine", [
    ("CRC32", crt.combine_crc32), ("CRC32C", crt.combine_crc32c), ("CRC64NVME", crt.combine_crc64nvme),
])
def test_combine_agrees_with_awscrt_for_huge_lengths(alg: str, crt_combine) -> None:
    """Multi-GiB part lengths, impossible to hash in a test, checked against awscrt's own combine."""
    a, b = 0x1234_5678_9ABC_DEF0 & (2 ** (8 * checksums.DIGEST_SIZES[alg]) - 1), 0x0F0E_0D0C
    for length in (1, 5 * 2**20, 5 * 2**30 + 7, 5 * 2**40):
        assert checksums.crc_combine(alg, a, b, length) == crt_combine(a, b, length)
