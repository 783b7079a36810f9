"""Encryption at rest against a real server: SSE-S3, SSE-C and SSE-KMS through boto3 (default
configuration) and the aws cli, bucket default encryption, copies between modes, the errors
S3 answers, the disks holding no plaintext, and a server whose master key file is gone."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import zlib
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from s3server import ROOT_PASSWORD, ROOT_USER, error_of, new_bucket_name, start_server, stop_server
from serverproc import BIN, no_new_tracebacks

KIB, MIB = 1024, 1024 * 1024
PACKAGE = 64 * KIB


def body(size: int, seed: str = "") -> bytes:
    """Distinct bytes for every test object (so a wrong package can never match by chance)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def absent(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def admin(server, tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``buckets-admin`` as an operator runs it, with a private alias file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETS_", "AWS_"))}
    env["BUCKETS_CLIENT_CONFIG"] = str(tmp_path / "aliases.json")
    if not (tmp_path / "aliases.json").exists():
        subprocess.run([str(BIN / "buckets-admin"), "alias", "set", "srv", server.endpoint, ROOT_USER, ROOT_PASSWORD],
                       env=env, check=True, capture_output=True, timeout=60)
    done = subprocess.run([str(BIN / "buckets-admin"), *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def kms_key(server) -> str:
    """A new KMS key, through the admin API (the CLI's own client, without a process per call)."""
    from buckets.admin.client import AdminClient

    name = f"key-{os.urandom(4).hex()}"
    created = AdminClient(server.endpoint, ROOT_USER, ROOT_PASSWORD).call("PUT", f"kms/keys/{name}")
    assert created["arn"] == f"arn:aws:kms:{name}"
    return name


# --- SSE-S3 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1000, 3 * PACKAGE + 7, 300 * KIB])
def test_sse_s3_put_get_range_head_list(s3, bucket, size: int) -> None:
    data = body(size, f"s3-{size}")
    put = s3.put_object(Bucket=bucket, Key="obj", Body=data, ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    assert put["ETag"] == f'"{md5(data)}"'  # SSE-S3 keeps the plaintext MD5
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["ServerSideEncryption"] == "AES256" and got["ContentLength"] == size
    assert got["Body"].read() == data
    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ContentLength"] == size and head["ServerSideEncryption"] == "AES256"
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("obj", size, f'"{md5(data)}"')]
    for first, last in [(0, 0), (PACKAGE - 3, PACKAGE + 3), (size // 2, size - 1), (1, 2 * PACKAGE)]:
        if first <= last < size:
            ranged = s3.get_object(Bucket=bucket, Key="obj", Range=f"bytes={first}-{last}")
            assert ranged["ContentRange"] == f"bytes {first}-{last}/{size}"
            assert ranged["Body"].read() == data[first:last + 1]
    if size:
        suffix = s3.get_object(Bucket=bucket, Key="obj", Range="bytes=-10")["Body"].read()
        assert suffix == data[-10:]
        attrs = s3.get_object_attributes(Bucket=bucket, Key="obj", ObjectAttributes=["ObjectSize", "ETag"])
        assert attrs["ObjectSize"] == size and attrs["ETag"] == md5(data)


def test_checksums_are_over_the_plaintext(s3, bucket) -> None:
    data = body(200 * KIB, "crc")
    put = s3.put_object(Bucket=bucket, Key="crc", Body=data, ServerSideEncryption="AES256", ChecksumAlgorithm="CRC32")
    expected = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert put["ChecksumCRC32"] == expected
    got = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")  # boto3 checks it on read
    assert got["ChecksumCRC32"] == expected and got["Body"].read() == data


def test_sse_s3_multipart_and_part_number(s3, bucket) -> None:
    parts = [body(5 * MIB, "mp1"), body(5 * MIB + 123, "mp2"), body(70 * KIB, "mp3")]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ServerSideEncryption="AES256")
    assert up["ServerSideEncryption"] == "AES256"
    done = []
    for n, part in enumerate(parts, 1):
        res = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=n, Body=part)
        assert res["ServerSideEncryption"] == "AES256" and res["ETag"] == f'"{md5(part)}"'
        done.append({"PartNumber": n, "ETag": res["ETag"]})
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=up["UploadId"])["Parts"]
    assert [p["Size"] for p in listed] == [len(p) for p in parts]
    complete = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up["UploadId"],
                                            MultipartUpload={"Parts": done})
    assert complete["ServerSideEncryption"] == "AES256"
    whole = b"".join(parts)
    md5s = b"".join(bytes.fromhex(md5(p)) for p in parts)
    assert complete["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == whole
    edge = len(parts[0])
    assert s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={edge - 5}-{edge + 4}")["Body"].read() \
        == whole[edge - 5:edge + 5]
    second = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert second["ContentLength"] == len(parts[1]) and second["PartsCount"] == 3
    assert second["Body"].read() == parts[1]
    assert s3.head_object(Bucket=bucket, Key="mp")["ContentLength"] == len(whole)


# --- SSE-C -------------------------------------------------------------------------------------------
def ssec(key: bytes) -> dict:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def test_sse_c_put_get_range_and_wrong_or_missing_key(s3, bucket) -> None:
    key = os.urandom(32)
    key_md5 = base64.b64encode(hashlib.md5(key).digest()).decode()
    data = body(3 * PACKAGE + 500, "ssec")
    put = s3.put_object(Bucket=bucket, Key="c", Body=data, **ssec(key))
    assert put["SSECustomerAlgorithm"] == "AES256" and put["SSECustomerKeyMD5"] == key_md5
    assert put["ETag"] != f'"{md5(data)}"' and "ServerSideEncryption" not in put  # not the MD5, as S3
    got = s3.get_object(Bucket=bucket, Key="c", **ssec(key))
    assert got["SSECustomerKeyMD5"] == key_md5 and got["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="c", Range="bytes=65530-65545", **ssec(key))["Body"].read() \
        == data[65530:65546]
    assert s3.head_object(Bucket=bucket, Key="c", **ssec(key))["ContentLength"] == len(data)

    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", **ssec(os.urandom(32)))
    assert error_of(exc) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c")
    assert error_of(exc) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="c")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="c", **ssec(os.urandom(32)))
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="c", ObjectAttributes=["ObjectSize"])
    assert error_of(exc) == ("InvalidRequest", 400)
    # A key for an object that has none is refused too.
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="plain", **ssec(key))
    assert error_of(exc) == ("InvalidRequest", 400)


