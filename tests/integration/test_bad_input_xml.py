"""Hostile XML request bodies against the real server, over raw sockets.

Every XML body the server accepts (DeleteObjects, CompleteMultipartUpload, the CreateBucket
configuration) x every hostile class (deep nesting, an element flood, oversize, DTDs wherever
they appear, internal/external/parameter entities, billion laughs, processing instructions,
non-UTF-8 encodings, garbage, an empty body where one is required). Each case asserts the
exact status and S3 code, that the server logged no traceback, and that nothing changed:
neither the data directory nor what a client sees (the object a DeleteObjects names is still
there, the upload a Complete names is still in progress, the bucket is not created).

The entity cases are built so that an expanded entity would be visible: it expands to the
name of the key to delete, the part's real ETag, or a LocationConstraint.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from serverproc import no_new_tracebacks, no_new_tracebacks_in

import rawhttp
from s3server import new_bucket_name

MIB = 1024 * 1024
MAX_REQUEST_XML = 2 * MIB  # buckets.s3.xmlio.MAX_REQUEST_XML
MAX_CONFIG_XML = 64 * 1024  # buckets.s3.handlers.bucket.MAX_CONFIG_XML


# --- the documents -------------------------------------------------------------------------
#
# Each hostile class is a function of (root, inner, payload, tmp): `inner` is the valid
# content of the document with "&e;" where an entity is referenced, `payload` what that
# entity expands to (a value that would make the request do something visible if it were
# used), `tmp` a directory for the files external entities point at.


def _doctype(root: str, subset: str) -> str:
    return f"<!DOCTYPE {root} [{subset}]>"


def _lol(payload: str) -> str:
    entities = [f'<!ENTITY lol0 "{payload}">']
    entities += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    return "".join(entities) + '<!ENTITY e "&lol9;">'


def _doc(root: str, inner: str) -> str:
    return f"<{root}>{inner}</{root}>"


HOSTILE: dict[str, Callable[[str, str, str, Path], bytes]] = {
    "deep-nesting-5000": lambda root, inner, payload, tmp: (
        f"<{root}>" + "<a>" * 5000 + "</a>" * 5000 + inner.replace("&e;", payload) + f"</{root}>").encode(),
    "element-flood": lambda root, inner, payload, tmp: (
        f"<{root}>" + inner.replace("&e;", payload) + "<a/>" * 140_000 + f"</{root}>").encode(),
    "doctype-after-long-comment": lambda root, inner, payload, tmp: (
        "<!--" + "x" * 8192 + "-->" + _doctype(root, f'<!ENTITY e "{payload}">') + _doc(root, inner)).encode(),
    "doctype-system": lambda root, inner, payload, tmp: (
        f'<?xml version="1.0"?><!DOCTYPE {root} SYSTEM "file:///etc/passwd">'
        + _doc(root, inner.replace("&e;", payload))).encode(),
    "doctype-system-after-long-comment": lambda root, inner, payload, tmp: (
        "<!--" + "x" * 8192 + f'--><!DOCTYPE {root} SYSTEM "file:///etc/passwd">'
        + _doc(root, inner.replace("&e;", payload))).encode(),
    "utf16-entity-declaration": lambda root, inner, payload, tmp: (
        '<?xml version="1.0" encoding="UTF-16"?>' + _doctype(root, f'<!ENTITY e "{payload}">')
        + _doc(root, inner)).encode("utf-16"),
    "utf16-plain": lambda root, inner, payload, tmp: _doc(root, inner.replace("&e;", payload)).encode("utf-16"),
    "utf16-no-bom": lambda root, inner, payload, tmp: _doc(root, inner.replace("&e;", payload)).encode("utf-16-le"),
    "declared-latin1": lambda root, inner, payload, tmp: (
        '<?xml version="1.0" encoding="ISO-8859-1"?>' + _doc(root, inner.replace("&e;", payload))).encode(),
    "internal-entity": lambda root, inner, payload, tmp: (
        _doctype(root, f'<!ENTITY e "{payload}">') + _doc(root, inner)).encode(),
    "external-entity": lambda root, inner, payload, tmp: (
        _doctype(root, f'<!ENTITY e SYSTEM "{_payload_file(tmp, payload).as_uri()}">') + _doc(root, inner)).encode(),
    "parameter-entity": lambda root, inner, payload, tmp: (
        _doctype(root, f"<!ENTITY % p \"<!ENTITY e '{payload}'>\"> %p;") + _doc(root, inner)).encode(),
    "external-parameter-entity": lambda root, inner, payload, tmp: (
        _doctype(root, f'<!ENTITY % p SYSTEM "{_payload_file(tmp, f"<!ENTITY e {payload!r}>").as_uri()}"> %p;')
        + _doc(root, inner)).encode(),
    "billion-laughs": lambda root, inner, payload, tmp: (
        _doctype(root, _lol(payload)) + _doc(root, inner)).encode(),
    "undefined-entity": lambda root, inner, payload, tmp: _doc(root, inner).encode(),
    "processing-instruction": lambda root, inner, payload, tmp: (
        '<?xml-stylesheet type="text/xsl" href="file:///etc/passwd"?>'
        + _doc(root, inner.replace("&e;", payload))).encode(),
    "processing-instruction-inside": lambda root, inner, payload, tmp: (
        _doc(root, "<?php system('id'); ?>" + inner.replace("&e;", payload))).encode(),
    "invalid-utf8": lambda root, inner, payload, tmp: (
        _doc(root, inner.replace("&e;", payload)).encode().replace(b">", b">\xff\xfe", 1)),
    "garbage": lambda root, inner, payload, tmp: bytes(range(256)) * 8,
    "not-xml": lambda root, inner, payload, tmp: b"not xml at all",
    "wrong-root": lambda root, inner, payload, tmp: _doc("Other", inner.replace("&e;", payload)).encode(),
    "truncated": lambda root, inner, payload, tmp: _doc(root, inner.replace("&e;", payload)).encode()[:-3],
}


def _payload_file(tmp: Path, content: str) -> Path:
    path = tmp / f"payload-{hashlib.md5(content.encode()).hexdigest()}.txt"
    path.write_text(content)
    return path


def oversize(root: str, inner: str, payload: str, limit: int) -> bytes:
    """A well-formed, otherwise valid document just over `limit` bytes."""
    body = _doc(root, inner.replace("&e;", payload)).encode()
    pad = limit + 1024 - len(body)
    return body.replace(b"</", b" " * pad + b"</", 1)


# --- helpers -------------------------------------------------------------------------------


def snapshot(server) -> dict[str, tuple[int, int]]:
    """Every file under the server's data directory with its size and modification time, but
    LMDB's ``lock.mdb``: its reader table, not stored state, is written whenever a thread first
    reads the registry (on a loaded machine a cluster's background reads touched it on every
    node during a 30 s request: cluster4 integration run, session 28). A record log segment by
    its size alone: it is only appended to, and its time also moves when an earlier test's
    removed records are punched out of it (on a cluster 10 s after the removal)."""
    root: Path = server.data_dir
    out = {}
    for path in sorted(root.rglob("*")):
        if path.name == "lock.mdb":
            continue
        try:
            st = path.stat()
        except FileNotFoundError:  # removed while walking: see settled()
            continue
        if path.is_file():
            out[str(path.relative_to(root))] = (st.st_size, 0 if path.suffix == ".seg" else st.st_mtime_ns)
    return out


def settled(server) -> dict[str, tuple[int, int]]:
    """The data directory once the server is quiet: an earlier test's deletes remove old
    writes in the background after answering, so wait until two looks agree (bounded)."""
    previous = snapshot(server)
    for _ in range(100):
        time.sleep(0.05)
        current = snapshot(server)
        if current == previous:
            return current
        previous = current
    raise AssertionError("the data directory kept changing with no request in flight")


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def send(server, method: str, path: str, body: bytes, *, query: str = "",
         headers: dict[str, str] | None = None) -> rawhttp.RawResponse:
    # One node: only the bytes its log gained (the cluster's merged log is read incrementally).
    one_node = hasattr(server, "log_path")
    guard = no_new_tracebacks_in(server.log_path) if one_node else no_new_tracebacks(server.log_text)
    with guard:
        return rawhttp.request(server, method, path, query=query, body=body, headers=headers)


def assert_malformed(resp: rawhttp.RawResponse) -> None:
    assert (resp.status, resp.code) == (400, "MalformedXML"), resp.text[:500]
    assert resp.headers["content-type"] == "application/xml"


CASES = sorted(HOSTILE)


# --- DeleteObjects -------------------------------------------------------------------------

DELETE_INNER = "<Object><Key>&e;</Key></Object>"


def _delete(server, bucket: str, body: bytes) -> rawhttp.RawResponse:
    return send(server, "POST", f"/{bucket}", body, query="delete", headers={"Content-MD5": content_md5(body)})


def _delete_refused(server, s3, bucket: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key="victim", Body=b"still here")
    before = settled(server)
    assert_malformed(_delete(server, bucket, body))
    assert snapshot(server) == before
    assert s3.get_object(Bucket=bucket, Key="victim")["Body"].read() == b"still here"


@pytest.mark.parametrize("case", CASES)
def test_delete_objects_hostile(server, s3, bucket, tmp_path, case):
    _delete_refused(server, s3, bucket, HOSTILE[case]("Delete", DELETE_INNER, "victim", tmp_path))


def test_delete_objects_oversize(server, s3, bucket):
    _delete_refused(server, s3, bucket, oversize("Delete", DELETE_INNER, "victim", MAX_REQUEST_XML))


def test_delete_objects_empty_body(server, s3, bucket):
    _delete_refused(server, s3, bucket, b"")


def test_delete_objects_control(server, s3, bucket):
    """The same request with a well-formed body deletes: the hostile cases fail on their XML."""
    s3.put_object(Bucket=bucket, Key="victim", Body=b"x")
    body = _doc("Delete", DELETE_INNER.replace("&e;", "victim")).encode()
    resp = _delete(server, bucket, body)
    assert resp.status == 200 and b"<Deleted><Key>victim</Key></Deleted>" in resp.body
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_delete_objects_boto3_awkward_keys(s3, bucket):
    """boto3's own DeleteObjects documents, with keys that need escaping, still parse."""
    keys = ["a&b<c>d", "quote\"s'", " spaced ", "tab\there", "日本/ключ", "%2F+?#", "]]>", "&amp;"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    assert sorted(d["Key"] for d in resp["Deleted"]) == sorted(keys) and "Errors" not in resp
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


# --- CompleteMultipartUpload ---------------------------------------------------------------

COMPLETE_INNER = "<Part><PartNumber>1</PartNumber><ETag>&e;</ETag></Part>"


def _complete_refused(server, s3, bucket: str, make_body: Callable[[str], bytes]) -> None:
    """`make_body(etag)`: the hostile document, built around the part's real ETag so that
    an accepted document would complete the upload."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"part one")["ETag"]
    before = settled(server)
    resp = send(server, "POST", f"/{bucket}/mp", make_body(etag.strip('"')), query=f"uploadId={upload_id}")
    assert_malformed(resp)
    assert snapshot(server) == before
    assert [p["ETag"] for p in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)["Parts"]] == [etag]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [upload_id]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


@pytest.mark.parametrize("case", CASES)
def test_complete_multipart_hostile(server, s3, bucket, tmp_path, case):
    _complete_refused(server, s3, bucket,
                      lambda etag: HOSTILE[case]("CompleteMultipartUpload", COMPLETE_INNER, etag, tmp_path))


def test_complete_multipart_oversize(server, s3, bucket):
    _complete_refused(server, s3, bucket,
                      lambda etag: oversize("CompleteMultipartUpload", COMPLETE_INNER, etag, MAX_REQUEST_XML))


def test_complete_multipart_empty_body(server, s3, bucket):
    _complete_refused(server, s3, bucket, lambda etag: b"")


@pytest.mark.parametrize("number", ["9" * 5000, "1" + "0" * 10, "2147483648", "\u00b9", "\u0661", "1.0", "-1", ""],
                         ids=["5000-digits", "11-digits", "over-int32", "superscript", "arabic-indic", "decimal",
                              "negative", "empty"])
def test_complete_multipart_bad_part_number(server, s3, bucket, number):
    """PartNumber is an xs:int: anything else is MalformedXML (5,000 digits used to be a 500)."""
    _complete_refused(server, s3, bucket, lambda etag: _doc(
        "CompleteMultipartUpload", f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>").encode())


@pytest.mark.parametrize("number", ["01", "0" * 20 + "1"], ids=["one-zero", "twenty-zeros"])
def test_complete_multipart_part_number_with_leading_zeros(server, s3, bucket, number):
    """xs:int allows leading zeros: "0" * 20 + "1" is part 1, not an over-long number."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"part one")["ETag"]
    body = _doc("CompleteMultipartUpload",
                f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>").encode()
    resp = send(server, "POST", f"/{bucket}/mp", body, query=f"uploadId={upload_id}")
    assert resp.status == 200 and b"<CompleteMultipartUploadResult" in resp.body, resp.text
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"part one"


def test_complete_multipart_control(server, s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"part one")["ETag"]
    body = _doc("CompleteMultipartUpload", COMPLETE_INNER.replace("&e;", etag.strip('"'))).encode()
    resp = send(server, "POST", f"/{bucket}/mp", body, query=f"uploadId={upload_id}")
    assert resp.status == 200 and b"<CompleteMultipartUploadResult" in resp.body, resp.text
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"part one"


# --- CreateBucket configuration ------------------------------------------------------------

CONFIG_INNER = "<LocationConstraint>&e;</LocationConstraint>"


def _bucket_names(s3) -> list[str]:
    return [b["Name"] for b in s3.list_buckets()["Buckets"]]


def _create_refused(server, s3, body: bytes) -> None:
    name = new_bucket_name("xml")
    before = settled(server)
    assert_malformed(send(server, "PUT", f"/{name}", body))
    assert snapshot(server) == before
    assert name not in _bucket_names(s3)
    assert send(server, "HEAD", f"/{name}", b"").status == 404


@pytest.mark.parametrize("case", CASES)
def test_create_bucket_hostile(server, s3, tmp_path, case):
    _create_refused(server, s3, HOSTILE[case]("CreateBucketConfiguration", CONFIG_INNER, "us-east-1", tmp_path))


def test_create_bucket_oversize(server, s3):
    _create_refused(server, s3, oversize("CreateBucketConfiguration", CONFIG_INNER, "us-east-1", MAX_CONFIG_XML))


@pytest.mark.parametrize("body", [
    b"", b"\r\n", _doc("CreateBucketConfiguration", CONFIG_INNER.replace("&e;", "us-east-1")).encode(),
], ids=["no-configuration", "whitespace", "configuration"])
def test_create_bucket_control(server, s3, body):
    """No body is legal for CreateBucket (the default region); a plain configuration too."""
    name = new_bucket_name("xml")
    resp = send(server, "PUT", f"/{name}", body)
    try:
        assert resp.status == 200, resp.text
        assert name in _bucket_names(s3)
    finally:
        s3.delete_bucket(Bucket=name)
