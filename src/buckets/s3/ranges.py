"""HTTP Range parsing for GET (`Range`) and UploadPartCopy (`x-amz-copy-source-range`).

S3 serves one byte range. A Range header it cannot use (bad syntax, other units, several
ranges, last before first) is ignored and the whole object is returned with 200, as AWS
does; only a well-formed single range outside the object is an error (416, raised by the
engine). Numbers go through `params.decimal`, so one of any length is only a position:
``bytes=<huge>-`` starts past the end (416), ``bytes=0-<huge>`` is clamped to the object and
``bytes=-<huge>`` is all of it (206). An empty object has no byte to point at: a suffix
range of it is the whole (empty) object with 200, any other range is a 416 (the engine).
"""

from __future__ import annotations

import re

from buckets.errors import InvalidArgument
from buckets.s3.params import decimal

# (first, last) inclusive; (first, None) open-ended; (None, n) the last n bytes.
HttpRange = tuple[int | None, int | None]

_SINGLE = re.compile(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*", re.IGNORECASE | re.ASCII)


def _before(a: str, b: str) -> bool:
    """Whether the decimal ``a`` is less than ``b``, exactly, at any length."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def parse_range(header: str | None) -> HttpRange | None:
    """The engine's range tuple for a usable Range header, else None (serve everything)."""
    if not header or "," in header:
        return None
    m = _SINGLE.fullmatch(header)
    if not m:
        return None
    first_text, last_text = m.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        return (None, decimal(last_text))
    if not last_text:
        return (decimal(first_text), None)
    if _before(last_text, first_text):
        return None  # syntactically invalid per RFC 9110: ignored
    return (decimal(first_text), decimal(last_text))


_COPY_RANGE = re.compile(r"bytes=([0-9]+)-([0-9]+)", re.ASCII)


def parse_copy_source_range(header: str, source_size: int) -> tuple[int, int]:
    """`bytes=first-last` within the source, both required; else InvalidArgument."""
    m = _COPY_RANGE.fullmatch(header.strip())
    if not m:
        raise InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first "
            "and last are the zero-based offsets of the first and last bytes to copy",
            ArgumentName="x-amz-copy-source-range", ArgumentValue=header)
    first, last = decimal(m.group(1)), decimal(m.group(2))
    assert first is not None and last is not None  # the pattern admits digits only
    if _before(m.group(2), m.group(1)) or last >= source_size:
        raise InvalidArgument(
            f"Range specified is not valid for source object of size: {source_size}",
            ArgumentName="x-amz-copy-source-range", ArgumentValue=header)
    return first, last
