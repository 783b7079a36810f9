"""AWS Signature Version 4 for S3: the Authorization header and presigned query URLs.

Verifies a request the way S3 does (canonical request -> string to sign -> HMAC with the
derived signing key) and also owns the chunk/trailer signature formulas that
``payload.py`` uses to keep verifying a streaming body after the headers are accepted.

The canonical URI is the path exactly as sent (S3 does not normalise it). Clients differ
in how they encode paths and queries (botocore signs what it sends; others re-encode
from decoded values), so verification tries the as-sent form and the strict AWS
re-encoding of what the server itself will decode; both describe the same resource, so
accepting either does not widen what a signature authorises.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from aiohttp import web

from buckets.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    BucketsError,
    ExpiredToken,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidRequest,
    NotImplementedErr,
    SignatureDoesNotMatch,
)
from buckets.s3.params import signed_decimal

from .canonical import (
    aws_uri_encode,
    check_skew,
    decoded_query_params,
    format_amz_date,
    format_epoch,
    missing_date_error,
    parse_amz_date,
    parse_http_date,
    raw_query_pairs,
    split_raw_target,
    wire_bytes,
)
from .credentials import (
    EMPTY_SHA256,
    METHOD_V4_HEADER,
    METHOD_V4_QUERY,
    STREAMING_NOT_IMPLEMENTED,
    STREAMING_PAYLOADS,
    UNSIGNED_PAYLOAD,
    AuthContext,
    CredentialStore,
)

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINAL = "aws4_request"
MAX_PRESIGN_EXPIRES = 604800  # 7 days

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_QUERY_AUTH_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date",
                      "X-Amz-SignedHeaders", "X-Amz-Expires")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=1024)  # one key per user, day, region and service: four HMACs saved per request
def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request")."""
    k_date = _hmac(wire_bytes("AWS4" + secret), date)
    return _hmac(_hmac(_hmac(k_date, region), service), TERMINAL)


def signature_hex(signing_key: bytes, string_to_sign: str) -> str:
    return hmac.new(signing_key, wire_bytes(string_to_sign), hashlib.sha256).hexdigest()


def signatures_equal(expected: str, provided: str) -> bool:
    return hmac.compare_digest(expected.encode("ascii"), wire_bytes(provided))


def chunk_string_to_sign(amz_date: str, scope: str, previous_signature: str, chunk_sha256: str) -> str:
    return "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous_signature, EMPTY_SHA256, chunk_sha256))


