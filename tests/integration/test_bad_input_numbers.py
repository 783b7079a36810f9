"""Hostile numbers in every numeric header and query parameter, against the real server.

One case per parameter x form: 5,000 digits (Python's int() refuses more than 4,300 and
used to turn them into a 500), negative, non-digit, a non-ASCII digit ("²" passes
str.isdigit() yet int() refuses it; "٣" int() accepts), beyond the parameter's limit, a
leading "+", whitespace and "1_0" (both accepted by int()). Each case asserts the exact
status and S3 code (and ArgumentName for InvalidArgument), that nothing changed (the
bucket's objects and uploads as S3 reports them, and the files under the data
directory), and, through the autouse `no_server_bugs` fixture of conftest.py, that the
server logged no traceback. Range follows S3: only a well-formed single range that
starts past the end is a 416; one S3 cannot use is ignored (200, whole object); huge
ends are clamped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import re
import socket
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

import rawhttp
from s3server import ROOT_PASSWORD, ROOT_USER, empty_and_delete, error_of, new_bucket_name

HUGE = "9" * 5000  # over Python's 4,300-digit int() limit
BODY = bytes(range(256)) * 4  # the 1 KiB object ranges are read from
SIZE = len(BODY)
INT32_OVER = str(2**31)

# form -> value, for numbers in query parameters and headers. "whitespace" is inside the
# value: HTTP strips a header's surrounding whitespace before anyone sees it.
FORMS = {
    "5000-digits": HUGE,
    "negative": "-1",
    "non-digit": "abc",
    "superscript-digit": "\u00b2",
    "arabic-indic-digit": "\u0663",
    "leading-plus": "+5",
    "whitespace": "1 0",
    "underscore": "1_0",
    "decimal-point": "5.0",
}


def send(server, method: str, path: str, *, query: str = "", headers: dict[str, str] | None = None,
         body: bytes = b"") -> rawhttp.RawResponse:
    """A SigV4-signed request (botocore's signer), header values sent as UTF-8 so that
    non-ASCII digits reach the server exactly as signed."""
    target = path + (f"?{query}" if query else "")
    host = f"127.0.0.1:{server.port}"
    hdrs = rawhttp.sign(method, f"http://{host}{target}",
                        {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", **(headers or {})}, body)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in hdrs.items():
            conn.putheader(name, value.encode("utf-8"))
        if body or method in ("PUT", "POST"):
            if not any(name.lower() == "content-length" for name in hdrs):
                conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return rawhttp.RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def argument_name(resp: rawhttp.RawResponse) -> str | None:
    m = re.search(r"<ArgumentName>([^<]*)</ArgumentName>", resp.text)
    return m.group(1) if m else None


# --- what "nothing changed" means -------------------------------------------------------------


def s3_state(s3, bucket: str) -> tuple:
    objects = tuple((o["Key"], o["ETag"], o["Size"]) for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    uploads = []
    for up in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        parts = s3.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts", [])
        uploads.append((up["Key"], up["UploadId"], tuple((p["PartNumber"], p["ETag"]) for p in parts)))
    return objects, tuple(uploads)


def disk_files(server) -> set[str]:
    """Every file under the disks but a cluster's control-plane journal and snapshot, which
    pysyncobj rewrites at its own pace, whatever the clients do."""
    return {str(p.relative_to(server.data_dir)) for p in server.data_dir.rglob("*")
            if p.is_file() and "control" not in p.parts}


@contextmanager
def unchanged(server, s3, bucket: str):
    state, files = s3_state(s3, bucket), disk_files(server)
    yield
    assert s3_state(s3, bucket) == state
    now = disk_files(server)
    assert now == files, {"added": sorted(now - files), "removed": sorted(files - now)}


@contextmanager
def unchanged_s3(nums):
    """For boto3 calls, which read the state themselves."""
    before = s3_state(nums.s3, nums.bucket)
    yield
    assert s3_state(nums.s3, nums.bucket) == before


# --- fixtures ------------------------------------------------------------------------------------


class Fixture:
    def __init__(self, s3, bucket: str, upload_id: str) -> None:
        self.s3, self.bucket, self.upload_id = s3, bucket, upload_id


@pytest.fixture(scope="module")
def nums(server, s3):
    """A bucket with a 1 KiB object, an empty one, and an open upload holding one part."""
    name = new_bucket_name("num")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="obj", Body=BODY)
    s3.put_object(Bucket=name, Key="empty", Body=b"")
    upload_id = s3.create_multipart_upload(Bucket=name, Key="up")["UploadId"]
    s3.upload_part(Bucket=name, Key="up", UploadId=upload_id, PartNumber=1, Body=b"first part")
    yield Fixture(s3, name, upload_id)
    empty_and_delete(s3, name)


# --- integer query parameters: InvalidArgument ---------------------------------------------------

# (operation, path, query before the parameter, parameter, a value just beyond its limit)
LIST_PARAMS = [
    ("ListObjectsV2", "/{b}", "list-type=2&", "max-keys", INT32_OVER),
    ("ListObjects", "/{b}", "", "max-keys", INT32_OVER),
    ("ListObjectVersions", "/{b}", "versions&", "max-keys", INT32_OVER),
    ("ListMultipartUploads", "/{b}", "uploads&", "max-uploads", INT32_OVER),
    ("ListParts", "/{b}/up", "uploadId={u}&", "max-parts", INT32_OVER),
    ("ListParts", "/{b}/up", "uploadId={u}&", "part-number-marker", INT32_OVER),
    ("ListBuckets", "/", "", "max-buckets", "10001"),
]


@pytest.mark.parametrize("form", [*FORMS, "beyond-limit"])
@pytest.mark.parametrize("operation,path,prefix,param,beyond", LIST_PARAMS,
                         ids=[f"{p[0]}-{p[3]}" for p in LIST_PARAMS])
def test_list_limits_refuse_bad_numbers(server, nums, operation, path, prefix, param, beyond, form):
    value = beyond if form == "beyond-limit" else FORMS[form]
    query = prefix.format(u=nums.upload_id) + f"{param}={quote(value, safe='')}"
    with unchanged(server, nums.s3, nums.bucket):
        resp = send(server, "GET", path.format(b=nums.bucket), query=query)
    assert (resp.status, resp.code) == (400, "InvalidArgument"), resp.text
    assert argument_name(resp) == param


def test_list_limits_accept_what_s3_accepts(server, nums):
    """The neighbours that must keep working: leading zeros, the cap, zero where allowed."""
    resp = send(server, "GET", f"/{nums.bucket}", query="list-type=2&max-keys=" + "0" * 5000 + "1")
    assert resp.status == 200 and "<MaxKeys>1</MaxKeys>" in resp.text and "<IsTruncated>true" in resp.text
    resp = send(server, "GET", f"/{nums.bucket}", query=f"list-type=2&max-keys={2**31 - 1}")
    assert resp.status == 200 and "<MaxKeys>1000</MaxKeys>" in resp.text
    assert nums.s3.list_parts(Bucket=nums.bucket, Key="up", UploadId=nums.upload_id, MaxParts=0)["MaxParts"] == 0
    resp = send(server, "GET", "/", query="max-buckets=10000")
    assert resp.status == 200
    resp = send(server, "GET", "/", query="max-buckets=0")
    assert (resp.status, resp.code, argument_name(resp)) == (400, "InvalidArgument", "max-buckets")


# --- partNumber: GetObject, HeadObject, UploadPart, UploadPartCopy -------------------------------

PART_FORMS = {**FORMS, "zero": "0", "beyond-limit": "10001", "empty": ""}


@pytest.mark.parametrize("form", PART_FORMS)
@pytest.mark.parametrize("operation", ["GetObject", "HeadObject", "UploadPart", "UploadPartCopy"])
def test_part_number_refused(server, nums, operation, form):
    value = quote(PART_FORMS[form], safe="")
    with unchanged(server, nums.s3, nums.bucket):
        if operation == "GetObject":
            resp = send(server, "GET", f"/{nums.bucket}/obj", query=f"partNumber={value}")
        elif operation == "HeadObject":
            resp = send(server, "HEAD", f"/{nums.bucket}/obj", query=f"partNumber={value}")
        else:
            copy = {"x-amz-copy-source": f"/{nums.bucket}/obj"} if operation == "UploadPartCopy" else {}
            resp = send(server, "PUT", f"/{nums.bucket}/up", query=f"partNumber={value}&uploadId={nums.upload_id}",
                        headers=copy, body=b"" if copy else b"would-be part")
    if operation == "HeadObject":  # no body: the status is all a HEAD error carries
        assert resp.status == 400
        return
    assert (resp.status, resp.code, argument_name(resp)) == (400, "InvalidArgument", "partNumber"), resp.text


def test_part_number_bounds_that_work(server, nums):
    got = nums.s3.get_object(Bucket=nums.bucket, Key="obj", PartNumber=1)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206 and got["Body"].read() == BODY
    assert got["ContentRange"] == f"bytes 0-{SIZE - 1}/{SIZE}"
    resp = send(server, "GET", f"/{nums.bucket}/obj", query="partNumber=10000")
    assert (resp.status, resp.code) == (416, "InvalidPartNumber")
    resp = send(server, "GET", f"/{nums.bucket}/obj", query="partNumber=0001")
    assert resp.status == 206 and resp.body == BODY


# --- Range ------------------------------------------------------------------------------------------

# header -> (status, body slice or S3 code)
RANGES = {
    f"bytes={HUGE}-": (416, "InvalidRange"),
    f"bytes={HUGE}-{HUGE}": (416, "InvalidRange"),
    f"bytes={SIZE}-{HUGE}": (416, "InvalidRange"),
    f"bytes=0-{HUGE}": (206, slice(0, SIZE)),
    f"bytes=-{HUGE}": (206, slice(0, SIZE)),
    f"bytes=5-{HUGE}": (206, slice(5, SIZE)),
    f"bytes={'0' * 5000}5-9": (206, slice(5, 10)),
    f"bytes={HUGE}-5": (200, slice(0, SIZE)),  # last before first: ignored, as S3
    f"bytes=9{HUGE}-{HUGE}": (200, slice(0, SIZE)),  # the same, both beyond the object
    "bytes=-0": (416, "InvalidRange"),
    "bytes=+5-": (200, slice(0, SIZE)),
    "bytes=-+5": (200, slice(0, SIZE)),
    "bytes=--5": (200, slice(0, SIZE)),
    "bytes=\u0663-": (200, slice(0, SIZE)),
    "bytes=\u00b2-": (200, slice(0, SIZE)),
    "bytes=1 0-": (200, slice(0, SIZE)),
    "bytes=1_0-": (200, slice(0, SIZE)),
    "bytes=5.0-": (200, slice(0, SIZE)),
}


def _range_id(header: str) -> str:
    return re.sub(r"(\d)\1{20,}", lambda m: f"<{len(m.group(0))}x{m.group(1)}>", header)


@pytest.mark.parametrize("header", RANGES, ids=[_range_id(h) for h in RANGES])
def test_range_numbers(server, nums, header):
    status, want = RANGES[header]
    for method in ("GET", "HEAD"):
        with unchanged(server, nums.s3, nums.bucket):
            resp = send(server, method, f"/{nums.bucket}/obj", headers={"Range": header})
        assert resp.status == status, (method, resp.text)
        if status == 416:
            assert resp.headers["content-range"] == f"bytes */{SIZE}"
            if method == "GET":
                assert resp.code == want
            continue
        expected = BODY[want]
        assert int(resp.headers["content-length"]) == len(expected)
        if status == 206:
            assert resp.headers["content-range"] == f"bytes {want.start}-{want.stop - 1}/{SIZE}"
        else:
            assert "content-range" not in resp.headers
        if method == "GET":
            assert resp.body == expected


def test_huge_ranges_with_boto3(nums):
    with pytest.raises(ClientError) as exc:
        nums.s3.get_object(Bucket=nums.bucket, Key="obj", Range=f"bytes={HUGE}-")
    assert error_of(exc) == ("InvalidRange", 416)
    got = nums.s3.get_object(Bucket=nums.bucket, Key="obj", Range=f"bytes=0-{HUGE}")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206 and got["Body"].read() == BODY
    got = nums.s3.get_object(Bucket=nums.bucket, Key="obj", Range=f"bytes=-{HUGE}")
    assert got["ContentRange"] == f"bytes 0-{SIZE - 1}/{SIZE}" and got["Body"].read() == BODY


# header -> status on an empty object (AWS: a suffix range is the whole, empty, object with
# 200; every other well-formed range is unsatisfiable; an unusable one is ignored)
EMPTY_RANGES = {
    "bytes=-5": 200,
    f"bytes=-{HUGE}": 200,
    "bytes=0-": 416,
    "bytes=0-0": 416,
    f"bytes=0-{HUGE}": 416,
    f"bytes={HUGE}-": 416,
    "bytes=-0": 416,
    "bytes=5-1": 200,
    "bytes=abc": 200,
}


@pytest.mark.parametrize("header", EMPTY_RANGES, ids=[_range_id(h) for h in EMPTY_RANGES])
def test_ranges_on_an_empty_object(server, nums, header):
    for method in ("GET", "HEAD"):
        with unchanged(server, nums.s3, nums.bucket):
            resp = send(server, method, f"/{nums.bucket}/empty", headers={"Range": header})
        assert resp.status == EMPTY_RANGES[header], (method, resp.text)
        if resp.status == 416:
            assert resp.headers["content-range"] == "bytes */0"
            if method == "GET":
                assert resp.code == "InvalidRange"
        else:
            assert "content-range" not in resp.headers  # never "bytes 0--1/0"
            assert resp.headers["content-length"] == "0" and resp.body == b""


def test_empty_object_suffix_range_and_part_with_boto3(nums):
    got = nums.s3.get_object(Bucket=nums.bucket, Key="empty", Range="bytes=-5")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200 and got["Body"].read() == b""
    assert "ContentRange" not in got
    got = nums.s3.get_object(Bucket=nums.bucket, Key="empty", PartNumber=1)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200 and got["Body"].read() == b""
    assert "ContentRange" not in got
    with pytest.raises(ClientError) as exc:
        nums.s3.get_object(Bucket=nums.bucket, Key="empty", PartNumber=2)
    assert error_of(exc) == ("InvalidPartNumber", 416)
    with pytest.raises(ClientError) as exc:
        nums.s3.get_object(Bucket=nums.bucket, Key="empty", Range="bytes=0-")
    assert error_of(exc) == ("InvalidRange", 416)


# --- x-amz-copy-source-range ----------------------------------------------------------------------

COPY_RANGES = [
    f"bytes=0-{HUGE}",
    f"bytes={HUGE}-{HUGE}",
    f"bytes={HUGE}-5",
    f"bytes=0-{SIZE}",
    "bytes=-1-5",
    "bytes=+0-5",
    "bytes=\u0660-5",
    "bytes=0-1_0",
    "bytes=0 -5",
    "bytes=5-1",
    "bytes=0-",
    "bytes=-5",
]


@pytest.mark.parametrize("header", COPY_RANGES, ids=[_range_id(h) for h in COPY_RANGES])
def test_copy_source_range_refused(server, nums, header):
    with unchanged(server, nums.s3, nums.bucket):
        resp = send(server, "PUT", f"/{nums.bucket}/up", query=f"partNumber=2&uploadId={nums.upload_id}",
                    headers={"x-amz-copy-source": f"/{nums.bucket}/obj", "x-amz-copy-source-range": header})
    assert (resp.status, resp.code, argument_name(resp)) == (400, "InvalidArgument", "x-amz-copy-source-range"), \
        resp.text


def test_copy_source_range_with_boto3(nums):
    with unchanged_s3(nums):
        with pytest.raises(ClientError) as exc:
            nums.s3.upload_part_copy(Bucket=nums.bucket, Key="up", UploadId=nums.upload_id, PartNumber=2,
                                     CopySource={"Bucket": nums.bucket, "Key": "obj"},
                                     CopySourceRange=f"bytes=0-{HUGE}")
    assert error_of(exc) == ("InvalidArgument", 400)


# --- GetObjectAttributes: x-amz-max-parts, x-amz-part-number-marker --------------------------------


@pytest.mark.parametrize("form", [*FORMS, "beyond-limit"])
@pytest.mark.parametrize("header", ["x-amz-max-parts", "x-amz-part-number-marker"])
def test_object_attributes_numbers(server, nums, header, form):
    value = INT32_OVER if form == "beyond-limit" else FORMS[form]
    resp = send(server, "GET", f"/{nums.bucket}/obj", query="attributes",
                headers={"x-amz-object-attributes": "ObjectParts,ObjectSize", header: value})
    assert (resp.status, resp.code, argument_name(resp)) == (400, "InvalidArgument", header), resp.text


def test_object_attributes_numbers_that_work(server, nums):
    resp = send(server, "GET", f"/{nums.bucket}/obj", query="attributes",
                headers={"x-amz-object-attributes": "ObjectSize", "x-amz-max-parts": "5000",
                         "x-amz-part-number-marker": "0" * 5000})
    assert resp.status == 200 and f"<ObjectSize>{SIZE}</ObjectSize>" in resp.text


# --- body lengths: x-amz-decoded-content-length, Content-Length ------------------------------------

DECODED = {**{form: (400, "InvalidRequest") for form in FORMS}, "5000-digits": (400, "EntityTooLarge"),
           "beyond-limit": (400, "EntityTooLarge")}


@pytest.mark.parametrize("form", DECODED)
def test_decoded_content_length(server, nums, form):
    value = str(5 * 1024**3 + 1) if form == "beyond-limit" else FORMS[form]
    body = rawhttp.aws_chunked(b"hello", {})
    with unchanged(server, nums.s3, nums.bucket):
        resp = send(server, "PUT", f"/{nums.bucket}/chunked", body=body, headers={
            "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": value})
    assert (resp.status, resp.code) == DECODED[form], resp.text


@pytest.mark.parametrize("value", [HUGE, "99999999999999999999"], ids=["5000-digits", "20-digits"])
def test_content_length_overflow_is_refused_by_http(server, nums, value):
    """The HTTP parser itself refuses a Content-Length it cannot hold: 400, nothing stored."""
    with unchanged(server, nums.s3, nums.bucket):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"PUT /{nums.bucket}/cl HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\nabc".encode())
            reply = sock.recv(65536)
    assert reply.split(b"\r\n", 1)[0] in (b"HTTP/1.0 400 Bad Request", b"HTTP/1.1 400 Bad Request"), reply[:200]


# --- x-amz-mp-object-size on CompleteMultipartUpload ----------------------------------------------


@pytest.mark.parametrize("form", [*FORMS, "wrong-size"])
def test_mp_object_size(server, nums, form):
    value = "11" if form == "wrong-size" else FORMS[form]
    etag = nums.s3.list_parts(Bucket=nums.bucket, Key="up", UploadId=nums.upload_id)["Parts"][0]["ETag"]
    xml = (f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part>"
           f"</CompleteMultipartUpload>").encode()
    with unchanged(server, nums.s3, nums.bucket):
        resp = send(server, "POST", f"/{nums.bucket}/up", query=f"uploadId={nums.upload_id}", body=xml,
                    headers={"x-amz-mp-object-size": value})
    assert (resp.status, resp.code) == (400, "InvalidRequest"), resp.text


# --- presigned URLs: X-Amz-Expires (SigV4), Expires (SigV2) ---------------------------------------


@pytest.mark.parametrize("form", [*FORMS, "zero", "beyond-limit"])
def test_presigned_v4_expires(server, nums, form):
    value = {"zero": "0", "beyond-limit": "604801"}.get(form) or FORMS[form]
    v4 = server.client(signature_version="s3v4")
    url = v4.generate_presigned_url("get_object", Params={"Bucket": nums.bucket, "Key": "obj"}, ExpiresIn=60)
    target = url.split(str(server.port), 1)[1]
    assert "X-Amz-Expires=60" in target
    target = target.replace("X-Amz-Expires=60", f"X-Amz-Expires={quote(value, safe='')}")
    resp = rawhttp.request(server, "GET", target, signed=False)
    assert (resp.status, resp.code) == (400, "AuthorizationQueryParametersError"), resp.text


def _sigv2_url(server, bucket: str, key: str, expires: str) -> str:
    # rawhttp.request always sends x-amz-content-sha256, which SigV2 signs as an x-amz- header
    to_sign = f"GET\n\n\n{expires}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n/{bucket}/{key}"
    signature = base64.b64encode(hmac.new(ROOT_PASSWORD.encode(), to_sign.encode(), hashlib.sha1).digest())
    return (f"/{bucket}/{key}?AWSAccessKeyId={ROOT_USER}&Expires={quote(expires, safe='')}"
            f"&Signature={quote(signature.decode(), safe='')}")


@pytest.mark.parametrize("form", [form for form in FORMS if form != "5000-digits"])  # that one: below
def test_presigned_v2_expires_refused(server, nums, form):
    resp = rawhttp.request(server, "GET", _sigv2_url(server, nums.bucket, "obj", FORMS[form]), signed=False)
    assert (resp.status, resp.code) == (403, "AccessDenied"), resp.text


@pytest.mark.parametrize("digits", [20, 400, 5000])
def test_presigned_v2_far_future_expires(server, nums, digits):
    """A signed Expires of any length is a time far in the future (400 digits overflowed a
    float conversion before: a 500 for a correctly signed URL)."""
    resp = rawhttp.request(server, "GET", _sigv2_url(server, nums.bucket, "obj", "9" * digits), signed=False)
    assert resp.status == 200 and resp.body == BODY


# --- admin API: live settings take JSON numbers ---------------------------------------------------


@pytest.mark.parametrize("number", ["9" * 400, "1e400", "-1"], ids=["400-digits", "1e400", "negative"])
def test_admin_config_numbers(server, number):
    body = f'{{"scanner_mb_rate": {number}}}'.encode()
    headers = {"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), "Content-Type": "application/json"}
    resp = send(server, "PUT", "/_buckets/admin/v1/config", headers=headers, body=body)
    assert resp.status == 400 and '"InvalidArgument"' in resp.text, resp.text
    resp = send(server, "GET", "/_buckets/admin/v1/config",
                headers={"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
    assert resp.status == 200 and number not in resp.text
