"""Object headers in and out: what a PUT stores and what a GET/HEAD returns.

Owns the mapping between HTTP headers and the engine's `PutOptions`/`ObjectInfo` fields:
user metadata (`x-amz-meta-*`, 2 KiB limit), the stored standard headers, storage class,
ETag quoting, HTTP dates, and the `response-*` query overrides of GET/HEAD.
"""

from __future__ import annotations

import email.utils
from datetime import timezone
from collections.abc import Mapping

from buckets.engine.types import STORED_HEADERS, ObjectInfo, PutOptions
from buckets.errors import InvalidArgument, MetadataTooLarge, NotImplementedErr
from buckets.s3.errors import InvalidStorageClass

META_PREFIX = "x-amz-meta-"
MAX_USER_META_BYTES = 2048
STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY")

# GET/HEAD query parameters that override the stored header of the same name.
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}

_CANONICAL = {
    "content-type": "Content-Type",
    "content-encoding": "Content-Encoding",
    "content-disposition": "Content-Disposition",
    "content-language": "Content-Language",
    "cache-control": "Cache-Control",
    "expires": "Expires",
}


def http_date(ts: float) -> str:
    """RFC 7231 date (Last-Modified), whole seconds as S3 sends it."""
    return email.utils.formatdate(int(ts), usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    """Parse an If-Modified-Since style date; None when absent or unparseable (then ignored)."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc).timestamp()
    return parsed.timestamp()


def quote_etag(etag: str) -> str:
    return f'"{etag}"'


def unquote_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def etag_list(header: str) -> list[str]:
    """`"a", "b"` / `*` / `a` -> unquoted ETags (or `*`)."""
    return [unquote_etag(part) for part in header.split(",") if part.strip()]


def user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """Collect `x-amz-meta-*` (names lowercased, prefix stripped) and enforce the 2 KiB cap."""
    meta: dict[str, str] = {}
    total = 0
    for name, value in headers.items():
        lower = name.lower()
        if not lower.startswith(META_PREFIX):
            continue
        short = lower[len(META_PREFIX):]
        if not short:
            raise InvalidArgument("User metadata names must not be empty.")
        if short in meta:  # repeated header: S3 joins the values
            meta[short] = f"{meta[short]},{value}"
        else:
            meta[short] = value
    for short, value in meta.items():
        total += len(short.encode("utf-8", "surrogateescape")) + len(value.encode("utf-8", "surrogateescape"))
    if total > MAX_USER_META_BYTES:
        raise MetadataTooLarge(
            f"Your metadata headers exceed the maximum allowed metadata size of "
            f"{MAX_USER_META_BYTES} bytes ({total} given).", MaxSizeAllowed=str(MAX_USER_META_BYTES))
    return meta


def stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The standard headers S3 keeps with an object (lowercase names)."""
    out: dict[str, str] = {}
    for name in STORED_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if name == "content-encoding":
            # aws-chunked describes this request's framing, not the object: never store it.
            # Without it the value is stored exactly as sent.
            codings = [c.strip() for c in value.split(",")]
            if any(c.lower() == "aws-chunked" for c in codings):
                codings = [c for c in codings if c and c.lower() != "aws-chunked"]
                if not codings:
                    continue
                value = ",".join(codings)
        out[name] = value
    return out


def storage_class(headers: Mapping[str, str]) -> str:
    value = headers.get("x-amz-storage-class")
    if value is None or value == "":
        return "STANDARD"
    if value not in STORAGE_CLASSES:
        raise InvalidStorageClass(f"The storage class you specified is not valid: {value}.")
    return value


def object_headers(info: ObjectInfo) -> dict[str, str]:
    """Headers GET and HEAD return for an object (without Content-Length/Range)."""
    out = {
        "Last-Modified": http_date(info.last_modified),
        "ETag": quote_etag(info.etag),
        "Accept-Ranges": "bytes",
        "Content-Type": info.content_type,
    }
    for name, value in info.headers.items():
        canonical = _CANONICAL.get(name)
        if canonical and name != "content-type":
            out[canonical] = value
    for name, value in info.user_meta.items():
        out[META_PREFIX + name] = value
    if info.storage_class and info.storage_class != "STANDARD":
        out["x-amz-storage-class"] = info.storage_class
    if info.version_id and info.version_id != "null":
        out["x-amz-version-id"] = info.version_id
    return out


def _header_safe(value: str) -> bool:
    """True when ``value`` can be sent as a header value: no control character but tab."""
    return not any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value)


