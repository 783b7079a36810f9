"""S3 naming rules for buckets and keys."""

from __future__ import annotations

import re

from buckets.errors import InvalidBucketName, InvalidObjectName, KeyTooLongError

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
MAX_KEY_BYTES = 1024


def check_bucket_name(name: str) -> None:
    if not isinstance(name, str) or not _BUCKET_RE.fullmatch(name):  # fullmatch: '$' would admit 'abc\n'
        raise InvalidBucketName(resource=name if isinstance(name, str) else None, BucketName=str(name))
    if ".." in name or ".-" in name or "-." in name or _IP_RE.fullmatch(name):
        raise InvalidBucketName(resource=name, BucketName=name)
    if name.startswith("xn--") or name.startswith("sthree-") or name.endswith("-s3alias") \
            or name.endswith("--ol-s3"):
        raise InvalidBucketName(resource=name, BucketName=name)


def check_object_key(key: str) -> None:
    if not key:
        raise InvalidObjectName("Object key must not be empty.", resource=key)
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidObjectName("Object key is not valid UTF-8.") from None
    if len(raw) > MAX_KEY_BYTES:
        raise KeyTooLongError(resource=key[:64] + "...")
    if "\0" in key:
        raise InvalidObjectName("Object key must not contain NUL characters.", resource=key)
    for seg in key.split("/"):
        if seg in (".", ".."):
            raise InvalidObjectName("Object key must not contain '.' or '..' path segments.", resource=key)
