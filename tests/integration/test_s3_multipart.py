"""Multipart uploads through boto3 and s3transfer against a real server process."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from awscrt import checksums as crt
from botocore.exceptions import ClientError

import rawhttp
from s3server import crc64nvme_b64, error_of

MIB = 1024 * 1024
PART = os.urandom(5 * MIB)
PART2 = os.urandom(5 * MIB)
TAIL = os.urandom(1234)


def multipart_etag(*parts: bytes) -> str:
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(md5s).hexdigest()}-{len(parts)}"'


def upload_parts(s3, bucket, key, parts, **create):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    done = []
    for number, data in enumerate(parts, start=1):
        extra = {"ChecksumAlgorithm": create["ChecksumAlgorithm"]} if "ChecksumAlgorithm" in create else {}
        resp = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, **extra)
        entry = {"PartNumber": number, "ETag": resp["ETag"]}
        for name, value in resp.items():
            if name.startswith("Checksum") and name != "ChecksumType":
                entry[name] = value
        done.append(entry)
    return upload_id, done


def test_multipart_roundtrip_and_part_reads(s3, bucket):
    upload_id, parts = upload_parts(s3, bucket, "mp/obj", [PART, PART2, TAIL],
                                    ContentType="video/mp4", Metadata={"origin": "test"})
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("mp/obj", upload_id)]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp/obj", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts})
    assert done["ETag"] == multipart_etag(PART, PART2, TAIL)
    assert done["Key"] == "mp/obj" and done["Bucket"] == bucket and done["Location"]
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)

    head = s3.head_object(Bucket=bucket, Key="mp/obj")
    assert head["ContentLength"] == len(PART) + len(PART2) + len(TAIL)
    assert head["ContentType"] == "video/mp4" and head["Metadata"] == {"origin": "test"}
    got = s3.get_object(Bucket=bucket, Key="mp/obj")["Body"].read()
    assert hashlib.md5(got).digest() == hashlib.md5(PART + PART2 + TAIL).digest()

    part2 = s3.get_object(Bucket=bucket, Key="mp/obj", PartNumber=2)
    assert part2["PartsCount"] == 3 and part2["ContentLength"] == len(PART2)
    assert part2["ContentRange"] == f"bytes {len(PART)}-{2 * len(PART) - 1}/{head['ContentLength']}"
    assert part2["Body"].read() == PART2
    head3 = s3.head_object(Bucket=bucket, Key="mp/obj", PartNumber=3)
    assert head3["ContentLength"] == len(TAIL) and head3["PartsCount"] == 3
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="mp/obj", PartNumber=4)
    assert error_of(exc) == ("InvalidPartNumber", 416)
    attrs = s3.get_object_attributes(Bucket=bucket, Key="mp/obj", ObjectAttributes=["ObjectParts", "ObjectSize"],
                                     MaxParts=2)
    assert attrs["ObjectParts"]["TotalPartsCount"] == 3
    assert [p["PartNumber"] for p in attrs["ObjectParts"]["Parts"]] == [1, 2]
    assert attrs["ObjectParts"]["IsTruncated"] is True


def test_list_parts_pagination(s3, bucket):
    upload_id, parts = upload_parts(s3, bucket, "lp", [b"a" * 100, b"b" * 200, b"c" * 300])
    try:
        seen, marker = [], 0
        while True:
            resp = s3.list_parts(Bucket=bucket, Key="lp", UploadId=upload_id, MaxParts=1,
                                 PartNumberMarker=marker)
            seen += [(p["PartNumber"], p["Size"], p["ETag"]) for p in resp.get("Parts", [])]
            if not resp["IsTruncated"]:
                break
            marker = resp["NextPartNumberMarker"]
        assert seen == [(1, 100, parts[0]["ETag"]), (2, 200, parts[1]["ETag"]), (3, 300, parts[2]["ETag"])]
        assert resp["Initiator"]["ID"] and resp["StorageClass"] == "STANDARD"
    finally:
        s3.abort_multipart_upload(Bucket=bucket, Key="lp", UploadId=upload_id)


def test_list_multipart_uploads_prefix_delimiter_markers(s3, bucket):
    ids = {}
    for key in ("x/1", "x/2", "y/3", "z", "z"):
        ids.setdefault(key, []).append(s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"])
    try:
        resp = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
        assert [p["Prefix"] for p in resp["CommonPrefixes"]] == ["x/", "y/"]
        assert sorted(u["UploadId"] for u in resp["Uploads"]) == sorted(ids["z"])
        resp = s3.list_multipart_uploads(Bucket=bucket, Prefix="x/")
        assert [u["Key"] for u in resp["Uploads"]] == ["x/1", "x/2"]
        seen = []
        kwargs = {"Bucket": bucket, "MaxUploads": 2}
        while True:
            resp = s3.list_multipart_uploads(**kwargs)
            seen += [(u["Key"], u["UploadId"]) for u in resp.get("Uploads", [])]
            if not resp["IsTruncated"]:
                break
            kwargs.update(KeyMarker=resp["NextKeyMarker"], UploadIdMarker=resp["NextUploadIdMarker"])
        assert sorted(seen) == sorted((k, u) for k, us in ids.items() for u in us)
        assert len(seen) == 5
    finally:
        for key, uploads in ids.items():
            for upload_id in uploads:
                s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def test_complete_errors_leave_nothing(server, s3, bucket):
    upload_id, parts = upload_parts(s3, bucket, "bad", [PART, b"small" * 10, TAIL])
    with pytest.raises(ClientError) as exc:  # a non-last part under 5 MiB
        s3.complete_multipart_upload(Bucket=bucket, Key="bad", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts})
    assert error_of(exc) == ("EntityTooSmall", 400)
    wrong = [dict(parts[0], ETag='"00000000000000000000000000000000"')]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="bad", UploadId=upload_id,
                                     MultipartUpload={"Parts": wrong})
    assert error_of(exc) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="bad", UploadId=upload_id,
                                     MultipartUpload={"Parts": [parts[0], parts[0]]})
    assert error_of(exc) == ("InvalidPartOrder", 400)
    # The order of the whole list is judged before any part's size: part 2 is too small,
    # but 3 listed before 2 is what S3 reports.
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="bad", UploadId=upload_id,
                                     MultipartUpload={"Parts": [parts[0], parts[2], parts[1]]})
    assert error_of(exc) == ("InvalidPartOrder", 400)
    with pytest.raises(ClientError) as exc:  # the order problem is past the small part
        s3.complete_multipart_upload(Bucket=bucket, Key="bad", UploadId=upload_id,
                                     MultipartUpload={"Parts": [parts[1], parts[2], parts[0]]})
    assert error_of(exc) == ("InvalidPartOrder", 400)
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="bad", UploadId=upload_id,
                                     MultipartUpload={"Parts": [{"PartNumber": 7, "ETag": parts[0]["ETag"]}]})
    assert error_of(exc) == ("InvalidPart", 400)

    path = f"/{bucket}/bad"
    resp = rawhttp.request(server, "POST", path, query=f"uploadId={upload_id}", body=b"<CompleteMultipartUpload><Part>")
    assert (resp.status, resp.code) == (400, "MalformedXML")
    resp = rawhttp.request(server, "POST", path, query=f"uploadId={upload_id}",
                           body=b"<CompleteMultipartUpload></CompleteMultipartUpload>")
    assert (resp.status, resp.code) == (400, "MalformedXML")
    resp = rawhttp.request(server, "POST", path, query=f"uploadId={upload_id}", body=b"<Other/>")
    assert (resp.status, resp.code) == (400, "MalformedXML")
    huge = b"<CompleteMultipartUpload>" + b"<Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>" * 50000 \
        + b"</CompleteMultipartUpload>"
    resp = rawhttp.request(server, "POST", path, query=f"uploadId={upload_id}", body=huge)
    assert (resp.status, resp.code) == (400, "MalformedXML")

    # Every failure above left the upload intact and created no object.
    assert len(s3.list_parts(Bucket=bucket, Key="bad", UploadId=upload_id)["Parts"]) == 3
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.abort_multipart_upload(Bucket=bucket, Key="bad", UploadId=upload_id)
    for call in (lambda: s3.abort_multipart_upload(Bucket=bucket, Key="bad", UploadId=upload_id),
                 lambda: s3.list_parts(Bucket=bucket, Key="bad", UploadId=upload_id),
                 lambda: s3.upload_part(Bucket=bucket, Key="bad", UploadId=upload_id, PartNumber=1, Body=b"x")):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc) == ("NoSuchUpload", 404)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_part_number_bounds(server, s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="pn")["UploadId"]
    for number in ("0", "10001", "x"):
        resp = rawhttp.request(server, "PUT", f"/{bucket}/pn", query=f"partNumber={number}&uploadId={upload_id}",
                               body=b"data")
        assert (resp.status, resp.code) == (400, "InvalidArgument"), number
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="pn", UploadId=upload_id)
    s3.abort_multipart_upload(Bucket=bucket, Key="pn", UploadId=upload_id)


def test_conditional_complete(s3, bucket):
    s3.put_object(Bucket=bucket, Key="cc", Body=b"existing")
    upload_id, parts = upload_parts(s3, bucket, "cc", [TAIL])
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="cc", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    assert error_of(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="cc")["Body"].read() == b"existing"
    current = s3.head_object(Bucket=bucket, Key="cc")["ETag"]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="cc", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts}, IfMatch=current)
    assert done["ETag"] == multipart_etag(TAIL)
    assert s3.get_object(Bucket=bucket, Key="cc")["Body"].read() == TAIL


def _crc32_b64(data: bytes) -> str:
    return base64.b64encode(crt.crc32(data).to_bytes(4, "big")).decode()


def test_composite_checksum(s3, bucket):
    upload_id, parts = upload_parts(s3, bucket, "ck", [PART, TAIL], ChecksumAlgorithm="CRC32")
    assert parts[0]["ChecksumCRC32"] == _crc32_b64(PART)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="ck", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts})
    raw = base64.b64decode(parts[0]["ChecksumCRC32"]) + base64.b64decode(parts[1]["ChecksumCRC32"])
    expected = f"{_crc32_b64(raw)}-2"
    assert done["ChecksumCRC32"] == expected and done["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == expected and head["ChecksumType"] == "COMPOSITE"
    got = s3.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert got["Body"].read() == PART + TAIL
    part1 = s3.get_object(Bucket=bucket, Key="ck", PartNumber=1, ChecksumMode="ENABLED")
    assert part1["ChecksumCRC32"] == parts[0]["ChecksumCRC32"]
    assert part1["Body"].read() == PART


def test_full_object_checksum(s3, bucket):
    upload_id, parts = upload_parts(s3, bucket, "fo", [PART, TAIL], ChecksumAlgorithm="CRC32",
                                    ChecksumType="FULL_OBJECT")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="fo", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts})
    assert done["ChecksumCRC32"] == _crc32_b64(PART + TAIL)
    assert done["ChecksumType"] == "FULL_OBJECT"
    head = s3.head_object(Bucket=bucket, Key="fo", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == _crc32_b64(PART + TAIL)


def test_invalid_checksum_type_combinations(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.create_multipart_upload(Bucket=bucket, Key="x", ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT")
    assert error_of(exc) == ("InvalidRequest", 400)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_wrong_part_checksum(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="wp", ChecksumAlgorithm="SHA256")["UploadId"]
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="wp", UploadId=upload_id, PartNumber=1, Body=b"data",
                       ChecksumSHA256=wrong)
    assert error_of(exc) == ("BadDigest", 400)
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="wp", UploadId=upload_id)
    s3.abort_multipart_upload(Bucket=bucket, Key="wp", UploadId=upload_id)


def test_upload_file_download_file_20mib(s3, bucket, tmp_path):
    """s3transfer's defaults: 8 MiB parts with CRC32 up, concurrent ranged GETs down."""
    src = tmp_path / "src.bin"
    data = os.urandom(20 * MIB + 4321)
    src.write_bytes(data)
    s3.upload_file(str(src), bucket, "big/file.bin")
    head = s3.head_object(Bucket=bucket, Key="big/file.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-3"')  # 8 + 8 + 4 MiB parts
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "big/file.bin", str(dst))
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_complete_whole_object_claims(s3, bucket):
    """Complete verifies a client's whole-object checksum and size before committing."""
    upload_id, parts = upload_parts(s3, bucket, "claims", [PART, TAIL], ChecksumAlgorithm="CRC32",
                                    ChecksumType="FULL_OBJECT")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="claims", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts}, ChecksumCRC32=_crc32_b64(b"wrong"),
                                     ChecksumType="FULL_OBJECT")
    assert error_of(exc) == ("BadDigest", 400)
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="claims", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts}, MpuObjectSize=5)
    assert error_of(exc) == ("InvalidRequest", 400)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    done = s3.complete_multipart_upload(Bucket=bucket, Key="claims", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts}, ChecksumCRC32=_crc32_b64(PART + TAIL),
                                        ChecksumType="FULL_OBJECT", MpuObjectSize=len(PART) + len(TAIL))
    assert done["ChecksumCRC32"] == _crc32_b64(PART + TAIL)


