"""The admin API's own refusals, seen on the wire (the CLI never sends these)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from opsserver import ROOT_PASSWORD, ROOT_USER, Server

PREFIX = "/_buckets/admin/v1"


def send(server: Server, method: str, path: str, body: bytes = b"", *, sign: bool = True,
         signed_body: bytes | None = None) -> tuple[int, dict, dict]:
    url = server.url + PREFIX + path
    headers = {}
    if sign:
        claimed = body if signed_body is None else signed_body
        request = AWSRequest(method=method, url=url, data=claimed,
                             headers={"X-Amz-Content-SHA256": hashlib.sha256(claimed).hexdigest()})
        SigV4Auth(Credentials(ROOT_USER, ROOT_PASSWORD), "s3", "us-east-1").add_auth(request)
        headers = dict(request.headers.items())
    raw = urllib.request.Request(url, data=body or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(raw, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_signed_info_works(server: Server) -> None:
    status, headers, body = send(server, "GET", "/info")
    assert status == 200 and body["erasure"]["data"] == 2
    assert headers["Content-Type"].startswith("application/json")


def test_unsigned_request_is_refused(server: Server) -> None:
    status, headers, body = send(server, "GET", "/info", sign=False)
    assert status == 403 and body["code"] == "AccessDenied"
    assert body["request_id"] == headers["x-amz-request-id"]  # the id the client saw, as in the log


def test_body_must_match_the_signed_hash(server: Server) -> None:
    signed = json.dumps({"secret_key": "signed-secret-123"}).encode()
    swapped = json.dumps({"secret_key": "swapped-secret-12"}).encode()
    status, _, body = send(server, "PUT", "/users/tampered", swapped, signed_body=signed)
    assert status == 400 and body["code"] == "XAmzContentSHA256Mismatch"
    status, _, body = send(server, "GET", "/users")
    assert "tampered" not in [u["access_key"] for u in body["users"]]


def test_unknown_endpoint_and_wrong_method(server: Server) -> None:
    status, _, body = send(server, "GET", "/nothing-here")
    assert status == 404 and body["code"] == "NoSuchAdminEndpoint"
    status, _, body = send(server, "DELETE", "/info")
    assert status == 405 and body["code"] == "MethodNotAllowed"


def test_an_error_names_its_reason_where_one_code_covers_several(server: Server) -> None:
    """A client tells refusals of one S3 code apart by ``reason``, not by the message's text."""
    status, _, body = send(server, "GET", "/cluster/nodes")
    assert status == 400 and body["code"] == "InvalidRequest" and body["reason"] == "NotACluster"
    status, _, body = send(server, "GET", "/nothing-here")
    assert body["reason"] == "NoSuchAdminEndpoint" and body["request_id"]


def test_malformed_json_body(server: Server) -> None:
    status, _, body = send(server, "PUT", "/config", b"{not json")
    assert status == 400 and body["code"] == "InvalidArgument"
    status, _, body = send(server, "PUT", "/config", b"[1, 2]")
    assert status == 400 and "JSON object" in body["message"]
