"""SigV4 header and presigned-query verification against requests signed by botocore."""

from __future__ import annotations

import calendar
import time

import pytest
from auth_testkit import ACCESS_KEY, CREDS, ENDPOINT, presign_v4, sign_v4
from multidict import CIMultiDict

from buckets.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    ExpiredToken,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidRequest,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
)
from buckets.s3.auth import StaticCredentialStore, authenticate, payload_reader


async def body_of(request, ctx) -> bytes:
    return b"".join([piece async for piece in payload_reader(request, ctx)])


# --- valid requests ---------------------------------------------------------------------------


async def test_signed_put_with_body_passes_and_streams_the_body() -> None:
    body = b"hello world\n" * 1000
    signed = sign_v4("PUT", f"{ENDPOINT}/bucket/dir/key.txt", {"x-amz-meta-color": "blue"}, body)
    request = signed.to_request()
    ctx = await authenticate(request, CREDS)
    assert (ctx.access_key, ctx.method) == (ACCESS_KEY, "v4-header")
    assert ctx.content_sha256 == signed.headers["X-Amz-Content-SHA256"]
    assert ctx.scope and ctx.scope.endswith("/us-east-1/s3/aws4_request")
    assert await body_of(request, ctx) == body


@pytest.mark.parametrize("key", [
    "plain.txt",
    "dir/sub dir/a b+c~d@e=f&g.txt",
    "unicode/caf\u00e9-\u6f22\u5b57-\U0001f600.bin",
    "odd/!$'()*,;:[]%25",
])
async def test_keys_needing_encoding_verify(key: str) -> None:
    from urllib.parse import quote

    signed = sign_v4("GET", f"{ENDPOINT}/bucket/{quote(key, safe='/~')}")
    ctx = await authenticate(signed.to_request(), CREDS)
    assert ctx.access_key == ACCESS_KEY


async def test_query_parameters_with_special_characters_verify() -> None:
    url = f"{ENDPOINT}/bucket?list-type=2&prefix=a%20b%2Bc%2F&delimiter=%2F&start-after=%C3%A9&encoding-type=url"
    ctx = await authenticate(sign_v4("GET", url).to_request(), CREDS)
    assert ctx.method == "v4-header"


async def test_subresource_without_value_verifies() -> None:
    ctx = await authenticate(sign_v4("POST", f"{ENDPOINT}/bucket/key?uploads").to_request(), CREDS)
    assert ctx.access_key == ACCESS_KEY


async def test_unsigned_payload_passes_through() -> None:
    signed = sign_v4("PUT", f"{ENDPOINT}/bucket/key", {"Content-MD5": "XUFAKrxLKna5cZ2REBfFkg=="}, b"hello",
                     unsigned_payload=True)
    assert signed.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    request = signed.to_request()
    ctx = await authenticate(request, CREDS)
    assert await body_of(request, ctx) == b"hello"


async def test_date_header_instead_of_x_amz_date() -> None:
    # botocore signs with Date (and drops X-Amz-Date) when the caller set a Date header.
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key", {"Date": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert "X-Amz-Date" not in signed.headers
    ctx = await authenticate(signed.to_request(), CREDS)
    assert ctx.amz_date is not None and len(ctx.amz_date) == 16


async def test_awscrt_signer_is_accepted() -> None:
    """The CRT signer (aws cli v2, s3transfer's CRT path) signs independently of botocore."""
    import datetime

    from awscrt.auth import (
        AwsCredentialsProvider,
        AwsSignatureType,
        AwsSignedBodyHeaderType,
        AwsSigningAlgorithm,
        AwsSigningConfig,
        aws_sign_request,
    )
    from awscrt.http import HttpHeaders, HttpRequest
    from auth_testkit import SECRET_KEY, Signed

    config = AwsSigningConfig(
        algorithm=AwsSigningAlgorithm.V4, signature_type=AwsSignatureType.HTTP_REQUEST_HEADERS,
        credentials_provider=AwsCredentialsProvider.new_static(ACCESS_KEY, SECRET_KEY),
        region="us-east-1", service="s3", date=datetime.datetime.now(datetime.timezone.utc),
        use_double_uri_encode=False, should_normalize_uri_path=False,
        signed_body_header_type=AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
        signed_body_value="UNSIGNED-PAYLOAD")
    path = "/bucket/a%20b/c%2Bd?prefix=x%20y&list-type=2"
    crt_request = HttpRequest("GET", path, HttpHeaders([("Host", "127.0.0.1:9000")]))
    signed_request = aws_sign_request(crt_request, config).result(timeout=10)
    headers = {name: value for name, value in signed_request.headers}
    ctx = await authenticate(Signed("GET", ENDPOINT + path, headers).to_request(), CREDS)
    assert ctx.method == "v4-header"


