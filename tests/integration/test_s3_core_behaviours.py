"""Core behaviours clients hit every day (issue 12, last section), each as AWS answers it:
conditional writes, flexible-checksum mismatches, multipart checksum types, partNumber
reads, copy-source ranges, Content-Encoding, an empty continuation token, SigV2 dates,
expired presigned PUTs and encryption headers.

Every refused write also checks that nothing changed: the key keeps its old bytes (or
still does not exist), the multipart upload keeps its parts and stays open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from unittest import mock
from urllib.parse import urlsplit

import pytest
from awscrt import checksums as crt
from botocore.auth import HmacV1QueryAuth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import rawhttp
from rawhttp import key_path
from s3server import REGION, ROOT_PASSWORD, ROOT_USER, error_of


def _exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404, exc.response
        return False
    return True


def _body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


# --- conditional writes ---------------------------------------------------------------------


def test_if_none_match_with_an_etag_on_put_is_not_implemented_as_on_aws(server, s3, bucket):
    """AWS takes only '*' in a write's If-None-Match: an ETag is 501 NotImplemented naming the
    header (whether the key exists or not, and whether it would match or not)."""
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"original")["ETag"]
    for key, value in (("k", etag), ("k", '"0123456789abcdef0123456789abcdef"'), ("new", etag)):
        resp = rawhttp.request(server, "PUT", key_path(bucket, key), body=b"replacement",
                               headers={"If-None-Match": value})
        assert (resp.status, resp.code) == (501, "NotImplemented"), resp.text
        assert "<Header>If-None-Match</Header>" in resp.text
        assert "A header you provided implies functionality that is not implemented" in resp.text
    assert _body(s3, bucket, "k") == b"original"
    assert not _exists(s3, bucket, "new")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"replacement", IfNoneMatch=etag)
    assert error_of(exc) == ("NotImplemented", 501)
    assert _body(s3, bucket, "k") == b"original"


def test_conditional_put_and_copy(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"two", IfNoneMatch="*")
    assert error_of(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"two", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert error_of(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="absent", Body=b"two", IfMatch=first["ETag"])
    assert error_of(exc) == ("NoSuchKey", 404)
    assert _body(s3, bucket, "k") == b"one" and not _exists(s3, bucket, "absent")
    # CopyObject takes the same write conditions on its destination.
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "src"}, IfNoneMatch="*")
    assert error_of(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "src"},
                       IfNoneMatch=first["ETag"])
    assert error_of(exc) == ("NotImplemented", 501)
    assert _body(s3, bucket, "k") == b"one"
    s3.put_object(Bucket=bucket, Key="k", Body=b"two", IfMatch=first["ETag"])
    assert _body(s3, bucket, "k") == b"two"


def _one_part_upload(s3, bucket: str, key: str) -> tuple[str, list[dict]]:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"multipart body")["ETag"]
    return upload, [{"PartNumber": 1, "ETag": etag}]


def test_conditional_complete_multipart_upload(s3, bucket):
    existing = s3.put_object(Bucket=bucket, Key="k", Body=b"existing")["ETag"]
    upload, parts = _one_part_upload(s3, bucket, "k")
    refusals = (
        ({"IfNoneMatch": existing}, ("NotImplemented", 501)),
        ({"IfNoneMatch": "*"}, ("PreconditionFailed", 412)),
        ({"IfMatch": '"0123456789abcdef0123456789abcdef"'}, ("PreconditionFailed", 412)),
    )
    for conditions, expected in refusals:
        with pytest.raises(ClientError) as exc:
            s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                         MultipartUpload={"Parts": parts}, **conditions)
        assert error_of(exc) == expected, conditions
        # Nothing moved: the old object is there, the upload still open with its part.
        assert _body(s3, bucket, "k") == b"existing"
        assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="k", UploadId=upload)["Parts"]] == [1]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                        MultipartUpload={"Parts": parts}, IfMatch=existing)
    assert done["ETag"].endswith('-1"') and _body(s3, bucket, "k") == b"multipart body"

    upload, parts = _one_part_upload(s3, bucket, "absent")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="absent", UploadId=upload,
                                     MultipartUpload={"Parts": parts}, IfMatch=existing)
    assert error_of(exc) == ("NoSuchKey", 404)
    assert not _exists(s3, bucket, "absent")
    s3.complete_multipart_upload(Bucket=bucket, Key="absent", UploadId=upload,
                                 MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    assert _body(s3, bucket, "absent") == b"multipart body"


# --- flexible checksums ---------------------------------------------------------------------


def _b64(value: int, size: int) -> str:
    return base64.b64encode(value.to_bytes(size, "big")).decode()


CHECKSUMS = {
    "CRC32": lambda data: _b64(crt.crc32(data), 4),
    "CRC32C": lambda data: _b64(crt.crc32c(data), 4),
    "CRC64NVME": lambda data: _b64(crt.crc64nvme(data), 8),
    "SHA1": lambda data: base64.b64encode(hashlib.sha1(data).digest()).decode(),
    "SHA256": lambda data: base64.b64encode(hashlib.sha256(data).digest()).decode(),
}


@pytest.mark.parametrize("alg", sorted(CHECKSUMS))
def test_checksum_mismatch_is_bad_digest(server, s3, bucket, alg):
    data, other = b"the body that is sent", b"some other body"
    wrong, right = CHECKSUMS[alg](other), CHECKSUMS[alg](data)
    header = f"x-amz-checksum-{alg.lower()}"
    s3.put_object(Bucket=bucket, Key="kept", Body=b"kept")
    message = f"The {alg} you specified did not match the calculated checksum."
    for key in ("new", "kept"):
        # In a header ...
        resp = rawhttp.request(server, "PUT", key_path(bucket, key), body=data, headers={header: wrong})
        assert (resp.status, resp.code) == (400, "BadDigest"), resp.text
        assert message in resp.text
        # ... and as the trailer of an aws-chunked body.
        resp = rawhttp.request(server, "PUT", key_path(bucket, key), body=rawhttp.aws_chunked(data, {header: wrong}),
                               headers={"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                        "Content-Encoding": "aws-chunked", "x-amz-trailer": header,
                                        "x-amz-decoded-content-length": str(len(data)),
                                        "x-amz-sdk-checksum-algorithm": alg})
        assert (resp.status, resp.code) == (400, "BadDigest"), resp.text
        assert message in resp.text
    assert _keys(s3, bucket) == ["kept"] and _body(s3, bucket, "kept") == b"kept"
    # The right value is accepted and echoed.
    resp = rawhttp.request(server, "PUT", key_path(bucket, "new"), body=data, headers={header: right})
    assert resp.status == 200 and resp.headers[header] == right, resp.text

    # UploadPart: the part is refused and never listed.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm=alg)["UploadId"]
    resp = rawhttp.request(server, "PUT", key_path(bucket, "mp"), query=f"partNumber=1&uploadId={upload}",
                           body=data, headers={header: wrong})
    assert (resp.status, resp.code) == (400, "BadDigest"), resp.text
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)


# --- multipart checksum types -----------------------------------------------------------------


@pytest.mark.parametrize("alg, requested, expected", [
    ("CRC32", None, "COMPOSITE"),
    ("CRC32", "FULL_OBJECT", "FULL_OBJECT"),
    ("CRC32C", "COMPOSITE", "COMPOSITE"),
    ("CRC64NVME", None, "FULL_OBJECT"),
    ("SHA256", None, "COMPOSITE"),
])
def test_multipart_checksum_type_reported(server, s3, bucket, alg, requested, expected):
    extra = {"ChecksumType": requested} if requested else {}
    created = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm=alg, **extra)
    assert created["ChecksumAlgorithm"] == alg
    assert created["ChecksumType"] == expected
    upload = created["UploadId"]
    parts = []
    for number, body in ((1, b"a" * (5 * 1024 * 1024)), (2, b"tail")):
        part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number, Body=body,
                              ChecksumAlgorithm=alg)
        parts.append({"PartNumber": number, "ETag": part["ETag"], f"Checksum{alg}": part[f"Checksum{alg}"]})
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})
    assert done["ChecksumType"] == expected
    whole = b"a" * (5 * 1024 * 1024) + b"tail"
    if expected == "FULL_OBJECT":
        assert done[f"Checksum{alg}"] == CHECKSUMS[alg](whole)
    else:
        assert done[f"Checksum{alg}"].endswith("-2")
    for read in (s3.head_object, s3.get_object):
        got = read(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
        assert got["ChecksumType"] == expected and got[f"Checksum{alg}"] == done[f"Checksum{alg}"]
        if "Body" in got:
            assert got["Body"].read() == whole
    for method in ("HEAD", "GET"):  # without x-amz-checksum-mode (boto3 asks for it on GET itself)
        plain = rawhttp.request(server, method, key_path(bucket, "mp"))
        assert plain.status == 200 and not any(h.startswith("x-amz-checksum") for h in plain.headers)
    # A single PUT's checksum is always of the full object.
    put = s3.put_object(Bucket=bucket, Key="single", Body=b"single", ChecksumAlgorithm=alg)
    assert put[f"Checksum{alg}"] == CHECKSUMS[alg](b"single")
    assert s3.head_object(Bucket=bucket, Key="single", ChecksumMode="ENABLED")["ChecksumType"] == "FULL_OBJECT"


# --- partNumber reads -------------------------------------------------------------------------


def test_part_number_beyond_the_object_is_416_invalid_part_number(server, s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    parts = []
    for number, body in ((1, b"a" * (5 * 1024 * 1024)), (2, b"tail")):
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number, Body=body)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})
    s3.put_object(Bucket=bucket, Key="single", Body=b"single")

    for key, number, count in (("mp", 3, 2), ("mp", 10000, 2), ("single", 2, 1)):
        resp = rawhttp.request(server, "GET", key_path(bucket, key), query=f"partNumber={number}")
        assert (resp.status, resp.code) == (416, "InvalidPartNumber"), resp.text
        assert "The requested partnumber is not satisfiable" in resp.text
        assert f"<PartNumberRequested>{number}</PartNumberRequested>" in resp.text
        assert f"<ActualPartCount>{count}</ActualPartCount>" in resp.text
        assert rawhttp.request(server, "HEAD", key_path(bucket, key), query=f"partNumber={number}").status == 416
        for read in (s3.get_object, s3.head_object):
            with pytest.raises(ClientError) as exc:
                read(Bucket=bucket, Key=key, PartNumber=number)
            assert error_of(exc)[1] == 416
    got = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert got["Body"].read() == b"tail" and got["PartsCount"] == 2
    assert s3.get_object(Bucket=bucket, Key="single", PartNumber=1)["Body"].read() == b"single"


# --- UploadPartCopy range -----------------------------------------------------------------------


@pytest.mark.parametrize("copy_range", ["bytes=0-5", "bytes=2-100", "bytes=5-6", "bytes=100-200"])
def test_copy_source_range_outside_the_source(server, s3, bucket, copy_range):
    """AWS answers a range not inside the source with 400 InvalidArgument "Range specified is
    not valid for source object of size: N" (a malformed one has its own message)."""
    s3.put_object(Bucket=bucket, Key="src", Body=b"12345")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=copy_range)
    assert error_of(exc) == ("InvalidArgument", 400)
    assert exc.value.response["Error"]["Message"] == "Range specified is not valid for source object of size: 5"
    resp = rawhttp.request(server, "PUT", key_path(bucket, "dst"), query=f"partNumber=1&uploadId={upload}",
                           headers={"x-amz-copy-source": f"/{bucket}/src", "x-amz-copy-source-range": copy_range})
    assert (resp.status, resp.code) == (400, "InvalidArgument")
    assert "<ArgumentName>x-amz-copy-source-range</ArgumentName>" in resp.text
    assert s3.list_parts(Bucket=bucket, Key="dst", UploadId=upload).get("Parts", []) == []
    # The last byte of the source is inside it.
    part = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=1,
                               CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange="bytes=1-4")
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert _body(s3, bucket, "dst") == b"2345"