@pytest.mark.parametrize(("extra", "code"), [
    ({"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(16)}, "InvalidArgument"),
    ({"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(os.urandom(32)).decode(),
      "SSECustomerKeyMD5": "AAAAAAAAAAAAAAAAAAAAAA=="}, "InvalidArgument"),  # the key's MD5 does not match
    ({"SSECustomerAlgorithm": "DES", "SSECustomerKey": os.urandom(32)}, "InvalidEncryptionAlgorithmError"),
    ({"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(32), "ServerSideEncryption": "AES256"},
     "InvalidArgument"),
    ({"ServerSideEncryption": "rot13"}, "InvalidArgument"),
    ({"ServerSideEncryption": "AES256", "SSEKMSKeyId": "whatever"}, "InvalidArgument"),
    ({"SSEKMSKeyId": "whatever"}, "InvalidArgument"),
    ({"ServerSideEncryption": "aws:kms", "SSEKMSEncryptionContext": "not base64 json"}, "InvalidArgument"),
    ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "no-such-key"}, "KMS.NotFoundException"),
])
def test_bad_encryption_requests_are_refused_and_store_nothing(s3, bucket, extra: dict, code: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="refused", Body=b"data", **extra)
    assert error_of(exc) == (code, 400)
    assert absent(s3, bucket, "refused")


def test_sse_c_multipart_needs_the_key_on_every_part(s3, bucket) -> None:
    key = os.urandom(32)
    up = s3.create_multipart_upload(Bucket=bucket, Key="cmp", **ssec(key))
    assert up["SSECustomerAlgorithm"] == "AES256"
    first, last = body(5 * MIB, "c1"), body(1000, "c2")
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="cmp", UploadId=up["UploadId"], PartNumber=1, Body=first)
    assert error_of(exc) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="cmp", UploadId=up["UploadId"], PartNumber=1, Body=first,
                       **ssec(os.urandom(32)))
    assert error_of(exc) == ("AccessDenied", 403)
    p1 = s3.upload_part(Bucket=bucket, Key="cmp", UploadId=up["UploadId"], PartNumber=1, Body=first, **ssec(key))
    p2 = s3.upload_part(Bucket=bucket, Key="cmp", UploadId=up["UploadId"], PartNumber=2, Body=last, **ssec(key))
    assert p1["ETag"] != f'"{md5(first)}"'
    s3.complete_multipart_upload(Bucket=bucket, Key="cmp", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]}, **ssec(key))
    assert s3.get_object(Bucket=bucket, Key="cmp", **ssec(key))["Body"].read() == first + last
    assert s3.get_object(Bucket=bucket, Key="cmp", PartNumber=2, **ssec(key))["Body"].read() == last