# --- tampering ------------------------------------------------------------------------------


async def test_wrong_secret_is_signature_does_not_match() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key", secret="not-the-secret")
    with pytest.raises(SignatureDoesNotMatch) as info:
        await authenticate(signed.to_request(), CREDS)
    assert info.value.status == 403
    assert "AWS4-HMAC-SHA256" in info.value.extra["StringToSign"]


async def test_changed_signed_header_fails() -> None:
    signed = sign_v4("PUT", f"{ENDPOINT}/bucket/key", {"x-amz-meta-owner": "alice"}, b"x")
    tampered = dict(signed.headers, **{"x-amz-meta-owner": "mallory"})
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(headers=tampered), CREDS)


async def test_added_unsigned_amz_header_is_refused() -> None:
    signed = sign_v4("PUT", f"{ENDPOINT}/bucket/key", body=b"x")
    tampered = dict(signed.headers, **{"x-amz-acl": "public-read"})
    with pytest.raises(AccessDenied) as info:
        await authenticate(signed.to_request(headers=tampered), CREDS)
    assert info.value.extra["HeadersNotSigned"] == "x-amz-acl"


async def test_changed_path_fails() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key")
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target="/bucket/other-key"), CREDS)


async def test_changed_query_fails() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket?prefix=public/")
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target="/bucket?prefix=private/"), CREDS)


async def test_plus_and_space_are_different_query_values() -> None:
    # '+' is decoded as a space by the server, so a signature over %2B must not cover '+'.
    signed = sign_v4("GET", f"{ENDPOINT}/bucket?prefix=a%2Bb")
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target="/bucket?prefix=a+b"), CREDS)


async def test_changed_method_fails() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key")
    signed.method = "DELETE"
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(), CREDS)


async def test_unknown_access_key() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key", access_key="NOSUCHKEY")
    with pytest.raises(InvalidAccessKeyId):
        await authenticate(signed.to_request(), CREDS)


async def test_disabled_user_is_unknown() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key")
    with pytest.raises(InvalidAccessKeyId):
        await authenticate(signed.to_request(), StaticCredentialStore({}))


@pytest.mark.parametrize("offset", [-16 * 60, 16 * 60])
async def test_clock_skew_beyond_15_minutes(offset: int) -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key")
    with pytest.raises(RequestTimeTooSkewed):
        await authenticate(signed.to_request(), CREDS, now=time.time() + offset)
    # inside the window it passes
    await authenticate(signed.to_request(), CREDS, now=time.time() + offset / 2)


async def test_missing_content_sha256_is_required() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key")
    headers = {k: v for k, v in signed.headers.items() if k.lower() != "x-amz-content-sha256"}
    with pytest.raises(InvalidRequest) as info:
        await authenticate(signed.to_request(headers=headers), CREDS)
    assert info.value.message == "Missing required header for this request: x-amz-content-sha256"


async def test_garbage_content_sha256_is_invalid_argument() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key")
    headers = dict(signed.headers, **{"X-Amz-Content-SHA256": "not-a-hash"})
    with pytest.raises(InvalidArgument):
        await authenticate(signed.to_request(headers=headers), CREDS)


async def test_wrong_body_sha256_fails_at_end_of_body() -> None:
    signed = sign_v4("PUT", f"{ENDPOINT}/bucket/key", body=b"original body")
    request = signed.to_request(body=b"tampered body")
    ctx = await authenticate(request, CREDS)  # headers are intact
    from buckets.errors import XAmzContentSHA256Mismatch

    with pytest.raises(XAmzContentSHA256Mismatch):
        await body_of(request, ctx)