# --- Content-Encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("sent, stored", [
    ("aws-chunked", None),
    ("aws-chunked,gzip", "gzip"),
    ("gzip, aws-chunked", "gzip"),
    ("AWS-Chunked, br, gzip", "br,gzip"),
    ("gzip", "gzip"),
    ("gzip, br", "gzip, br"),
])
def test_content_encoding_stored_without_aws_chunked(server, s3, bucket, sent, stored):
    data = b"encoded bytes, stored as sent" * 100
    if "aws-chunked" in sent.lower():
        body = rawhttp.aws_chunked(data, {"x-amz-checksum-crc32": CHECKSUMS["CRC32"](data)}, chunk=1000)
        headers = {"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "x-amz-trailer": "x-amz-checksum-crc32",
                   "x-amz-decoded-content-length": str(len(data))}
    else:
        body, headers = data, {}
    resp = rawhttp.request(server, "PUT", key_path(bucket, "k"), body=body, headers={**headers, "Content-Encoding": sent})
    assert resp.status == 200, resp.text
    for method in ("GET", "HEAD"):
        got = rawhttp.request(server, method, key_path(bucket, "k"))
        assert got.headers.get("content-encoding") == stored
    assert _body(s3, bucket, "k") == data
    # A copy keeps what was stored.
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"})
    assert s3.head_object(Bucket=bucket, Key="copy").get("ContentEncoding") == stored


