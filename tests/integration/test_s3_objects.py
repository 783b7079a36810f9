"""Single-object operations through boto3 (default config) against a real server process."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import socket

import pytest
from botocore.exceptions import ClientError

import rawhttp
from s3server import crc64nvme_b64, error_of, new_bucket_name

MEDIUM = os.urandom(3 * 1024 * 1024 + 12345)  # spans several erasure blocks


def absent(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        return err.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def test_put_get_head_roundtrip_with_headers(s3, bucket):
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    put = s3.put_object(
        Bucket=bucket, Key="dir/file.txt", Body=MEDIUM, ContentType="text/plain",
        ContentEncoding="identity", ContentDisposition='attachment; filename="f.txt"',
        ContentLanguage="en", CacheControl="max-age=60", Expires=expires,
        Metadata={"color": "blue", "Mixed-Case": "Value"})
    assert put["ETag"] == f'"{hashlib.md5(MEDIUM).hexdigest()}"'
    headers = put["ResponseMetadata"]["HTTPHeaders"]
    assert headers["server"] == "Buckets" and headers["x-amz-request-id"] and headers["x-amz-id-2"]
    assert "x-amz-checksum-crc32" in headers  # boto3 sent CRC32 by default; S3 echoes it

    got = s3.get_object(Bucket=bucket, Key="dir/file.txt")
    assert got["Body"].read() == MEDIUM
    assert got["ContentLength"] == len(MEDIUM)
    assert got["ContentType"] == "text/plain"
    assert got["ContentDisposition"] == 'attachment; filename="f.txt"'
    assert got["ContentLanguage"] == "en"
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentEncoding"] == "identity"
    assert got["Expires"] == expires
    assert got["Metadata"] == {"color": "blue", "mixed-case": "Value"}
    assert got["AcceptRanges"] == "bytes"

    head = s3.head_object(Bucket=bucket, Key="dir/file.txt")
    assert head["ContentLength"] == len(MEDIUM)
    assert head["ETag"] == put["ETag"]
    assert head["Metadata"] == got["Metadata"]
    assert head["LastModified"] == got["LastModified"]


def test_empty_object_and_default_content_type(s3, bucket):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["Body"].read() == b""
    assert got["ContentType"] == "binary/octet-stream"
    assert got["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'


def test_response_overrides(s3, bucket):
    s3.put_object(Bucket=bucket, Key="o", Body=b"data", ContentType="text/plain")
    got = s3.get_object(Bucket=bucket, Key="o", ResponseContentType="application/json",
                        ResponseContentDisposition="inline", ResponseCacheControl="no-cache",
                        ResponseContentLanguage="de", ResponseContentEncoding="gzip",
                        ResponseExpires=datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc))
    assert got["ContentType"] == "application/json"
    assert got["ContentDisposition"] == "inline"
    assert got["CacheControl"] == "no-cache"
    assert got["ContentLanguage"] == "de"
    assert got["ContentEncoding"] == "gzip"
    assert got["Body"].read() == b"data"
    assert s3.head_object(Bucket=bucket, Key="o")["ContentType"] == "text/plain"  # not stored


def test_metadata_too_large(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="big-meta", Body=b"x", Metadata={"k": "v" * 2100})
    assert error_of(exc) == ("MetadataTooLarge", 400)
    assert absent(s3, bucket, "big-meta")
    s3.put_object(Bucket=bucket, Key="ok-meta", Body=b"x", Metadata={"k": "v" * 2000})


def test_content_md5(server, s3, bucket):
    body = b"checked body"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="md5", Body=body, ContentMD5=good)
    s3.put_object(Bucket=bucket, Key="keep", Body=b"original")

    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="bad-md5", Body=body, ContentMD5=wrong)
    assert error_of(exc) == ("BadDigest", 400)
    assert absent(s3, bucket, "bad-md5")
    # An overwrite with a bad digest leaves the old object untouched.
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="keep", Body=body, ContentMD5=wrong)
    assert error_of(exc) == ("BadDigest", 400)
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"original"

    resp = rawhttp.request(server, "PUT", f"/{bucket}/bad-md5", body=body, headers={"Content-MD5": "not base64!"})
    assert (resp.status, resp.code) == (400, "InvalidDigest")
    resp = rawhttp.request(server, "PUT", f"/{bucket}/bad-md5", body=body,
                           headers={"Content-MD5": base64.b64encode(b"short").decode()})
    assert (resp.status, resp.code) == (400, "InvalidDigest")
    assert absent(s3, bucket, "bad-md5")


@pytest.mark.parametrize("alg", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_flexible_checksums_roundtrip(s3, bucket, alg):
    put = s3.put_object(Bucket=bucket, Key=f"ck-{alg}", Body=MEDIUM, ChecksumAlgorithm=alg)
    value = put[f"Checksum{alg}"]
    assert value
    head = s3.head_object(Bucket=bucket, Key=f"ck-{alg}", ChecksumMode="ENABLED")
    assert head[f"Checksum{alg}"] == value
    assert head["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key=f"ck-{alg}", ChecksumMode="ENABLED")
    assert got[f"Checksum{alg}"] == value
    assert got["Body"].read() == MEDIUM  # botocore validates the checksum while reading
    attrs = s3.get_object_attributes(Bucket=bucket, Key=f"ck-{alg}",
                                     ObjectAttributes=["Checksum", "ETag", "ObjectSize", "StorageClass"])
    assert attrs["Checksum"][f"Checksum{alg}"] == value
    assert attrs["ObjectSize"] == len(MEDIUM)
    assert attrs["ETag"] == hashlib.md5(MEDIUM).hexdigest()
    assert attrs["StorageClass"] == "STANDARD"


@pytest.mark.parametrize("size", [0, 4096, len(MEDIUM)], ids=["empty", "small", "medium"])
def test_an_object_put_without_a_checksum_gets_s3s_default_crc64nvme(server, s3, bucket, size):
    """S3 gives an object uploaded without any checksum a full-object CRC64NVME: the PUT
    answers it, HEAD and GET (checksum mode) report it, botocore checks it on GET, listings
    name the algorithm, and a copy keeps it."""
    body = MEDIUM[:size]
    expected = crc64nvme_b64(body)
    put = rawhttp.request(server, "PUT", f"/{bucket}/plain", body=body)  # no checksum header at all
    assert put.status == 200, put.text
    assert put.headers["x-amz-checksum-crc64nvme"] == expected
    assert put.headers["x-amz-checksum-type"] == "FULL_OBJECT"
    head = s3.head_object(Bucket=bucket, Key="plain", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC64NVME"], head["ChecksumType"]) == (expected, "FULL_OBJECT")
    got = s3.get_object(Bucket=bucket, Key="plain")  # boto3 asks for checksums and checks this one
    assert got["ChecksumCRC64NVME"] == expected
    assert got["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["ChecksumAlgorithm"], o["ChecksumType"]) for o in listed] == \
        [("plain", ["CRC64NVME"], "FULL_OBJECT")]
    copied = s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "plain"})
    assert copied["CopyObjectResult"]["ChecksumCRC64NVME"] == expected
    if size:
        ranged = s3.get_object(Bucket=bucket, Key="copy", Range="bytes=0-0", ChecksumMode="ENABLED")
        assert "ChecksumCRC64NVME" not in ranged  # a range is not the object: no whole-object checksum
    # A client's own checksum is the one the object keeps (no second one beside it).
    s3.put_object(Bucket=bucket, Key="crc32", Body=body, ChecksumAlgorithm="CRC32")
    head = s3.head_object(Bucket=bucket, Key="crc32", ChecksumMode="ENABLED")
    assert "ChecksumCRC32" in head and "ChecksumCRC64NVME" not in head


@pytest.mark.parametrize("header,value", [
    ("x-amz-write-offset-bytes", "11"),  # S3's append (directory buckets): here it would overwrite
    ("x-amz-object-lock-event-hold", "ON"),  # a hold not kept would leave the object deletable
    ("x-amz-object-lock-event-hold-duration-days", "1"),
])
def test_write_features_not_implemented_are_refused_not_ignored(server, s3, bucket, header, value):
    """501 before the body is read, for a PUT and a CreateMultipartUpload, and nothing changes."""
    s3.put_object(Bucket=bucket, Key="log", Body=b"first line\n")
    resp = rawhttp.request(server, "PUT", f"/{bucket}/log", body=b"second line\n", headers={header: value})
    assert (resp.status, resp.code) == (501, "NotImplemented"), resp.text
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"first line\n"
    resp = rawhttp.request(server, "POST", f"/{bucket}/log", query="uploads=", headers={header: value})
    assert (resp.status, resp.code) == (501, "NotImplemented"), resp.text
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_abort_on_a_directory_bucket_condition_is_refused(server, s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    resp = rawhttp.request(server, "DELETE", f"/{bucket}/big", query=f"uploadId={upload_id}",
                           headers={"x-amz-if-match-initiated-time": "Wed, 01 Jan 2025 00:00:00 GMT"})
    assert (resp.status, resp.code) == (501, "NotImplemented"), resp.text
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload_id]
    s3.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=upload_id)


def test_wrong_checksum_is_bad_digest(server, s3, bucket):
    wrong = base64.b64encode(b"\x00\x00\x00\x01").decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="bad-ck", Body=b"payload", ChecksumCRC32=wrong)
    assert error_of(exc) == ("BadDigest", 400)
    assert absent(s3, bucket, "bad-ck")
    resp = rawhttp.request(server, "PUT", f"/{bucket}/bad-ck", body=b"payload",
                           headers={"x-amz-checksum-sha256": "tooshort"})
    assert (resp.status, resp.code) == (400, "InvalidRequest")
    resp = rawhttp.request(server, "PUT", f"/{bucket}/bad-ck", body=b"payload",
                           headers={"x-amz-checksum-crc32": wrong, "x-amz-checksum-sha1": "AAAA"})
    assert (resp.status, resp.code) == (400, "InvalidRequest")
    assert absent(s3, bucket, "bad-ck")


def test_ranges(server, s3, bucket):
    body = bytes(range(256)) * 40  # 10240 bytes
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    got = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert got["Body"].read() == body[10:20]
    assert got["ContentRange"] == f"bytes 10-19/{len(body)}"
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    got = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10000-")
    assert got["Body"].read() == body[10000:]
    got = s3.get_object(Bucket=bucket, Key="r", Range="bytes=-7")
    assert got["Body"].read() == body[-7:]
    assert got["ContentRange"] == f"bytes {len(body) - 7}-{len(body) - 1}/{len(body)}"
    got = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10200-99999")  # clipped at the end
    assert got["Body"].read() == body[10200:]

    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(body)}-")
    assert error_of(exc) == ("InvalidRange", 416)
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["content-range"] == f"bytes */{len(body)}"

    # Several ranges, or a range S3 cannot parse: the whole object with 200, as S3 does.
    for header in ("bytes=0-1,5-6", "bytes=abc", "bytes=9-3", "items=0-5"):
        got = s3.get_object(Bucket=bucket, Key="r", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 200, header
        assert got["Body"].read() == body
    head = s3.head_object(Bucket=bucket, Key="r", Range="bytes=0-99")
    assert head["ContentLength"] == 100 and head["ResponseMetadata"]["HTTPStatusCode"] == 206
    resp = rawhttp.request(server, "GET", f"/{bucket}/r", headers={"Range": "bytes=20000-"})
    assert (resp.status, resp.code) == (416, "InvalidRange")


def test_conditional_get_and_head(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    etag = put["ETag"]
    lm = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    before = lm - datetime.timedelta(hours=1)

    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert error_of(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert error_of(exc)[1] == 304
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=lm)  # not modified since then
    assert error_of(exc)[1] == 304
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=before)["ContentLength"] == 11
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=before)
    assert error_of(exc) == ("PreconditionFailed", 412)
    # S3 precedence: If-Match true wins over If-Unmodified-Since false ...
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=before)["ContentLength"] == 11
    # ... and If-None-Match false (ETag matches) with If-Modified-Since true is still 304.
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag, IfModifiedSince=before)
    assert error_of(exc)[1] == 304
    assert s3.get_object(Bucket=bucket, Key="c", IfNoneMatch='"other"', IfModifiedSince=lm)["ContentLength"] == 11
    # HEAD answers the same statuses, without a body.
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="c", IfMatch='"nope"')
    assert error_of(exc)[1] == 412
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="c", IfNoneMatch="*")
    assert error_of(exc)[1] == 304
    # Preconditions are decided before an unsatisfiable range.
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"nope"', Range="bytes=500-")
    assert error_of(exc) == ("PreconditionFailed", 412)


def test_conditional_writes(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="cw", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="cw", Body=b"two", IfNoneMatch="*")
    assert error_of(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="cw")["Body"].read() == b"one"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="cw", Body=b"two", IfMatch='"00000000000000000000000000000000"')
    assert error_of(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="cw")["Body"].read() == b"one"
    s3.put_object(Bucket=bucket, Key="cw", Body=b"two", IfMatch=first["ETag"])
    assert s3.get_object(Bucket=bucket, Key="cw")["Body"].read() == b"two"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="cw-missing", Body=b"x", IfMatch=first["ETag"])
    assert error_of(exc) == ("NoSuchKey", 404)


def test_conditional_increments_in_a_versioned_bucket_never_lose_one(server, bucket):
    """Read-modify-write with If-Match from four clients (on a cluster, through different
    nodes) in a versioned bucket: every acknowledged write is one step of one sequence, each
    a version of its own; a refused one (412, 409) adds none."""
    from concurrent.futures import ThreadPoolExecutor

    clients = [server.client() for _ in range(4)]
    clients[0].put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    clients[0].put_object(Bucket=bucket, Key="n", Body=b"0", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        clients[0].put_object(Bucket=bucket, Key="n", Body=b"0", IfNoneMatch="*")
    assert error_of(exc) == ("PreconditionFailed", 412)

    def worker(i: int) -> list[int]:
        won = []
        while len(won) < 4:
            got = clients[i].get_object(Bucket=bucket, Key="n")
            value = int(got["Body"].read())
            try:
                clients[i].put_object(Bucket=bucket, Key="n", Body=str(value + 1).encode(), IfMatch=got["ETag"])
            except ClientError as exc:
                assert exc.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"), \
                    exc.response
                continue
            won.append(value + 1)
        return won

    with ThreadPoolExecutor(4) as pool:
        won = sorted(v for part in pool.map(worker, range(4)) for v in part)
    assert won == list(range(1, 17))
    assert clients[1].get_object(Bucket=bucket, Key="n")["Body"].read() == b"16"
    versions = clients[2].list_object_versions(Bucket=bucket, Prefix="n")["Versions"]
    assert sorted(int(clients[2].get_object(Bucket=bucket, Key="n", VersionId=v["VersionId"])["Body"].read())
                  for v in versions) == list(range(17))


def test_racing_conditional_writes_have_one_winner(server, bucket):
    """Eight ``If-None-Match: *`` PUTs of one key at once (on a cluster, through different
    nodes): exactly one is acknowledged, the others answer 412 (the object was there when they
    began) or 409 ConditionalRequestConflict (they lost at commit), and the object is the
    winner's."""
    from concurrent.futures import ThreadPoolExecutor

    clients = [server.client() for _ in range(8)]

    def put(i: int):
        try:
            clients[i].put_object(Bucket=bucket, Key="race", Body=f"body-{i}".encode(), IfNoneMatch="*")
            return i
        except ClientError as exc:
            return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(put, range(8)))
    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(winners) == 1, outcomes
    assert all(o in (("PreconditionFailed", 412), ("ConditionalRequestConflict", 409))
               for o in outcomes if not isinstance(o, int)), outcomes
    assert clients[0].get_object(Bucket=bucket, Key="race")["Body"].read() == f"body-{winners[0]}".encode()


