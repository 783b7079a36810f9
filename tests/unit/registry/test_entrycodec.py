"""The compact form of metadata entries: exactly reversible, and smaller where it claims to be."""

from __future__ import annotations

import base64

import msgpack
import pytest
from awscrt import checksums as crt

from buckets.registry.entrycodec import MARK, compact, compactable, expand


def entry(ck: dict, ckt: str | None) -> dict:
    return {
        "wid": "0123456789abcdef0123456789abcdef", "mt": 1764590000.25, "size": 4096,
        "etag": "d41d8cd98f00b204e9800998ecf8427e", "h": {}, "um": {}, "ck": ck, "ckt": ckt,
        "ch": "ab" * 32, "sc": "STANDARD", "k": 2, "m": 2, "bs": 1 << 20, "gen": 1, "inline": True,
        "disks": ["6f1c1d2e-8a53-4d0e-9a7b-1f2e3d4c5b6a"] * 4,
        "parts": [[1, 4096, "d41d8cd98f00b204e9800998ecf8427e", ck, 1764590000.25]],
    }


DEFAULT = base64.b64encode(crt.crc64nvme(b"x" * 4096).to_bytes(8, "big")).decode()


@pytest.mark.parametrize("ck,ckt", [
    ({"CRC64NVME": DEFAULT}, "FULL_OBJECT"),  # S3's default checksum: stored as 8 raw bytes
    ({}, None),
    ({"CRC32": "AAAAAA=="}, "FULL_OBJECT"),
    ({"CRC64NVME": DEFAULT}, "COMPOSITE"),  # not the default's form: kept as it is
    ({"CRC64NVME": DEFAULT, "SHA256": base64.b64encode(b"s" * 32).decode()}, "FULL_OBJECT"),
    ({"CRC64NVME": "not base64!!"}, "FULL_OBJECT"),
    ({"CRC64NVME": DEFAULT.rstrip("=") + "A"}, "FULL_OBJECT"),  # 12 characters, not canonical
], ids=["default", "none", "crc32", "composite", "two", "garbage", "noncanonical"])
def test_compact_then_expand_gives_back_the_same_entry(ck: dict, ckt: str | None) -> None:
    e = entry(ck, ckt)
    assert compactable(e)
    doc = compact(e)
    assert doc[MARK] == 1
    assert expand(msgpack.unpackb(msgpack.packb(doc, use_bin_type=True), raw=False)) == e


def test_the_default_checksum_costs_a_few_bytes_per_copy() -> None:
    with_default = len(msgpack.packb(compact(entry({"CRC64NVME": DEFAULT}, "FULL_OBJECT")), use_bin_type=True))
    without = len(msgpack.packb(compact(entry({}, None)), use_bin_type=True))
    assert with_default - without <= 16  # key and 8 raw bytes, not the 40 of its text form


async def test_a_listing_gives_back_the_etag_and_checksums_the_entry_has(tmp_path) -> None:
    """The registry's listing head stores an MD5 ETag and S3's default checksum as raw bytes;
    a scan gives back the text forms, and any other ETag or checksum as it was."""
    from buckets.registry import Op, Registry

    reg = Registry(str(tmp_path / "reg"), cache_size=0, sync=False)
    reg.start()
    try:
        shapes = {
            "default": ("d41d8cd98f00b204e9800998ecf8427e", {"CRC64NVME": DEFAULT}, "FULL_OBJECT"),
            "multipart": ("d41d8cd98f00b204e9800998ecf8427e-2", {"CRC64NVME": DEFAULT}, "FULL_OBJECT"),
            "composite": ("D41D8CD98F00B204E9800998ECF8427E", {"CRC32": "AAAAAA==-2"}, "COMPOSITE"),
            "none": ("abc", {}, None),
        }
        ops = [Op("put_bucket", "b", value={"created": 1.0})]
        for key, (etag, ck, ckt) in shapes.items():
            e = entry(ck, ckt)
            e["etag"] = e["parts"][0][2] = etag
            ops.append(Op("put_object", "b", key, e))
        await reg.commit(ops)
        objects, _, _ = await reg.list_objects("b", "", "", "", 100)
        got = {k: (e["etag"], e["ck"], e["ckt"]) for k, e in objects}
        assert got == shapes
        assert {k: (e["etag"], e["ck"], e["ckt"]) for k in shapes
                if (e := reg.get_object("b", k)) is not None} == shapes
    finally:
        await reg.close()
