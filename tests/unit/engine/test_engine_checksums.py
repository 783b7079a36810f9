"""Flexible checksums computed while streaming a PUT (PutOptions.checksum_algorithms)."""

from __future__ import annotations

import base64

import pytest
from engine_testkit import BLOCK, INLINE, chunks, content

from buckets import checksums
from buckets.engine.types import PutOptions

ALGS = ["CRC32", "CRC32C", "CRC64NVME", "SHA256", "SHA1"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("size", [0, 1, INLINE, 3 * BLOCK + 11])
@pytest.mark.parametrize("alg", ALGS)
async def test_put_computes_the_checksum(store, bucket, alg, size) -> None:
    data = content(f"{alg}{size}", size)
    seen: dict = {}

    async def verify(computed: dict) -> None:
        seen.update(computed)

    info = await store.put_object(bucket, "k", chunks(data, 999), size,
                                  PutOptions(checksum_algorithms=(alg,), verify=verify))
    want = b64(checksums.checksum_of(alg, data))
    assert info.checksums == {alg: want}
    assert info.checksum_type == "FULL_OBJECT"
    assert seen[alg] == want and seen["size"] == size
    head = await store.head_object(bucket, "k")
    assert head.checksums == {alg: want}
    assert head.parts[0].checksums == {alg: want}


async def test_several_algorithms_at_once_and_lower_case_names(store, bucket) -> None:
    data = content("multi", 2 * BLOCK + 5)
    info = await store.put_object(bucket, "k", data, len(data),
                                  PutOptions(checksum_algorithms=("crc32", "SHA256", "crc64nvme")))
    assert info.checksums == {
        "CRC32": b64(checksums.checksum_of("CRC32", data)),
        "SHA256": b64(checksums.checksum_of("SHA256", data)),
        "CRC64NVME": b64(checksums.checksum_of("CRC64NVME", data)),
    }


async def test_no_algorithms_gets_s3s_default_crc64nvme(store, bucket) -> None:
    """An object written without a checksum of the client's gets S3's default: a full-object
    CRC64NVME (published check value of '123456789' below), and only that one."""
    info = await store.put_object(bucket, "k", b"123456789", 9)
    assert info.checksum_type == "FULL_OBJECT"
    assert {alg: base64.b64decode(v).hex() for alg, v in info.checksums.items()} == {"CRC64NVME": "ae8b14860a799888"}
    assert (await store.head_object(bucket, "k")).checksums == info.checksums


async def test_known_vectors(store, bucket) -> None:
    """Independent of buckets.checksums: published check values of '123456789'."""
    info = await store.put_object(bucket, "k", b"123456789", 9,
                                  PutOptions(checksum_algorithms=("CRC32", "CRC32C", "CRC64NVME")))
    assert base64.b64decode(info.checksums["CRC32"]).hex() == "cbf43926"
    assert base64.b64decode(info.checksums["CRC32C"]).hex() == "e3069283"
    assert base64.b64decode(info.checksums["CRC64NVME"]).hex() == "ae8b14860a799888"