# --- SSE-KMS -----------------------------------------------------------------------------------------
def test_sse_kms_with_named_and_default_keys(server, s3, bucket, tmp_path) -> None:
    name = f"key-{os.urandom(4).hex()}"
    out = admin(server, tmp_path, "kms", "key", "create", "srv", name).stdout
    assert f"Created KMS key {name} (arn:aws:kms:{name})" in out
    listed = json.loads(admin(server, tmp_path, "kms", "key", "list", "srv", "--json").stdout)
    assert listed["master"]["state"] == "ok" and listed["master"]["name"] == "integration-master"
    mine = [k for k in listed["keys"] if k["name"] == name]
    assert len(mine) == 1 and mine[0]["default"] is False and mine[0]["arn"] == f"arn:aws:kms:{name}"
    assert listed["keys"][0]["name"] == "integration-master" and listed["keys"][0]["default"] is True
    again = admin(server, tmp_path, "kms", "key", "create", "srv", name, check=False)
    assert again.returncode == 1 and "exists already" in again.stderr and "Traceback" not in again.stderr

    data = body(150 * KIB, "kms")
    context = base64.b64encode(json.dumps({"department": "finance"}).encode()).decode()
    put = s3.put_object(Bucket=bucket, Key="named", Body=data, ServerSideEncryption="aws:kms", SSEKMSKeyId=name,
                        SSEKMSEncryptionContext=context, BucketKeyEnabled=True)
    assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == f"arn:aws:kms:{name}"
    assert put["BucketKeyEnabled"] is True and put["ETag"] != f'"{md5(data)}"'
    got = s3.get_object(Bucket=bucket, Key="named")
    assert got["SSEKMSKeyId"] == f"arn:aws:kms:{name}" and got["BucketKeyEnabled"] is True
    assert got["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="named", Range="bytes=70000-70010")["Body"].read() == data[70000:70011]
    default = s3.put_object(Bucket=bucket, Key="default", Body=data, ServerSideEncryption="aws:kms")
    assert default["SSEKMSKeyId"] == "arn:aws:kms:integration-master"  # the master key's name
    assert s3.get_object(Bucket=bucket, Key="default")["Body"].read() == data
    # The key id may be sent as an ARN or alias too.
    s3.put_object(Bucket=bucket, Key="arn", Body=b"x", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=f"arn:aws:kms:us-east-1:000000000000:key/{name}")
    assert s3.head_object(Bucket=bucket, Key="arn")["SSEKMSKeyId"] == f"arn:aws:kms:{name}"

    up = s3.create_multipart_upload(Bucket=bucket, Key="kmp", ServerSideEncryption="aws:kms", SSEKMSKeyId=name)
    assert up["SSEKMSKeyId"] == f"arn:aws:kms:{name}"
    part = s3.upload_part(Bucket=bucket, Key="kmp", UploadId=up["UploadId"], PartNumber=1, Body=data)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="kmp", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert done["ServerSideEncryption"] == "aws:kms"
    assert s3.get_object(Bucket=bucket, Key="kmp")["Body"].read() == data


# --- copies ------------------------------------------------------------------------------------------
def test_copy_between_encryption_modes(s3, bucket) -> None:
    key_a, key_b = os.urandom(32), os.urandom(32)
    data = body(2 * PACKAGE + 99, "copy")
    s3.put_object(Bucket=bucket, Key="clear", Body=data)
    # clear -> SSE-S3 -> SSE-C -> SSE-C (another key) -> SSE-KMS -> clear
    s3.copy_object(Bucket=bucket, Key="s3", CopySource={"Bucket": bucket, "Key": "clear"}, ServerSideEncryption="AES256")
    res = s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "s3"}, **ssec(key_a))
    assert res["SSECustomerAlgorithm"] == "AES256"
    res = s3.copy_object(Bucket=bucket, Key="c2", CopySource={"Bucket": bucket, "Key": "c"},
                         CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key_a, **ssec(key_b))
    s3.copy_object(Bucket=bucket, Key="kms", CopySource={"Bucket": bucket, "Key": "c2"},
                   CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key_b,
                   ServerSideEncryption="aws:kms")
    back = s3.copy_object(Bucket=bucket, Key="back", CopySource={"Bucket": bucket, "Key": "kms"})
    assert "ServerSideEncryption" not in back
    assert s3.get_object(Bucket=bucket, Key="back")["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="c2", **ssec(key_b))["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="s3")["ServerSideEncryption"] == "AES256"
    # An SSE-C source without its key cannot be copied.
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="nope", CopySource={"Bucket": bucket, "Key": "c"})
    assert error_of(exc) == ("InvalidRequest", 400)
    # Changing only the encryption makes a copy onto itself legal.
    s3.copy_object(Bucket=bucket, Key="clear", CopySource={"Bucket": bucket, "Key": "clear"},
                   ServerSideEncryption="AES256")
    assert s3.head_object(Bucket=bucket, Key="clear")["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="clear")["Body"].read() == data


def test_upload_part_copy_from_an_sse_c_source(s3, bucket) -> None:
    key = os.urandom(32)
    source = body(5 * MIB + 1000, "upc")
    s3.put_object(Bucket=bucket, Key="src", Body=source, **ssec(key))
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst", ServerSideEncryption="AES256")
    p1 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up["UploadId"], PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes=0-{5 * MIB - 1}",
                             CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key)
    p2 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up["UploadId"], PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes={5 * MIB}-{len(source) - 1}",
                             CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key)
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=up["UploadId"], MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]})
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == source