def test_complete_claims_composite_and_mismatches(s3, bucket):
    """Claims are judged on the object the engine is about to commit: a COMPOSITE value
    with or without its -N suffix, and the wrong algorithm, type or size refused."""
    upload_id, parts = upload_parts(s3, bucket, "comp", [PART, TAIL], ChecksumAlgorithm="CRC32")
    raw = base64.b64decode(parts[0]["ChecksumCRC32"]) + base64.b64decode(parts[1]["ChecksumCRC32"])
    composite = _crc32_b64(raw)
    refused = [
        ({"ChecksumCRC32": _crc32_b64(b"other") + "-2"}, ("BadDigest", 400)),
        ({"ChecksumSHA256": base64.b64encode(hashlib.sha256(b"x").digest()).decode()}, ("InvalidRequest", 400)),
        ({"ChecksumType": "FULL_OBJECT"}, ("InvalidRequest", 400)),
        ({"MpuObjectSize": len(PART) + len(TAIL) + 1}, ("InvalidRequest", 400)),
    ]
    for claim, expected in refused:
        with pytest.raises(ClientError) as exc:
            s3.complete_multipart_upload(Bucket=bucket, Key="comp", UploadId=upload_id,
                                         MultipartUpload={"Parts": parts}, **claim)
        assert error_of(exc) == expected, claim
    # Nothing was committed or consumed by the refusals.
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert len(s3.list_parts(Bucket=bucket, Key="comp", UploadId=upload_id)["Parts"]) == 2
    done = s3.complete_multipart_upload(Bucket=bucket, Key="comp", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts}, ChecksumCRC32=composite,
                                        ChecksumType="COMPOSITE", MpuObjectSize=len(PART) + len(TAIL))
    assert done["ChecksumCRC32"] == f"{composite}-2" and done["ChecksumType"] == "COMPOSITE"


