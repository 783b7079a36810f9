"""SigV2 header and query verification, with requests signed by botocore's HmacV1 signers and s3cmd's."""

from __future__ import annotations

import time

import pytest
from auth_testkit import ACCESS_KEY, CREDS, ENDPOINT, SECRET_KEY, Signed, presign_v2, sign_v2
from multidict import CIMultiDict

from buckets.errors import ExpiredToken, InvalidAccessKeyId, RequestTimeTooSkewed, SignatureDoesNotMatch
from buckets.s3.auth import authenticate, payload_reader

# --- botocore HmacV1Auth (boto3 with signature_version="s3") -----------------------------------


async def test_v2_header_path_style_passes() -> None:
    signed = sign_v2("PUT", f"{ENDPOINT}/bucket/dir/a%20b.txt",
                     {"Content-Type": "text/plain", "x-amz-meta-a": "1", "X-Amz-Meta-B": " two "}, b"body")
    request = signed.to_request()
    ctx = await authenticate(request, CREDS)
    assert (ctx.access_key, ctx.method) == (ACCESS_KEY, "v2-header")
    assert b"".join([p async for p in payload_reader(request, ctx)]) == b"body"


@pytest.mark.parametrize("query", [
    "acl", "uploads", "uploadId=abc123&partNumber=3", "versionId=3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY",
    "response-content-type=text%2Fplain&response-content-disposition=attachment%3B%20filename%3D%22a.txt%22",
    "tagging", "list-type=2&prefix=a",  # not a sub-resource: must not be signed
])
async def test_v2_sub_resources(query: str) -> None:
    signed = sign_v2("GET", f"{ENDPOINT}/bucket/key?{query}")
    ctx = await authenticate(signed.to_request(), CREDS)
    assert ctx.method == "v2-header"


async def test_v2_virtual_host_needs_bucket_from_host() -> None:
    signed = sign_v2("GET", "http://bucket.s3.local:9000/key.txt?acl", auth_path="/bucket/key.txt")
    ctx = await authenticate(signed.to_request(), CREDS, bucket_from_host="bucket")
    assert ctx.access_key == ACCESS_KEY
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(), CREDS)  # resource without the bucket
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(), CREDS, bucket_from_host="other-bucket")


async def test_v2_tampering() -> None:
    signed = sign_v2("PUT", f"{ENDPOINT}/bucket/key", {"Content-Type": "text/plain"}, b"x")
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(headers=dict(signed.headers, **{"Content-Type": "text/html"})), CREDS)
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(headers=dict(signed.headers, **{"x-amz-acl": "public-read"})), CREDS)
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target="/bucket/other"), CREDS)
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target="/bucket/key?acl"), CREDS)
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(sign_v2("GET", f"{ENDPOINT}/bucket/key", secret="wrong").to_request(), CREDS)


async def test_v2_unknown_key_and_skew() -> None:
    signed = sign_v2("GET", f"{ENDPOINT}/bucket/key")
    bad_key = dict(signed.headers, Authorization=signed.headers["Authorization"].replace(ACCESS_KEY, "NOPE"))
    with pytest.raises(InvalidAccessKeyId):
        await authenticate(signed.to_request(headers=bad_key), CREDS)
    with pytest.raises(RequestTimeTooSkewed):
        await authenticate(signed.to_request(), CREDS, now=time.time() + 20 * 60)


async def test_v2_query_presigned() -> None:
    signed = presign_v2("GET", f"{ENDPOINT}/bucket/dir/key.txt", expires=300)
    ctx = await authenticate(signed.to_request(), CREDS)
    assert ctx.method == "v2-query" and ctx.access_key == ACCESS_KEY
    with pytest.raises(ExpiredToken) as info:
        await authenticate(signed.to_request(), CREDS, now=time.time() + 301)
    assert info.value.code == "AccessDenied"
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target=signed.target.replace("key.txt", "kez.txt")), CREDS)
    later = signed.target.replace("Expires=", "Expires=9")  # extending the expiry breaks the signature
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target=later), CREDS)


async def test_v2_query_signature_with_plus_sent_raw() -> None:
    """Some clients leave '+' unescaped in the Signature parameter."""
    for _ in range(20):  # find a signature containing '+'
        signed = presign_v2("GET", f"{ENDPOINT}/bucket/k{time.monotonic_ns()}")
        if "%2B" in signed.url:
            break
    else:
        pytest.skip("no '+' in 20 signatures")
    ctx = await authenticate(signed.to_request(target=signed.target.replace("%2B", "+")), CREDS)
    assert ctx.method == "v2-query"


# --- s3cmd's own signer (S3/Crypto.py sign_request_v2), as s3cmd --signature-v2 sends it ------------


def s3cmd_signed(method: str, bucket: str, uri: str, params: dict[str, str | None], headers: dict[str, str],
                 *, virtual_host: bool = False, secret: str = SECRET_KEY) -> Signed:
    from S3.BaseUtils import s3_quote
    from S3.Config import Config
    from S3.Crypto import format_param_str, sign_request_v2
    from S3.SortedDict import SortedDict

    config = Config()
    config.update_option("access_key", ACCESS_KEY)
    config.update_option("secret_key", secret)
    sorted_headers = SortedDict(headers, ignore_case=True)
    sorted_headers["x-amz-date"] = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())  # s3cmd's format
    signed_headers = sign_request_v2(method, f"/{bucket}{uri}", params, sorted_headers)
    wire_uri = uri if virtual_host else f"/{bucket}{uri}"
    target = s3_quote(wire_uri, quote_backslashes=False, unicode_output=True) + format_param_str(params)
    host = f"{bucket}.s3.local:9000" if virtual_host else "127.0.0.1:9000"
    return Signed(method, f"http://{host}{target}", dict(signed_headers))


@pytest.mark.parametrize("params", [
    {}, {"acl": None}, {"uploadId": "a/b+c", "partNumber": "2"}, {"versionId": "v 1", "max-keys": "3"},
])
async def test_s3cmd_v2_path_style(params: dict[str, str | None]) -> None:
    signed = s3cmd_signed("PUT", "bucket", "/dir/caf\u00e9 (1).txt", params, {"content-type": "text/plain"})
    ctx = await authenticate(signed.to_request(), CREDS)
    assert ctx.method == "v2-header" and ctx.access_key == ACCESS_KEY


async def test_s3cmd_v2_virtual_host_and_tampering() -> None:
    signed = s3cmd_signed("GET", "bucket", "/key.txt", {"versioning": None}, {}, virtual_host=True)
    assert (await authenticate(signed.to_request(), CREDS, bucket_from_host="bucket")).access_key == ACCESS_KEY
    wrong = s3cmd_signed("GET", "bucket", "/key.txt", {}, {}, secret="wrong")
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(wrong.to_request(), CREDS)
    changed = CIMultiDict(signed.headers)
    changed["x-amz-date"] = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(time.time() - 5))
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(headers=dict(changed)), CREDS, bucket_from_host="bucket")


async def test_v2_query_absurd_expires_values_are_client_errors() -> None:
    from buckets.errors import AccessDenied

    signed = presign_v2("GET", f"{ENDPOINT}/bucket/key")
    expires = signed.target.split("Expires=")[1].split("&")[0]
    with pytest.raises(ExpiredToken):
        await authenticate(signed.to_request(target=signed.target.replace(expires, "-" + "9" * 25)), CREDS)
    with pytest.raises(AccessDenied):
        await authenticate(signed.to_request(target=signed.target.replace(expires, "soon")), CREDS)