# --- bucket default encryption -----------------------------------------------------------------------
def test_bucket_default_encryption(server, s3, bucket, tmp_path) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_encryption(Bucket=bucket)
    assert error_of(exc) == ("ServerSideEncryptionConfigurationNotFoundError", 404)
    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
    config = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert config["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert s3.put_object(Bucket=bucket, Key="a", Body=b"default")["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="a")["ServerSideEncryption"] == "AES256"
    up = s3.create_multipart_upload(Bucket=bucket, Key="m")
    assert up["ServerSideEncryption"] == "AES256"
    s3.abort_multipart_upload(Bucket=bucket, Key="m", UploadId=up["UploadId"])
    key = os.urandom(32)
    assert "ServerSideEncryption" not in s3.put_object(Bucket=bucket, Key="c", Body=b"mine", **ssec(key))  # request wins

    name = kms_key(server)
    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": name},
            "BucketKeyEnabled": True}
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
    config = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert config == rule
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me")
    copied = s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "a"})
    assert copied["ServerSideEncryption"] == "aws:kms" and copied["SSEKMSKeyId"] == f"arn:aws:kms:{name}"
    assert copied["BucketKeyEnabled"] is True
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"default"

    bad = [
        ({"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256", "KMSMasterKeyID": name}}]},
         ("InvalidArgument", 400)),
        ({"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "ROT13"}}]}, ("MalformedXML", 400)),
        ({"Rules": []}, ("MalformedXML", 400)),
        ({"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "nope"}}]},
         ("KMS.NotFoundException", 400)),
    ]
    for document, expected in bad:
        with pytest.raises(ClientError) as exc:
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=document)
        assert error_of(exc) == expected, document
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0] == rule

    s3.delete_bucket_encryption(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_encryption(Bucket=bucket)
    assert error_of(exc) == ("ServerSideEncryptionConfigurationNotFoundError", 404)
    assert "ServerSideEncryption" not in s3.put_object(Bucket=bucket, Key="after", Body=b"clear")
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_encryption(Bucket=new_bucket_name("missing"))
    assert error_of(exc) == ("NoSuchBucket", 404)


# --- the disks ---------------------------------------------------------------------------------------
def files_containing(roots: list[Path], needle: bytes) -> list[str]:
    """Every file under ``roots`` holding ``needle``. The server keeps working meanwhile (other
    tests' uploads finish, staging is cleaned): what vanishes during the walk is skipped."""
    hits = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):  # os.walk skips directories that vanish
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    with open(path, "rb") as handle:
                        if needle in handle.read():
                            hits.append(path)
                except OSError:
                    continue  # a file removed while the scan ran
    return hits


