"""Conditional requests: If-Match / If-None-Match / If-(Un)Modified-Since and the
`x-amz-copy-source-if-*` family, evaluated with S3's precedence.

S3 follows RFC 7232: an entity-tag condition, when present, decides and the date condition
paired with it is ignored (If-Match true + If-Unmodified-Since false -> 200; If-None-Match
false + If-Modified-Since true -> 304). Dates compare at whole seconds, as Last-Modified
is sent. Unparseable dates are ignored, as S3 does.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping

from buckets.engine.types import ObjectInfo
from buckets.errors import PreconditionFailed
from buckets.s3.headers import etag_list, parse_http_date


class ReadOutcome(enum.Enum):
    PROCEED = 200
    NOT_MODIFIED = 304


def etag_matches(header: str, etag: str) -> bool:
    tags = etag_list(header)
    return "*" in tags or etag in tags


def _modified_after(info: ObjectInfo, when: float) -> bool:
    return int(info.last_modified) > int(when)


def _evaluate(headers: Mapping[str, str], info: ObjectInfo, names: tuple[str, str, str, str]) -> ReadOutcome:
    if_match, if_unmodified, if_none_match, if_modified = (headers.get(n) for n in names)
    if if_match is not None:
        if not etag_matches(if_match, info.etag):
            raise PreconditionFailed(Condition=names[0])
    else:
        unmodified_since = parse_http_date(if_unmodified)
        if unmodified_since is not None and _modified_after(info, unmodified_since):
            raise PreconditionFailed(Condition=names[1])
    if if_none_match is not None:
        if etag_matches(if_none_match, info.etag):
            return ReadOutcome.NOT_MODIFIED
    else:
        modified_since = parse_http_date(if_modified)
        # A date in the future is invalid (RFC 7232 3.3) and ignored.
        if modified_since is not None and modified_since <= time.time() and \
                not _modified_after(info, modified_since):
            return ReadOutcome.NOT_MODIFIED
    return ReadOutcome.PROCEED


def evaluate_read(headers: Mapping[str, str], info: ObjectInfo) -> ReadOutcome:
    """GET/HEAD: PROCEED, NOT_MODIFIED (304), or raise PreconditionFailed (412)."""
    return _evaluate(headers, info, ("If-Match", "If-Unmodified-Since", "If-None-Match", "If-Modified-Since"))


def has_read_conditions(headers: Mapping[str, str]) -> bool:
    return any(n in headers for n in ("If-Match", "If-Unmodified-Since", "If-None-Match", "If-Modified-Since"))


def check_copy_source(headers: Mapping[str, str], info: ObjectInfo) -> None:
    """CopyObject/UploadPartCopy: every failed `x-amz-copy-source-if-*` is a 412."""
    outcome = _evaluate(headers, info, (
        "x-amz-copy-source-if-match", "x-amz-copy-source-if-unmodified-since",
        "x-amz-copy-source-if-none-match", "x-amz-copy-source-if-modified-since"))
    if outcome is ReadOutcome.NOT_MODIFIED:
        raise PreconditionFailed(Condition="x-amz-copy-source-If-None-Match")
