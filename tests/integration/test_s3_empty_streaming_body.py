"""aws-chunked announced, no body sent: 400 IncompleteBody, never a 500, nothing stored.

A request whose x-amz-content-sha256 says STREAMING-* but which carries no body
(Content-Length: 0) reaches the handlers with aiohttp's EmptyStreamReader, whose
readuntil() fails with an AttributeError; the aws-chunked decoder used to call it and the
client got 500 InternalError (found by the HTTP fuzzer, tests/fuzz). The framing needs
at least its final zero-length chunk, so an empty body is an incomplete one.
"""

from __future__ import annotations

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import rawhttp
from s3server import REGION, ROOT_PASSWORD, ROOT_USER, error_of

STREAMING = ["STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
             "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"]


class _StreamingSigner(S3SigV4Auth):
    """botocore's S3 signer with the payload hash fixed to a STREAMING-* token (as the Java
    and Go SDKs sign aws-chunked uploads; botocore itself would hash the empty body)."""

    def __init__(self, token: str) -> None:
        super().__init__(Credentials(ROOT_USER, ROOT_PASSWORD), "s3", REGION)
        self.token = token

    def payload(self, request: AWSRequest) -> str:
        return self.token


def send_without_body(server, method: str, path: str, query: str, token: str,
                      extra: dict[str, str] | None = None) -> rawhttp.RawResponse:
    headers = {"Content-Encoding": "aws-chunked", "Content-Length": "0", "x-amz-decoded-content-length": "5",
               **(extra or {})}
    if token.endswith("TRAILER"):
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
    request = AWSRequest(method=method, url=f"http://127.0.0.1:{server.port}{path}" + (f"?{query}" if query else ""),
                         headers=headers)
    _StreamingSigner(token).add_auth(request)
    signed = {name.lower(): value for name, value in request.headers.items()}
    assert signed["x-amz-content-sha256"] == token
    return rawhttp.request(server, method, path, query=query, headers=signed, signed=False)


@pytest.mark.parametrize("token", STREAMING)
def test_object_writes_without_a_body(server, s3, bucket, token):
    put = send_without_body(server, "PUT", f"/{bucket}/empty", "", token)
    assert (put.status, put.code) == (400, "IncompleteBody"), put.text
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="empty")
    assert error_of(exc) == ("404", 404)

    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = send_without_body(server, "PUT", f"/{bucket}/mp", f"partNumber=1&uploadId={upload_id}", token)
    assert (part.status, part.code) == (400, "IncompleteBody"), part.text
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id).get("Parts", []) == []

    complete = send_without_body(server, "POST", f"/{bucket}/mp", f"uploadId={upload_id}", token)
    assert (complete.status, complete.code) == (400, "IncompleteBody"), complete.text
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [upload_id]
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id)


@pytest.mark.parametrize("token", STREAMING)
def test_delete_objects_without_a_body(server, s3, bucket, token):
    s3.put_object(Bucket=bucket, Key="kept", Body=b"kept")
    delete = send_without_body(server, "POST", f"/{bucket}", "delete", token,
                               {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    assert (delete.status, delete.code) == (400, "IncompleteBody"), delete.text
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"kept"