# --- ListObjectsV2 with an empty continuation token -------------------------------------------


def test_list_v2_empty_continuation_token_lists_from_the_start(server, s3, bucket):
    keys = ["bar", "baz", "foo", "quxx"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    resp = rawhttp.request(server, "GET", f"/{bucket}", query="list-type=2&continuation-token=")
    assert resp.status == 200, resp.text
    assert "<ContinuationToken></ContinuationToken>" in resp.text
    assert "<IsTruncated>false</IsTruncated>" in resp.text and "<KeyCount>4</KeyCount>" in resp.text
    listed = s3.list_objects_v2(Bucket=bucket, ContinuationToken="")
    assert listed["ContinuationToken"] == "" and not listed["IsTruncated"]
    assert [o["Key"] for o in listed["Contents"]] == keys
    # An empty token is no token: start-after applies, and paging continues as usual.
    after = s3.list_objects_v2(Bucket=bucket, ContinuationToken="", StartAfter="baz", MaxKeys=1)
    assert [o["Key"] for o in after["Contents"]] == ["foo"] and after["IsTruncated"]
    rest = s3.list_objects_v2(Bucket=bucket, ContinuationToken=after["NextContinuationToken"])
    assert [o["Key"] for o in rest["Contents"]] == ["quxx"]
    # Without the parameter no ContinuationToken element is sent at all.
    plain = rawhttp.request(server, "GET", f"/{bucket}", query="list-type=2")
    assert "ContinuationToken" not in plain.text


# --- SigV2 dates and expired presigned PUTs ---------------------------------------------------------


def _v2_put(server, bucket: str, key: str, body: bytes, date_headers: dict[str, str]):
    """A SigV2 header-signed PUT with exactly ``date_headers`` (Date and/or x-amz-date, or none)."""
    amz = "".join(f"{k.lower()}:{v}\n" for k, v in sorted(date_headers.items()) if k.lower().startswith("x-amz-"))
    date_line = "" if any(k.lower() == "x-amz-date" for k in date_headers) else date_headers.get("Date", "")
    to_sign = f"PUT\n\n\n{date_line}\n{amz}/{bucket}/{key}"
    signature = base64.b64encode(hmac.new(ROOT_PASSWORD.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    return _send(server, "PUT", key_path(bucket, key), body,
                 {**date_headers, "Authorization": f"AWS {ROOT_USER}:{signature}"})


def _send(server, method: str, target: str, body: bytes, headers: dict[str, str]) -> rawhttp.RawResponse:
    """Exactly these headers (plus Host and Content-Length): what a SigV2 or presigned client sends."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return rawhttp.RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


PRE_EPOCH = "Tue, 07 Jul 1950 21:53:04 GMT"


@pytest.mark.parametrize("date_headers", [
    {},
    {"Date": ""},
    {"Date": "Bad Date"},
    {"Date": PRE_EPOCH},
    {"Date": "Wed, 31 Dec 1969 23:59:59 GMT"},
    {"x-amz-date": "Bad Date", "Date": "now"},
    {"x-amz-date": PRE_EPOCH},
], ids=["none", "empty", "invalid", "pre-epoch", "just-before-epoch", "invalid-amz-date", "pre-epoch-amz-date"])
def test_sigv2_without_a_valid_date_is_access_denied(server, s3, bucket, date_headers):
    headers = {k: (formatdate(usegmt=True) if v == "now" else v) for k, v in date_headers.items()}
    resp = _v2_put(server, bucket, "k", b"refused", headers)
    assert (resp.status, resp.code) == (403, "AccessDenied"), resp.text
    assert not _exists(s3, bucket, "k")


def test_sigv2_with_a_valid_date_is_accepted(server, s3, bucket):
    assert _v2_put(server, bucket, "k", b"dated", {"Date": formatdate(usegmt=True)}).status == 200
    assert _v2_put(server, bucket, "k2", b"amz-dated", {"x-amz-date": formatdate(usegmt=True)}).status == 200
    assert _body(s3, bucket, "k") == b"dated" and _body(s3, bucket, "k2") == b"amz-dated"
    # A valid date far from now is a skew, not a missing date.
    resp = _v2_put(server, bucket, "k3", b"old", {"Date": "Thu, 01 Jan 2015 00:00:00 GMT"})
    assert (resp.status, resp.code) == (403, "RequestTimeTooSkewed")
    assert not _exists(s3, bucket, "k3")


def _send_presigned(server, url: str, body: bytes):
    parts = urlsplit(url)
    return _send(server, "PUT", f"{parts.path}?{parts.query}", body, {})


def _presign_v2(server, bucket: str, key: str, expires_in: int) -> str:
    request = AWSRequest(method="PUT", url=f"{server.endpoint}/{bucket}/{key}")
    HmacV1QueryAuth(Credentials(ROOT_USER, ROOT_PASSWORD), expires=expires_in).add_auth(request)
    return request.url


def _presign_v4(server, bucket: str, key: str, signed_at: datetime, expires_in: int) -> str:
    request = AWSRequest(method="PUT", url=f"{server.endpoint}/{bucket}/{key}")
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at.replace(tzinfo=None)):
        S3SigV4QueryAuth(Credentials(ROOT_USER, ROOT_PASSWORD), "s3", REGION, expires=expires_in).add_auth(request)
    return request.url


def test_expired_presigned_put_is_403_and_writes_nothing(server, s3, bucket):
    now = datetime.now(timezone.utc)
    expired = {
        "v2": _presign_v2(server, bucket, "k", -3600),
        "v4": _presign_v4(server, bucket, "k", now - timedelta(hours=2), 3600),
    }
    for version, url in expired.items():
        resp = _send_presigned(server, url, b"too late")
        assert (resp.status, resp.code) == (403, "AccessDenied"), (version, resp.text)
        assert "Request has expired" in resp.text
        assert not _exists(s3, bucket, "k")
    # SigV2 query auth whose Expires is missing, not a number, or before the epoch.
    good = urlsplit(_presign_v2(server, bucket, "k", 3600))
    params = dict(pair.split("=", 1) for pair in good.query.split("&"))
    for expires in (None, "soon", "-1"):
        query = "&".join(f"{k}={v}" for k, v in params.items() if k != "Expires")
        if expires is not None:
            query += f"&Expires={expires}"
        resp = _send(server, "PUT", f"{good.path}?{query}", b"x", {})
        assert (resp.status, resp.code) == (403, "AccessDenied"), (expires, resp.text)
    assert not _exists(s3, bucket, "k")
    # The same URLs, still valid, work.
    assert _send_presigned(server, _presign_v2(server, bucket, "k", 3600), b"v2").status == 200
    assert _send_presigned(server, _presign_v4(server, bucket, "k4", now, 3600), b"v4").status == 200
    assert _body(s3, bucket, "k") == b"v2" and _body(s3, bucket, "k4") == b"v4"


# --- server-side encryption headers ---------------------------------------------------------------


def _sse_c_headers() -> dict[str, str]:
    key = b"k" * 32
    return {"x-amz-server-side-encryption-customer-algorithm": "AES256",
            "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
            "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(key).digest()).decode()}


@pytest.mark.parametrize("headers, code", [
    ({"x-amz-server-side-encryption": "AES256", **_sse_c_headers()}, "InvalidArgument"),
    ({"x-amz-server-side-encryption": "aws:kms", **_sse_c_headers()}, "InvalidArgument"),
    ({"x-amz-server-side-encryption": "AES512"}, "InvalidArgument"),
    ({"x-amz-server-side-encryption": ""}, "InvalidArgument"),
    ({"x-amz-server-side-encryption": "AES256", "x-amz-server-side-encryption-aws-kms-key-id": "k1"},
     "InvalidArgument"),
    ({"x-amz-server-side-encryption-aws-kms-key-id": "k1"}, "InvalidArgument"),
    ({**_sse_c_headers(), "x-amz-server-side-encryption-customer-algorithm": "AES512"},
     "InvalidEncryptionAlgorithmError"),
], ids=["sse-s3+sse-c", "kms+sse-c", "unknown", "empty", "sse-s3+kms-key", "kms-key-alone", "sse-c-unknown"])
def test_conflicting_or_unknown_encryption_headers(server, s3, bucket, headers, code):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    writes = (
        ("PUT", "k", "", b"refused", {}),
        ("POST", "mp", "uploads", b"", {}),
        ("PUT", "copy", "", b"", {"x-amz-copy-source": f"/{bucket}/src"}),
    )
    for method, key, query, body, extra in writes:
        resp = rawhttp.request(server, method, key_path(bucket, key), query=query, body=body,
                               headers={**extra, **headers})
        assert (resp.status, resp.code) == (400, code), (method, key, resp.text)
    assert _keys(s3, bucket) == ["src"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