def test_raw_disk_files_hold_no_plaintext(server, s3, bucket) -> None:
    marker = b"RECOGNISABLE-PLAINTEXT-" + os.urandom(8).hex().encode()
    small = marker * 4  # inline (metadata file and the registry's small copy)
    big = marker * (2 * MIB // len(marker))  # shard files
    key = os.urandom(32)
    s3.put_object(Bucket=bucket, Key="s3-small", Body=small, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="s3-big", Body=big, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="c-big", Body=big, **ssec(key))
    s3.put_object(Bucket=bucket, Key="kms-small", Body=small, ServerSideEncryption="aws:kms")
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ServerSideEncryption="aws:kms")
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=big)
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    disks = server.disk_dirs()
    assert files_containing(disks, marker) == []
    assert s3.get_object(Bucket=bucket, Key="s3-big")["Body"].read() == big
    # The same bytes stored in the clear are found by the same scan.
    s3.put_object(Bucket=bucket, Key="clear", Body=big)
    assert files_containing(disks, marker)


# --- the aws cli -------------------------------------------------------------------------------------
def test_aws_cli_sse(server, s3, bucket, tmp_path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": ROOT_USER,
           "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    aws_bin = str(BIN / "aws")

    def aws(*args: str) -> str:
        done = subprocess.run([aws_bin, "--endpoint-url", server.endpoint, *args], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"aws {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    (tmp_path / "aws-config").write_text("[default]\ns3 =\n    multipart_threshold = 5MB\n"
                                         "    multipart_chunksize = 5MB\n")
    data = body(6 * MIB + 4321, "awscli")  # over the threshold: a two-part multipart upload
    src, out = tmp_path / "src.bin", tmp_path / "out.bin"
    src.write_bytes(data)
    key_file = tmp_path / "sse-c.key"
    key = os.urandom(32)
    key_file.write_bytes(key)
    name = kms_key(server)

    aws("s3", "cp", str(src), f"s3://{bucket}/s3.bin", "--sse", "AES256")
    assert s3.head_object(Bucket=bucket, Key="s3.bin")["ServerSideEncryption"] == "AES256"
    aws("s3", "cp", str(src), f"s3://{bucket}/kms.bin", "--sse", "aws:kms", "--sse-kms-key-id", name)
    assert s3.head_object(Bucket=bucket, Key="kms.bin")["SSEKMSKeyId"] == f"arn:aws:kms:{name}"
    aws("s3", "cp", str(src), f"s3://{bucket}/c.bin", "--sse-c", "AES256", "--sse-c-key", f"fileb://{key_file}")
    assert s3.get_object(Bucket=bucket, Key="s3.bin")["Body"].read() == data
    aws("s3", "cp", f"s3://{bucket}/kms.bin", str(out))
    assert out.read_bytes() == data
    aws("s3", "cp", f"s3://{bucket}/c.bin", str(out), "--sse-c", "AES256", "--sse-c-key", f"fileb://{key_file}")
    assert out.read_bytes() == data
    # A server-side copy out of SSE-C (multipart: UploadPartCopy with the source's key).
    aws("s3", "cp", f"s3://{bucket}/c.bin", f"s3://{bucket}/copied.bin", "--sse-c-copy-source", "AES256",
        "--sse-c-copy-source-key", f"fileb://{key_file}", "--sse", "AES256")
    assert s3.get_object(Bucket=bucket, Key="copied.bin")["Body"].read() == data
    aws("s3api", "put-bucket-encryption", "--bucket", bucket, "--server-side-encryption-configuration",
        json.dumps({"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}))
    got = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert got["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    aws("s3", "cp", str(src), f"s3://{bucket}/default.bin")
    assert s3.head_object(Bucket=bucket, Key="default.bin")["ServerSideEncryption"] == "AES256"


# --- a lost master key -------------------------------------------------------------------------------
def test_a_lost_master_key_file_is_reported_and_nothing_is_served_wrong(tmp_path) -> None:
    key_file = tmp_path / "keys" / "master.key"
    env = {"BUCKETS_KMS_SECRET_KEY": "", "BUCKETS_KMS_KEY_FILE": str(key_file)}  # the file, not the variable
    srv = start_server(tmp_path / "srv", extra_env=env)  # each start: the same disks, a new log
    name = new_bucket_name("lost")
    data = body(200 * KIB, "lost")
    customer = os.urandom(32)
    try:
        with no_new_tracebacks(srv.log_text):
            s3 = srv.client()
            s3.create_bucket(Bucket=name)
            assert not key_file.exists()  # created the first time encryption is used
            s3.put_object(Bucket=name, Key="s3", Body=data, ServerSideEncryption="AES256")
            assert key_file.exists() and key_file.stat().st_mode & 0o777 == 0o600
            s3.put_object(Bucket=name, Key="kms", Body=data, ServerSideEncryption="aws:kms")
            s3.put_object(Bucket=name, Key="clear", Body=data)
            s3.put_object(Bucket=name, Key="ssec", Body=data, **ssec(customer))
            assert "created the master key" in srv.log_text() and str(key_file) in srv.log_text()
    finally:
        stop_server(srv)
    backup = key_file.read_bytes()
    key_file.unlink()

    srv = start_server(tmp_path / "srv", extra_env=env)
    try:
        with no_new_tracebacks(srv.log_text):
            log = srv.log_text()
            assert "ERROR" in log and f"the master key file {key_file} is missing" in log
            s3 = srv.client()
            for key in ("s3", "kms"):
                with pytest.raises(ClientError) as exc:
                    s3.get_object(Bucket=name, Key=key)
                assert error_of(exc) == ("KMS.KMSInvalidStateException", 400)
                with pytest.raises(ClientError) as exc:
                    s3.get_object(Bucket=name, Key=key, Range="bytes=0-9")
                assert error_of(exc) == ("KMS.KMSInvalidStateException", 400)
            with pytest.raises(ClientError) as exc:
                s3.put_object(Bucket=name, Key="new", Body=b"x", ServerSideEncryption="AES256")
            assert error_of(exc) == ("KMS.KMSInvalidStateException", 400)
            assert not key_file.exists()  # never silently replaced by a new key
            assert absent(s3, name, "new")
            # What needs no master key is served as before.
            assert s3.get_object(Bucket=name, Key="clear")["Body"].read() == data
            assert s3.get_object(Bucket=name, Key="ssec", **ssec(customer))["Body"].read() == data
            assert s3.head_object(Bucket=name, Key="s3")["ContentLength"] == len(data)
    finally:
        stop_server(srv)

    key_file.write_bytes(backup)  # the operator restores the backup
    srv = start_server(tmp_path / "srv", extra_env=env)
    try:
        with no_new_tracebacks(srv.log_text):
            s3 = srv.client()
            assert s3.get_object(Bucket=name, Key="s3")["Body"].read() == data
            assert s3.get_object(Bucket=name, Key="kms")["Body"].read() == data
    finally:
        stop_server(srv)
