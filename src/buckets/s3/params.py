"""Numbers in requests: the one parser for every decimal a header, query parameter or Range carries.

Python's ``int()`` is the wrong tool for request text: it accepts ``+5``, `` 5 ``, ``1_000``
and non-ASCII digits (``٣``), and it refuses strings of more than 4,300 digits with a
``ValueError`` that, uncaught, became a 500. Every number a request carries goes through
`decimal` instead:

- only ASCII digits ``0-9``, at least one; no sign, no whitespace, no separators;
- leading zeros are allowed (``007`` is 7) whatever their count;
- a value with more than `MAX_DIGITS` significant digits comes back as `BEYOND`, a number
  larger than every limit and every object size. Callers compare it against their bounds
  like any other value: a huge ``partNumber`` is above 10000, a huge ``bytes=N-`` starts past
  the end of any object, a huge suffix covers the whole object. Nothing ever converts the
  raw text, so the cost is linear in its length and nothing can raise.

On top of it, `int_argument` and `part_number` validate the query parameters and headers
S3 answers with ``InvalidArgument`` (400, ``ArgumentName``/``ArgumentValue`` echoing the
request), with S3's messages.
"""

from __future__ import annotations

from buckets.errors import InvalidArgument

MAX_DIGITS = 19
BEYOND = 10**MAX_DIGITS  # above 2**63 - 1: larger than any bound or size this server has
INT32_MAX = 2**31 - 1
MAX_PART_NUMBER = 10000


def decimal(text: str | None) -> int | None:
    """The value of a run of ASCII digits (`BEYOND` when too long to matter), else None."""
    if not text or not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    if len(significant) > MAX_DIGITS:
        return BEYOND
    return int(significant) if significant else 0


def signed_decimal(text: str | None) -> int | None:
    """`decimal` with an optional leading ``-`` (``-BEYOND`` for a huge negative), else None."""
    if text and text[0] == "-":
        value = decimal(text[1:])
        return None if value is None else -value
    return decimal(text)


def int_argument(raw: str | None, name: str, *, default: int, minimum: int = 0,
                 maximum: int = INT32_MAX, cap: int | None = None) -> int:
    """A numeric query parameter or header, validated as S3 does.

    Absent or empty: ``default``. Not an integer, or outside the signed 32-bit range:
    ``InvalidArgument`` "Provided <name> not an integer or within integer range". An integer
    outside ``[minimum, maximum]``: ``InvalidArgument`` "Argument <name> must be an integer
    between <minimum> and <maximum>". Values above ``cap`` are served as ``cap`` (S3 caps
    max-keys at 1000 without complaint).
    """
    if raw is None or raw == "":
        return default
    value = signed_decimal(raw)
    if value is None or not -INT32_MAX - 1 <= value <= INT32_MAX:
        raise InvalidArgument(f"Provided {name} not an integer or within integer range",
                              ArgumentName=name, ArgumentValue=raw)
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"Argument {name} must be an integer between {minimum} and {maximum}",
                              ArgumentName=name, ArgumentValue=raw)
    return min(value, cap) if cap is not None else value


def part_number(raw: str | None, name: str = "partNumber") -> int:
    """``partNumber`` of UploadPart, UploadPartCopy, GetObject and HeadObject: 1..10000."""
    value = decimal(raw)
    if value is None or not 1 <= value <= MAX_PART_NUMBER:
        raise InvalidArgument(f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive",
                              ArgumentName=name, ArgumentValue=raw or "")
    return value