@pytest.mark.parametrize("authorization", [
    "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/s3, SignedHeaders=host, Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=xyz",
    "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/s3/aws4_request SignedHeaders=host",
    "AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-9/s3/aws4_request, SignedHeaders=host, Signature="
    + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature="
    + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=AKID/2024-01-01/us-east-1/s3/aws4_request, SignedHeaders=host, Signature="
    + "0" * 64,
])
async def test_malformed_authorization_header(authorization: str) -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key")
    headers = dict(signed.headers, Authorization=authorization)
    with pytest.raises(AuthorizationHeaderMalformed) as info:
        await authenticate(signed.to_request(headers=headers), CREDS)
    assert info.value.status == 400


async def test_region_none_accepts_any_region() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key", region="eu-central-1")
    with pytest.raises(AuthorizationHeaderMalformed) as info:
        await authenticate(signed.to_request(), CREDS)
    assert info.value.extra["Region"] == "us-east-1"
    ctx = await authenticate(signed.to_request(), CREDS, region=None)
    assert ctx.region == "eu-central-1"


async def test_unsupported_scheme_and_two_mechanisms() -> None:
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/key")
    with pytest.raises(InvalidArgument):
        await authenticate(signed.to_request(headers=dict(signed.headers, Authorization="Bearer abc")), CREDS)
    presigned = presign_v4("GET", f"{ENDPOINT}/bucket/key")
    with pytest.raises(InvalidArgument):
        await authenticate(presigned.to_request(headers=signed.headers), CREDS)


async def test_anonymous_request() -> None:
    from aiohttp.test_utils import make_mocked_request

    ctx = await authenticate(make_mocked_request("GET", "/bucket/key", headers=CIMultiDict(Host="x")), CREDS)
    assert ctx.is_anonymous and ctx.method == "anonymous" and ctx.access_key is None


# --- presigned URLs -----------------------------------------------------------------------------


async def test_presigned_get_passes() -> None:
    signed = presign_v4("GET", f"{ENDPOINT}/bucket/dir/a%20b.txt?response-content-type=text%2Fplain",
                        expires=600)
    assert "X-Amz-Signature=" in signed.url and "Authorization" not in signed.headers
    ctx = await authenticate(signed.to_request(), CREDS)
    assert ctx.method == "v4-query" and ctx.access_key == ACCESS_KEY
    assert ctx.expires_at is not None and 590 < ctx.expires_at - time.time() <= 600
    assert ctx.content_sha256 is None


async def test_presigned_put_streams_body() -> None:
    signed = presign_v4("PUT", f"{ENDPOINT}/bucket/key")
    request = signed.to_request(body=b"data", headers={"Content-Length": "4"})
    ctx = await authenticate(request, CREDS)
    assert await body_of(request, ctx) == b"data"


async def test_presigned_expired() -> None:
    signed = presign_v4("GET", f"{ENDPOINT}/bucket/key", expires=60)
    with pytest.raises(ExpiredToken) as info:
        await authenticate(signed.to_request(), CREDS, now=time.time() + 61)
    assert (info.value.code, info.value.message, info.value.status) == ("AccessDenied", "Request has expired", 403)


async def test_presigned_not_yet_valid() -> None:
    signed = presign_v4("GET", f"{ENDPOINT}/bucket/key", expires=3600)
    with pytest.raises(AccessDenied):
        await authenticate(signed.to_request(), CREDS, now=time.time() - 3600)


async def test_presigned_changed_query_or_path_fails() -> None:
    signed = presign_v4("GET", f"{ENDPOINT}/bucket/key?versionId=v1")
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target=signed.target.replace("versionId=v1", "versionId=v2")), CREDS)
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target=signed.target.replace("/bucket/key", "/bucket/kez")), CREDS)
    longer = signed.target.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200")
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target=longer), CREDS)


async def test_presigned_wrong_secret() -> None:
    signed = presign_v4("GET", f"{ENDPOINT}/bucket/key", secret="wrong")
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(), CREDS)