def test_an_upload_created_without_a_checksum_gets_s3s_default_crc64nvme(s3, bucket):
    """Created without an algorithm: each part gets a CRC64NVME, and the object the full-object
    CRC64NVME combined from them (S3's default), which GET checks end to end."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dflt")["UploadId"]
    parts = []
    for number, data in enumerate([PART, TAIL], start=1):
        resp = s3.upload_part(Bucket=bucket, Key="dflt", UploadId=upload_id, PartNumber=number, Body=data)
        assert resp["ChecksumCRC64NVME"] == crc64nvme_b64(data)
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})
    listed = s3.list_parts(Bucket=bucket, Key="dflt", UploadId=upload_id)["Parts"]
    assert [p["ChecksumCRC64NVME"] for p in listed] == [crc64nvme_b64(PART), crc64nvme_b64(TAIL)]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="dflt", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts})
    whole = crc64nvme_b64(PART + TAIL)
    assert (done["ChecksumCRC64NVME"], done["ChecksumType"]) == (whole, "FULL_OBJECT")
    head = s3.head_object(Bucket=bucket, Key="dflt", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC64NVME"], head["ChecksumType"]) == (whole, "FULL_OBJECT")
    got = s3.get_object(Bucket=bucket, Key="dflt")
    assert got["ChecksumCRC64NVME"] == whole
    assert got["Body"].read() == PART + TAIL  # botocore checks the combined checksum


def test_complete_claims_without_upload_checksum(s3, bucket):
    """An upload created without a checksum algorithm: a size claim is still checked, a
    checksum claim names an algorithm the upload does not have."""
    upload_id, parts = upload_parts(s3, bucket, "plain", [TAIL])
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="plain", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts}, ChecksumCRC32=_crc32_b64(TAIL))
    assert error_of(exc) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="plain", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts}, MpuObjectSize=1)
    assert error_of(exc) == ("InvalidRequest", 400)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="plain", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts}, MpuObjectSize=len(TAIL))
    assert done["ETag"] == multipart_etag(TAIL)
