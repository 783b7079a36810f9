"""Browser-style POST Object forms for the integration tests: build the policy, sign it
(SigV4 or SigV2, written here from AWS's description, independently of the server's
code), encode the multipart/form-data body and send it with http.client.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import uuid

from rawhttp import RawResponse
from s3server import REGION, ROOT_PASSWORD, ROOT_USER


def expiration(seconds: int = 3600) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def encode_policy(document: object) -> str:
    text = document if isinstance(document, str) else json.dumps(document)
    return base64.b64encode(text.encode()).decode()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def v4_fields(conditions: list, *, access_key: str = ROOT_USER, secret_key: str = ROOT_PASSWORD,
              expires: str | None = None, sign: bool = True, policy: str | None = None) -> dict[str, str]:
    """The x-amz-* fields and the signed policy of a SigV4 form. The credential fields are
    added to ``conditions`` as exact matches (as boto3 does), unless already there."""
    now = datetime.datetime.now(datetime.timezone.utc)
    date, amz_date = now.strftime("%Y%m%d"), now.strftime("%Y%m%dT%H%M%SZ")
    credential = f"{access_key}/{date}/{REGION}/s3/aws4_request"
    fields = {"x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": credential, "x-amz-date": amz_date}
    conditions = list(conditions) + [{name: value} for name, value in fields.items()]
    encoded = policy if policy is not None else encode_policy(
        {"expiration": expires or expiration(), "conditions": conditions})
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), date), REGION), "s3"), "aws4_request")
    fields["policy"] = encoded
    if sign:
        fields["x-amz-signature"] = hmac.new(key, encoded.encode(), hashlib.sha256).hexdigest()
    return fields


def v2_fields(conditions: list, *, access_key: str = ROOT_USER, secret_key: str = ROOT_PASSWORD,
              expires: str | None = None) -> dict[str, str]:
    encoded = encode_policy({"expiration": expires or expiration(), "conditions": conditions})
    signature = base64.b64encode(hmac.new(secret_key.encode(), encoded.encode(), hashlib.sha1).digest()).decode()
    return {"AWSAccessKeyId": access_key, "policy": encoded, "signature": signature}


def form_body(fields: list[tuple[str, str]] | dict[str, str], file: tuple[str, bytes] | None = None,
              after: list[tuple[str, str]] = ()) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/form-data form: ``fields`` in order, then the
    file part (``(filename, data)``), then ``after``."""
    boundary = "----form" + uuid.uuid4().hex
    items = list(fields.items()) if isinstance(fields, dict) else list(fields)
    out = bytearray()
    for name, value in items:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    if file is not None:
        filename, data = file
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                f'Content-Type: application/octet-stream\r\n\r\n').encode()
        out += data + b"\r\n"
    for name, value in after:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def post(server, path: str, body: bytes, content_type: str | None,
         headers: dict[str, str] | None = None) -> RawResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        hdrs = {"Content-Length": str(len(body))}
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        conn.request("POST", path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def post_form(server, bucket: str, fields, file: tuple[str, bytes] | None = ("upload.bin", b"form data"),
              after: list[tuple[str, str]] = (), headers: dict[str, str] | None = None) -> RawResponse:
    body, content_type = form_body(fields, file, after)
    return post(server, f"/{bucket}", body, content_type, headers)
