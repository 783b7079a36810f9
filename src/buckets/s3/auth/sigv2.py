"""AWS Signature Version 2 (HMAC-SHA1), header and query forms, for s3cmd and older tools.

StringToSign = VERB \\n Content-MD5 \\n Content-Type \\n Date \\n CanonicalizedAmzHeaders
CanonicalizedResource, where the resource is ``/bucket`` (virtual-host requests) + the
path as sent + the sorted sub-resources. Clients disagree on small points (botocore
decodes sub-resource values, s3cmd leaves them encoded; s3cmd sends x-amz-date and an
empty Date line), so a few canonical variants of the same request are tried.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterator
from urllib.parse import unquote

from aiohttp import web

from buckets.errors import AccessDenied, ExpiredToken, InvalidAccessKeyId, InvalidArgument, SignatureDoesNotMatch
from buckets.s3.params import signed_decimal

from .canonical import (
    check_skew,
    decoded_query_params,
    format_epoch,
    missing_date_error,
    parse_any_date,
    parse_http_date,
    split_raw_target,
    wire_bytes,
)
from .credentials import METHOD_V2_HEADER, METHOD_V2_QUERY, AuthContext, CredentialStore

# Sub-resources that are part of the signed resource: S3's documented list, plus those
# botocore's HmacV1Auth and s3cmd add, plus the response-* overrides.
SUB_RESOURCES = frozenset({
    "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory", "lifecycle",
    "location", "logging", "metrics", "notification", "object-lock", "partNumber", "policy",
    "replication", "requestPayment", "restore", "select", "select-type", "storageClass", "tagging",
    "torrent", "uploadId", "uploads", "versionId", "versioning", "versions", "website",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires",
})


def _sign(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(wire_bytes(secret), wire_bytes(string_to_sign), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _signature_bytes(signature: str) -> bytes | None:
    """Decoded signature for constant-time comparison; '+' may arrive as ' ' from form-style decoding."""
    try:
        return base64.b64decode(signature.strip().replace(" ", "+").encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def canonical_amz_headers(request: web.Request) -> str:
    values: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered.startswith("x-amz-"):
            values.setdefault(lowered, []).append(value.strip())
    return "".join(f"{name}:{','.join(values[name])}\n" for name in sorted(values))


def canonical_resources(request: web.Request, bucket_from_host: str | None) -> list[str]:
    """Resource variants: sub-resource values decoded (botocore) and as sent (s3cmd)."""
    raw_path, raw_query = split_raw_target(request)
    base = (f"/{bucket_from_host}" if bucket_from_host else "") + raw_path
    subs: list[tuple[str, str | None]] = []  # (name, raw value or None when sent without '=')
    for part in raw_query.split("&"):
        key, sep, value = part.partition("=")
        if unquote(key) in SUB_RESOURCES:
            subs.append((unquote(key), value if sep else None))
    if not subs:
        return [base]
    subs.sort(key=lambda kv: kv[0])  # stable: repeated keys keep their order

    def render(decode: bool) -> str:
        items = [key if value is None else f"{key}={unquote(value) if decode else value}" for key, value in subs]
        return base + "?" + "&".join(items)

    decoded, as_sent = render(True), render(False)
    return [decoded] if decoded == as_sent else [decoded, as_sent]


def _strings_to_sign(request: web.Request, date_lines: list[str], bucket_from_host: str | None) -> Iterator[str]:
    head = "\n".join((request.method, request.headers.get("content-md5", "").strip(),
                      request.headers.get("content-type", "").strip()))
    amz_headers = canonical_amz_headers(request)
    for date_line in date_lines:
        for resource in canonical_resources(request, bucket_from_host):
            yield f"{head}\n{date_line}\n{amz_headers}{resource}"


def _verify(request: web.Request, access_key: str, secret: str, signature: str, date_lines: list[str],
            bucket_from_host: str | None) -> None:
    provided = _signature_bytes(signature)
    first: str | None = None
    for candidate in _strings_to_sign(request, date_lines, bucket_from_host):
        expected = base64.b64decode(_sign(secret, candidate))
        if provided is not None and hmac.compare_digest(expected, provided):
            return
        first = first or candidate
    raise SignatureDoesNotMatch(AWSAccessKeyId=access_key, StringToSign=first or "", SignatureProvided=signature)


async def _secret(creds: CredentialStore, access_key: str) -> str:
    secret = await creds.secret_for(access_key)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
    return secret


async def verify_header(request: web.Request, creds: CredentialStore, *, now: float, max_skew: float,
                        bucket_from_host: str | None = None) -> AuthContext:
    """``Authorization: AWS AKID:base64(HMAC-SHA1(secret, StringToSign))``."""
    _, _, credentials = request.headers["Authorization"].strip().partition(" ")
    access_key, sep, signature = credentials.strip().rpartition(":")
    if not sep or not access_key or not signature:
        raise InvalidArgument("AWS authorization header is invalid. Expected AwsAccessKeyId:signature",
                              ArgumentName="Authorization")
    amz_date, date = request.headers.get("x-amz-date"), request.headers.get("date")
    # x-amz-date, when sent, is the request time (a bad one is not rescued by Date). A time
    # that is missing, unparseable or before the epoch is AccessDenied, as S3 answers it;
    # a valid one too far from now is RequestTimeTooSkewed.
    if amz_date is not None:
        moment = parse_any_date(amz_date)
    else:
        moment = parse_http_date(date) if date is not None else None
    if moment is None or moment.timestamp() < 0:
        raise missing_date_error()
    check_skew(moment, now, max_skew)
    secret = await _secret(creds, access_key)
    # With x-amz-date the Date line must be empty (AWS, s3cmd); botocore signs the Date value.
    date_lines = ([""] if amz_date is not None else []) + ([date.strip()] if date is not None else [])
    _verify(request, access_key, secret, signature, date_lines, bucket_from_host)
    return AuthContext(access_key=access_key, method=METHOD_V2_HEADER,
                       content_sha256=request.headers.get("x-amz-content-sha256"), seed_signature=signature)


async def verify_query(request: web.Request, creds: CredentialStore, *, now: float,
                       bucket_from_host: str | None = None) -> AuthContext:
    """``?AWSAccessKeyId=..&Expires=<epoch>&Signature=..`` (the Date line is the Expires value)."""
    _, raw_query = split_raw_target(request)
    params = decoded_query_params(raw_query)
    access_key, signature, expires = (params.get(k) for k in ("AWSAccessKeyId", "Signature", "Expires"))
    if not access_key or not signature or expires is None:
        raise AccessDenied("Query-string authentication requires the Signature, Expires and AWSAccessKeyId "
                           "parameters")
    expires_at = signed_decimal(expires)  # a huge value is BEYOND: far in the future, still a float
    if expires_at is None:
        raise AccessDenied("Invalid date (should be seconds since epoch): " + expires)
    if now > expires_at:
        raise ExpiredToken("Request has expired",
                           Expires=format_epoch(expires_at), ServerTime=format_epoch(now))
    secret = await _secret(creds, access_key)
    _verify(request, access_key, secret, signature, [expires], bucket_from_host)
    return AuthContext(access_key=access_key, method=METHOD_V2_QUERY,
                       content_sha256=request.headers.get("x-amz-content-sha256"), seed_signature=signature,
                       expires_at=float(expires_at))