def test_key_length_limit(s3, bucket):
    key_1024 = "k" * 1024
    s3.put_object(Bucket=bucket, Key=key_1024, Body=b"max")
    assert s3.get_object(Bucket=bucket, Key=key_1024)["Body"].read() == b"max"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"too long")
    assert error_of(exc) == ("KeyTooLongError", 400)
    # Multi-byte: 342 x 3-byte characters = 1026 bytes.
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="€" * 342, Body=b"too long")
    assert error_of(exc) == ("KeyTooLongError", 400)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [key_1024]


@pytest.mark.parametrize("key", [
    "with space.txt", "plus+sign", "percent%2Fslash", "a//double", "unicode-é-日本", "trailing space ",
    "semi;colon&amp=eq?q#hash", "~tilde", "x" * 200 + "/deep/nested/path",
])
def test_special_keys(s3, bucket, key):
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == [key]
    listed = [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]]
    assert listed == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    assert absent(s3, bucket, key)


def test_invalid_object_names(server, s3, bucket):
    # NUL is the one character refused in a key; dot segments and control characters are
    # ordinary keys (tests/integration/test_bad_input_names.py).
    for path in (f"/{bucket}/nul%00byte", f"/{bucket}/%00", f"/{bucket}/a/%00/b"):
        resp = rawhttp.request(server, "PUT", path, body=b"x")
        assert (resp.status, resp.code) == (400, "InvalidArgument"), (path, resp.text)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_delete_is_idempotent(s3, bucket):
    s3.put_object(Bucket=bucket, Key="d", Body=b"x")
    assert s3.delete_object(Bucket=bucket, Key="d")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=bucket, Key="d")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert absent(s3, bucket, "d")
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=new_bucket_name("missing"), Key="d")
    assert error_of(exc) == ("NoSuchBucket", 404)