@pytest.mark.parametrize("expires", [604801, 0, -5])
async def test_presigned_expires_out_of_range(expires: int) -> None:
    signed = presign_v4("GET", f"{ENDPOINT}/bucket/key", expires=3600)
    target = signed.target.replace("X-Amz-Expires=3600", f"X-Amz-Expires={expires}")
    with pytest.raises(AuthorizationQueryParametersError):
        await authenticate(signed.to_request(target=target), CREDS)


async def test_presigned_seven_days_is_allowed() -> None:
    signed = presign_v4("GET", f"{ENDPOINT}/bucket/key", expires=604800)
    ctx = await authenticate(signed.to_request(), CREDS, now=time.time() + 604000)
    assert ctx.method == "v4-query"


async def test_presigned_missing_parameter_and_bad_credential() -> None:
    signed = presign_v4("GET", f"{ENDPOINT}/bucket/key")
    without_date = "&".join(p for p in signed.target.split("&") if not p.startswith("X-Amz-Date="))
    with pytest.raises(AuthorizationQueryParametersError):
        await authenticate(signed.to_request(target=without_date), CREDS)
    bad_scope = signed.target.replace("%2Fs3%2F", "%2Fsqs%2F")
    assert bad_scope != signed.target
    with pytest.raises(AuthorizationQueryParametersError):
        await authenticate(signed.to_request(target=bad_scope), CREDS)


# --- the published AWS example -------------------------------------------------------------------

AWS_EXAMPLE_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"


async def test_aws_documented_streaming_seed_signature() -> None:
    """The seed signature from AWS's "Transferring Payload in Multiple Chunks" example."""
    from aiohttp.test_utils import make_mocked_request

    headers = CIMultiDict({
        "Host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                         "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                         f"x-amz-decoded-content-length;x-amz-storage-class,Signature={AWS_EXAMPLE_SEED}",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560", "Content-Length": "66824"})
    creds = StaticCredentialStore({"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})
    now = calendar.timegm((2013, 5, 24, 0, 5, 0))
    ctx = await authenticate(make_mocked_request("PUT", "/examplebucket/chunkObject.txt", headers=headers),
                             creds, now=now)
    assert ctx.seed_signature == AWS_EXAMPLE_SEED and ctx.scope == "20130524/us-east-1/s3/aws4_request"
    headers["x-amz-storage-class"] = "STANDARD"
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(make_mocked_request("PUT", "/examplebucket/chunkObject.txt", headers=headers),
                           creds, now=now)


# --- canonical-form tolerance (clients that encode differently from what they sign) -------------


async def test_path_sent_unencoded_but_signed_in_aws_encoding() -> None:
    # e.g. curl --aws-sigv4 and some SDKs send RFC 3986 sub-delims raw but sign them %-encoded.
    signed = sign_v4("GET", f"{ENDPOINT}/bucket/it%27s%20%281%29%21.txt")
    ctx = await authenticate(signed.to_request(target="/bucket/it's%20(1)!.txt"), CREDS)
    assert ctx.access_key == ACCESS_KEY
    with pytest.raises(SignatureDoesNotMatch):  # a different decoded key still fails
        await authenticate(signed.to_request(target="/bucket/it's%20(2)!.txt"), CREDS)


async def test_query_signed_exactly_as_sent() -> None:
    # botocore signs a query already present in the URL byte for byte, even if not strictly encoded.
    signed = sign_v4("GET", f"{ENDPOINT}/bucket?prefix=a!b*c&max-keys=5")
    ctx = await authenticate(signed.to_request(), CREDS)
    assert ctx.access_key == ACCESS_KEY
    with pytest.raises(SignatureDoesNotMatch):
        await authenticate(signed.to_request(target="/bucket?prefix=a!b*d&max-keys=5"), CREDS)


async def test_presigned_absurd_dates_are_client_errors() -> None:
    signed = presign_v4("GET", f"{ENDPOINT}/bucket/key")
    date = signed.target.split("X-Amz-Date=")[1].split("&")[0]
    credential_date = date[:8]
    for absurd in ("00010101T000000Z", "99991231T235959Z"):
        target = signed.target.replace(date, absurd).replace(f"%2F{credential_date}%2F", f"%2F{absurd[:8]}%2F")
        with pytest.raises((ExpiredToken, AccessDenied)):
            await authenticate(signed.to_request(target=target), CREDS)