def check_response_overrides(query: Mapping[str, str]) -> None:
    """Refuse a ``response-*`` override no header may carry (CR, LF, NUL, DEL...).

    Checked before the object is read, so a GET or HEAD with such a parameter answers
    ``400 InvalidArgument`` naming it, never a half-sent response or a header injection.
    """
    for param in RESPONSE_OVERRIDES:
        value = query.get(param)
        if value is not None and not _header_safe(value):
            raise InvalidArgument(f"Header value for {param} contains a control character",
                                  ArgumentName=param, ArgumentValue=value.encode("unicode_escape").decode("ascii"))


def apply_response_overrides(out: dict[str, str], query: Mapping[str, str]) -> None:
    check_response_overrides(query)
    for param, header in RESPONSE_OVERRIDES.items():
        value = query.get(param)
        if value is not None:
            out[header] = value



# Canned ACLs that mean "only the owner", which is all this server does today.
# Headers asking for features not implemented yet: refusing beats silently ignoring them.
# (x-amz-tagging and the object-lock headers: buckets.s3.handlers.objectlock.apply_write_options.)
# Refused, not ignored: a client that asked for one of these and had it ignored would get
# something else than it asked for (an append ignored is an overwrite).
_UNSUPPORTED_WRITE_HEADERS = (
    ("x-amz-website-redirect-location", "Website redirects"),
    ("x-amz-write-offset-bytes", "Appending to an object (S3: directory buckets only)"),
    # an object lock event hold asked for and not kept would leave the object deletable
    ("x-amz-object-lock-event-hold", "Object lock event holds"),
    ("x-amz-object-lock-event-hold-duration-days", "Object lock event holds"),
    ("x-amz-object-lock-event-hold-duration-years", "Object lock event holds"),
)


def refuse_unsupported(headers: Mapping[str, str]) -> None:
    for name, feature in _UNSUPPORTED_WRITE_HEADERS:
        if name in headers:
            raise NotImplementedErr(f"{feature} ({name}) is not implemented by this server.")


def put_options(headers: Mapping[str, str]) -> PutOptions:
    """PutOptions carrying what S3 stores from a PUT/CreateMultipartUpload request."""
    from buckets.s3.sse import write_encryption

    refuse_unsupported(headers)
    return PutOptions(headers=stored_headers(headers), user_meta=user_metadata(headers),
                      storage_class=storage_class(headers), sse=write_encryption(headers))


def write_conditions(headers: Mapping[str, str]) -> tuple[str | None, bool]:
    """(If-Match ETag, If-None-Match: *) of a conditional write (PutObject, CopyObject,
    CompleteMultipartUpload).

    AWS takes only ``*`` in a write's If-None-Match; an ETag there is S3's own
    ``501 NotImplemented`` naming the header (not a 412), and this server answers the same.
    """
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise NotImplementedErr("A header you provided implies functionality that is not implemented",
                                Header="If-None-Match")
    if_match = headers.get("If-Match")
    return (unquote_etag(if_match) if if_match is not None else None), if_none_match is not None


def checksum_headers(values: Mapping[str, str], checksum_type: str | None) -> dict[str, str]:
    """x-amz-checksum-<alg> (+ x-amz-checksum-type) for stored checksum values."""
    from buckets import checksums

    out: dict[str, str] = {}
    for alg, value in values.items():
        if alg in checksums.ALGORITHMS:
            out[checksums.header_name(alg)] = value
    if out:
        out["x-amz-checksum-type"] = checksum_type or "FULL_OBJECT"
    return out