def test_missing_object_and_bucket(server, s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="nope")
    assert error_of(exc) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=new_bucket_name("missing"), Key="nope")
    assert error_of(exc) == ("NoSuchBucket", 404)
    resp = rawhttp.request(server, "HEAD", f"/{bucket}/nope")
    assert resp.status == 404 and resp.body == b""
    assert resp.headers["x-amz-request-id"]
    resp = rawhttp.request(server, "GET", f"/{bucket}/nope")
    assert resp.code == "NoSuchKey" and f"<Resource>/{bucket}/nope</Resource>" in resp.text
    assert "<RequestId>" in resp.text


def test_missing_content_length(server, s3, bucket):
    """A PUT with neither Content-Length nor chunked encoding is 411 MissingContentLength."""
    headers = rawhttp.sign("PUT", f"http://127.0.0.1:{server.port}/{bucket}/nolen",
                           {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, b"")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        lines = [f"PUT /{bucket}/nolen HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 411"), reply
    assert "<Code>MissingContentLength</Code>" in reply
    assert absent(s3, bucket, "nolen")


def test_chunked_transfer_encoding_upload(server, s3, bucket):
    body = os.urandom(200_000)
    url = f"http://127.0.0.1:{server.port}/{bucket}/chunked"
    headers = rawhttp.sign("PUT", url, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, b"")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        lines = [f"PUT /{bucket}/chunked HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Transfer-Encoding: chunked"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for i in range(0, len(body), 65536):
            piece = body[i:i + 65536]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 200"), reply
    assert s3.get_object(Bucket=bucket, Key="chunked")["Body"].read() == body


def test_storage_class(s3, bucket):
    s3.put_object(Bucket=bucket, Key="rr", Body=MEDIUM, StorageClass="REDUCED_REDUNDANCY")
    head = s3.head_object(Bucket=bucket, Key="rr")
    assert head["StorageClass"] == "REDUCED_REDUNDANCY"
    assert s3.get_object(Bucket=bucket, Key="rr")["Body"].read() == MEDIUM
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert listed[0]["StorageClass"] == "REDUCED_REDUNDANCY"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="glacier", Body=b"x", StorageClass="GLACIER")
    assert error_of(exc) == ("InvalidStorageClass", 400)
    assert absent(s3, bucket, "glacier")


def test_unsupported_write_features_are_refused(s3, bucket):
    # (Encryption at rest is implemented: tests/integration/test_s3_sse.py; tagging and object
    # lock: test_tagging.py, test_object_lock.py.)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="redirect", Body=b"x", WebsiteRedirectLocation="/elsewhere")
    assert error_of(exc) == ("NotImplemented", 501)
    assert absent(s3, bucket, "redirect")


def test_virtual_host_style(server, bucket, monkeypatch):
    """`<bucket>.s3.buckets.test` resolves to the server (the name is patched to 127.0.0.1)."""
    real = socket.getaddrinfo

    def fake_getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith("s3.buckets.test"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    import boto3
    from botocore.config import Config

    from s3server import ROOT_PASSWORD, ROOT_USER

    vclient = boto3.client("s3", endpoint_url=f"http://s3.buckets.test:{server.port}", region_name="us-east-1",
                           aws_access_key_id=ROOT_USER, aws_secret_access_key=ROOT_PASSWORD,
                           config=Config(s3={"addressing_style": "virtual"}))
    put = vclient.put_object(Bucket=bucket, Key="v/host.txt", Body=b"virtual")
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    got = vclient.get_object(Bucket=bucket, Key="v/host.txt")
    assert got["Body"].read() == b"virtual"
    assert [o["Key"] for o in vclient.list_objects_v2(Bucket=bucket)["Contents"]] == ["v/host.txt"]
    vclient.delete_object(Bucket=bucket, Key="v/host.txt")
    assert vclient.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
