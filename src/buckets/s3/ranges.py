"""HTTP Range parsing for GET (`Range`) and UploadPartCopy (`x-amz-copy-source-range`).

S3 serves one byte range. A Range header it cannot use (bad syntax, other units, several
ranges) is ignored and the whole object is returned with 200, as AWS does; only a
well-formed single range outside the object is an error (416, raised by the engine).
"""

from __future__ import annotations

import re

from buckets.errors import InvalidArgument

# (first, last) inclusive; (first, None) open-ended; (None, n) the last n bytes.
HttpRange = tuple[int | None, int | None]

_SINGLE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str | None) -> HttpRange | None:
    """The engine's range tuple for a usable Range header, else None (serve everything)."""
    if not header or "," in header:
        return None
    m = _SINGLE.match(header)
    if not m:
        return None
    first_text, last_text = m.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        return (None, int(last_text))
    first = int(first_text)
    if not last_text:
        return (first, None)
    last = int(last_text)
    if last < first:
        return None  # syntactically invalid per RFC 7233: ignored
    return (first, last)


_COPY_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


def parse_copy_source_range(header: str, source_size: int) -> tuple[int, int]:
    """`bytes=first-last` within the source, both required; else InvalidArgument."""
    m = _COPY_RANGE.match(header.strip())
    if not m:
        raise InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first "
            "and last are the zero-based offsets of the first and last bytes to copy",
            ArgumentName="x-amz-copy-source-range", ArgumentValue=header)
    first, last = int(m.group(1)), int(m.group(2))
    if first > last or last >= source_size:
        raise InvalidArgument(
            f"Range specified is not valid for source object of size: {source_size}",
            ArgumentName="x-amz-copy-source-range", ArgumentValue=header)
    return first, last