def trailer_string_to_sign(amz_date: str, scope: str, previous_signature: str, trailer_sha256: str) -> str:
    return "\n".join(("AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous_signature, trailer_sha256))


# --- parsing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialScope:
    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINAL}"


@dataclass(frozen=True)
class V4Signature:
    credential: CredentialScope
    signed_headers: tuple[str, ...]
    signature: str


def parse_credential(value: str, error: type[BucketsError], prefix: str,
                     *, region: str | None, service: str) -> CredentialScope:
    """``AKID/YYYYMMDD/region/service/aws4_request``, checked against this endpoint."""
    parts = value.strip().rsplit("/", 4)
    if len(parts) != 5 or not all(parts):
        raise error(f'{prefix} the Credential is mal-formed; expecting '
                    f'"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    access_key, date, cred_region, cred_service, terminal = parts
    if not (len(date) == 8 and date.isdigit()):
        raise error(f'{prefix} incorrect date format "{date}". This date in the credential must be in the '
                    f'format "yyyyMMdd".')
    if region is not None and cred_region != region:
        raise error(f"{prefix} the region '{cred_region}' is wrong; expecting '{region}'", Region=region)
    if cred_service != service:
        raise error(f'{prefix} incorrect service "{cred_service}". This endpoint belongs to "{service}".')
    if terminal != TERMINAL:
        raise error(f'{prefix} incorrect terminal "{terminal}". This endpoint uses "{TERMINAL}".')
    return CredentialScope(access_key, date, cred_region, cred_service)


def parse_signed_headers(value: str, error: type[BucketsError], prefix: str) -> tuple[str, ...]:
    names = tuple(value.strip().split(";"))
    if not value.strip() or not all(_HEADER_NAME.fullmatch(n) for n in names):
        raise error(f"{prefix} SignedHeaders must be a ';'-separated list of lower-case header names.")
    return names


def parse_signature(value: str, error: type[BucketsError], prefix: str) -> str:
    signature = value.strip()
    if not _HEX64.fullmatch(signature):
        raise error(f"{prefix} the Signature must be 64 lower-case hexadecimal characters.")
    return signature


def parse_authorization_header(value: str, *, region: str | None, service: str) -> V4Signature:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    prefix = "The authorization header is malformed;"
    error = AuthorizationHeaderMalformed
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise error(f"{prefix} the authorization mechanism {algorithm!r} is not supported.")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            raise error(f"{prefix} the authorization component \"{item.strip()}\" is malformed.")
        fields[key.strip()] = val
    for required in ("Credential", "SignedHeaders", "Signature"):
        if required not in fields:
            raise error(f"{prefix} the authorization header requires the {required} parameter.")
    return V4Signature(
        credential=parse_credential(fields["Credential"], error, prefix, region=region, service=service),
        signed_headers=parse_signed_headers(fields["SignedHeaders"], error, prefix),
        signature=parse_signature(fields["Signature"], error, prefix),
    )


# --- canonical request -------------------------------------------------------------------


def canonical_uris(raw_path: str) -> list[str]:
    """The path as sent, then the strict AWS encoding of what it decodes to."""
    strict = aws_uri_encode(unquote(raw_path, errors="surrogateescape"), keep_slash=True)
    return [raw_path] if strict == raw_path else [raw_path, strict]


def canonical_queries(request: web.Request, raw_query: str, *, exclude: str | None = None) -> list[str]:
    """Strict re-encoding of the query as the server decodes it, then the query as sent."""
    strict_pairs = sorted(
        (aws_uri_encode(key, keep_slash=False), aws_uri_encode(value, keep_slash=False))
        for key, value in request.rel_url.query.items() if key != exclude)
    as_sent = sorted((k, v) for k, v in raw_query_pairs(raw_query) if exclude is None or unquote(k) != exclude)
    strict = "&".join(f"{k}={v}" for k, v in strict_pairs)
    raw = "&".join(f"{k}={v}" for k, v in as_sent)
    return [strict] if strict == raw else [strict, raw]


def canonical_headers(request: web.Request, names: tuple[str, ...]) -> str:
    """``name:value\\n`` per signed header; repeated headers joined by ',', whitespace collapsed."""
    lines = []
    for name in names:
        values = request.headers.getall(name, [])
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def canonical_request(method: str, uri: str, query: str, headers_block: str,
                      signed_headers: tuple[str, ...], payload_hash: str) -> str:
    return "\n".join((method, uri, query, headers_block, ";".join(signed_headers), payload_hash))


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join((ALGORITHM, amz_date, scope, sha256_hex(wire_bytes(canonical))))


def _candidates(request: web.Request, *, exclude_query: str | None) -> Iterator[tuple[str, str]]:
    raw_path, raw_query = split_raw_target(request)
    queries = canonical_queries(request, raw_query, exclude=exclude_query)
    for uri in canonical_uris(raw_path):
        for query in queries:
            yield uri, query


def _verify(request: web.Request, parsed: V4Signature, *, signing_key: bytes, amz_date: str,
            payload_hash: str, exclude_query: str | None) -> None:
    """Raise SignatureDoesNotMatch unless one canonical form of the request matches."""
    headers_block = canonical_headers(request, parsed.signed_headers)
    first: tuple[str, str] | None = None
    for uri, query in _candidates(request, exclude_query=exclude_query):
        canonical = canonical_request(request.method, uri, query, headers_block, parsed.signed_headers,
                                      payload_hash)
        to_sign = string_to_sign(amz_date, parsed.credential.scope, canonical)
        if signatures_equal(signature_hex(signing_key, to_sign), parsed.signature):
            return
        first = first or (canonical, to_sign)
    assert first is not None
    raise SignatureDoesNotMatch(
        AWSAccessKeyId=parsed.credential.access_key, StringToSign=first[1],
        SignatureProvided=parsed.signature, CanonicalRequest=first[0])


async def _signing_key(creds: CredentialStore, scope: CredentialScope) -> bytes:
    secret = await creds.secret_for(scope.access_key)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=scope.access_key)
    return derive_signing_key(secret, scope.date, scope.region, scope.service)


def check_content_sha256(value: str) -> str:
    """Validate an x-amz-content-sha256 value: a hex digest or one of the S3 tokens."""
    if value in (UNSIGNED_PAYLOAD, *STREAMING_PAYLOADS) or _HEX64.fullmatch(value):
        return value
    if value in STREAMING_NOT_IMPLEMENTED:
        raise NotImplementedErr(f"x-amz-content-sha256 {value} is not supported by this server.")
    raise InvalidArgument(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, "
        "or a valid sha256 value.", ArgumentName="x-amz-content-sha256", ArgumentValue=value)


# --- Authorization header ----------------------------------------------------------------


def _request_time(request: web.Request) -> tuple[datetime, str]:
    """The signing time from x-amz-date (ISO basic) or else Date (RFC 1123)."""
    amz = request.headers.get("x-amz-date")
    moment = parse_amz_date(amz) if amz is not None else None
    if amz is None:
        date = request.headers.get("date")
        moment = parse_http_date(date) if date is not None else None
    if moment is None:
        raise missing_date_error()
    return moment, format_amz_date(moment)


async def verify_header(request: web.Request, creds: CredentialStore, *, region: str | None, now: float,
                        max_skew: float, service: str = "s3") -> AuthContext:
    parsed = parse_authorization_header(request.headers["Authorization"], region=region, service=service)
    content_sha256 = request.headers.get("x-amz-content-sha256")
    if content_sha256 is None and service == "s3":
        raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
    payload_hash = check_content_sha256(content_sha256.strip()) if content_sha256 is not None else EMPTY_SHA256

    moment, amz_date = _request_time(request)
    if parsed.credential.date != amz_date[:8]:
        raise AuthorizationHeaderMalformed(
            "The authorization header is malformed; Invalid credential date. Date is not the same as X-Amz-Date.")
    check_skew(moment, now, max_skew)

    signed = set(parsed.signed_headers)
    unsigned = sorted({name.lower() for name in request.headers
                       if name.lower().startswith("x-amz-") and name.lower() not in signed})
    if "host" not in signed or unsigned:
        raise AccessDenied("There were headers present in the request which were not signed",
                           HeadersNotSigned=", ".join(unsigned or ["host"]))

    signing_key = await _signing_key(creds, parsed.credential)
    _verify(request, parsed, signing_key=signing_key, amz_date=amz_date, payload_hash=payload_hash,
            exclude_query=None)
    return AuthContext(
        access_key=parsed.credential.access_key, method=METHOD_V4_HEADER,
        content_sha256=payload_hash if content_sha256 is not None else None,
        seed_signature=parsed.signature, signing_key=signing_key, scope=parsed.credential.scope,
        amz_date=amz_date, region=parsed.credential.region, signed_headers=parsed.signed_headers)


# --- presigned query -----------------------------------------------------------------------


async def verify_query(request: web.Request, creds: CredentialStore, *, region: str | None, now: float,
                       max_skew: float, service: str = "s3") -> AuthContext:
    _, raw_query = split_raw_target(request)
    params = decoded_query_params(raw_query)
    error = AuthorizationQueryParametersError
    prefix = "Error parsing the X-Amz-Credential parameter;"
    if any(name not in params for name in _QUERY_AUTH_PARAMS):
        raise error("Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
                    "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        if params["X-Amz-Algorithm"].startswith("AWS4-ECDSA"):
            raise NotImplementedErr("SigV4a (AWS4-ECDSA-P256-SHA256) presigned URLs are not supported.")
        raise error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    credential = parse_credential(params["X-Amz-Credential"], error, prefix, region=region, service=service)
    moment = parse_amz_date(params["X-Amz-Date"])
    if moment is None:
        raise error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    amz_date = format_amz_date(moment)
    if credential.date != amz_date[:8]:
        raise error(f"{prefix} Invalid credential date. Date is not the same as X-Amz-Date.")
    expires = signed_decimal(params["X-Amz-Expires"])
    if expires is None:
        raise error("X-Amz-Expires should be a number")
    if expires < 1:
        raise error("X-Amz-Expires must be non-negative and at least 1")
    if expires > MAX_PRESIGN_EXPIRES:
        raise error(f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES}")
    parsed = V4Signature(
        credential=credential,
        signed_headers=parse_signed_headers(params["X-Amz-SignedHeaders"], error, "Error parsing"),
        signature=parse_signature(params["X-Amz-Signature"], error, "Error parsing X-Amz-Signature;"),
    )
    if "host" not in parsed.signed_headers:
        raise error("X-Amz-SignedHeaders must include host")

    if moment.timestamp() - now > max_skew:
        raise AccessDenied("Request is not valid yet")
    expires_at = moment.timestamp() + expires
    if now > expires_at:
        raise ExpiredToken(
            "Request has expired", **{"X-Amz-Expires": str(expires)},
            Expires=format_epoch(expires_at), ServerTime=format_epoch(now))

    signing_key = await _signing_key(creds, credential)
    payload_hash = params.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD)
    _verify(request, parsed, signing_key=signing_key, amz_date=amz_date, payload_hash=payload_hash,
            exclude_query="X-Amz-Signature")
    # The body is not covered by a presigned signature; if the client still declares a
    # payload hash or aws-chunked framing, honour it so the body is decoded and checked.
    header_sha256 = request.headers.get("x-amz-content-sha256")
    content_sha256 = check_content_sha256(header_sha256.strip()) if header_sha256 is not None else (
        payload_hash if "X-Amz-Content-Sha256" in params else None)
    return AuthContext(
        access_key=credential.access_key, method=METHOD_V4_QUERY, content_sha256=content_sha256,
        seed_signature=parsed.signature, signing_key=signing_key, scope=credential.scope,
        amz_date=amz_date, region=credential.region, signed_headers=parsed.signed_headers,
        expires_at=expires_at)
