"""Tag sets of objects and buckets: AWS's rules, the `x-amz-tagging` header and the
`<Tagging>` document.

Pure functions, no I/O. A tag set is a ``dict`` of key to value in the order the client sent
it; validation follows S3's documented limits and the answers S3 gives:

- at most 10 tags on an object (``BadRequest`` "Object tags cannot be greater than 10"),
  50 on a bucket (``BadRequest`` "Bucket tag count cannot be greater than 50");
- keys of 1 to 128 and values of 0 to 256 characters, counted as S3 counts them (UTF-16
  code units: S3 keeps tags in UTF-16);
- only Unicode letters, numbers and white space, and ``_ . : / = + - @``;
- unique keys, none starting with ``aws:`` (reserved for system tags).

Each violation is ``InvalidTag`` with S3's message, except the header's own syntax (a
duplicate key, bad percent-encoding), which is ``InvalidArgument`` naming the header.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from urllib.parse import unquote_plus

from buckets.errors import InvalidArgument, MalformedXML, define_error
from buckets.s3.xmlio import XmlBuilder, parse_document

MAX_OBJECT_TAGS = 10
MAX_BUCKET_TAGS = 50
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
MAX_TAGGING_XML = 64 * 1024
RESERVED_PREFIX = "aws:"
_SYMBOLS = frozenset("_.:/=+-@")

InvalidTag = define_error(
    "InvalidTag", "InvalidTag", 400,
    "The tag provided was not a valid tag. This error can occur if the tag did not pass input validation.")
TagCountExceeded = define_error("TagCountExceeded", "BadRequest", 400, "Object tags cannot be greater than 10")
NoSuchTagSet = define_error("NoSuchTagSet", "NoSuchTagSet", 404, "The TagSet does not exist")

HEADER_SYNTAX = ("The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters "
                 "without tag name duplicates.")


def utf16_length(text: str) -> int:
    """Length as S3 counts it: UTF-16 code units (a character beyond the BMP counts 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def allowed_text(text: str) -> bool:
    """Only Unicode letters (L*), numbers (N*), separators/white space (Z*) and ``_.:/=+-@``."""
    for ch in text:
        if ch in _SYMBOLS:
            continue
        category = unicodedata.category(ch)
        if category[0] not in "LNZ":
            return False
    return True


def validate(tags: Mapping[str, str] | list[tuple[str, str]], *, bucket: bool = False) -> dict[str, str]:
    """Check a tag set (pairs in the client's order, duplicates included) against S3's rules;
    returns it as a dict."""
    pairs = list(tags.items()) if isinstance(tags, Mapping) else list(tags)
    limit = MAX_BUCKET_TAGS if bucket else MAX_OBJECT_TAGS
    if len(pairs) > limit:
        if bucket:
            raise TagCountExceeded(f"Bucket tag count cannot be greater than {MAX_BUCKET_TAGS}")
        raise TagCountExceeded(f"Object tags cannot be greater than {MAX_OBJECT_TAGS}")
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidTag("Cannot provide multiple Tags with the same key", TagKey=key)
        if key.startswith(RESERVED_PREFIX):
            message = ("System tags cannot be added/updated by requester" if bucket
                       else "Your TagKey cannot be prefixed with aws:")
            raise InvalidTag(message, TagKey=key)
        if not key or not allowed_text(key):
            raise InvalidTag("The TagKey you have provided is invalid", TagKey=key)
        if utf16_length(key) > MAX_KEY_LENGTH:
            raise InvalidTag(f"The TagKey you have provided is too long, max {MAX_KEY_LENGTH}", TagKey=key)
        if not allowed_text(value):
            raise InvalidTag("The TagValue you have provided is invalid", TagKey=key, TagValue=value)
        if utf16_length(value) > MAX_VALUE_LENGTH:
            raise InvalidTag(f"The TagValue you have provided is too long, max {MAX_VALUE_LENGTH}",
                             TagKey=key, TagValue=value)
        out[key] = value
    return out


def parse_header(value: str | None) -> dict[str, str]:
    """``x-amz-tagging``: URL query form, ``k1=v1&k2=v2`` (``+`` is a space, a key without
    ``=`` has the empty value). Checked as an object's tag set."""
    if value is None or not value.strip():
        return {}
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in value.split("&"):
        if not item:
            continue
        if item.count("=") > 1:
            raise InvalidArgument(HEADER_SYNTAX, ArgumentName="x-amz-tagging", ArgumentValue=value)
        raw_key, _, raw_value = item.partition("=")
        try:
            key = unquote_plus(raw_key, encoding="utf-8", errors="strict")
            val = unquote_plus(raw_value, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise InvalidArgument(HEADER_SYNTAX, ArgumentName="x-amz-tagging", ArgumentValue=value) from None
        if key in seen:
            raise InvalidArgument(HEADER_SYNTAX, ArgumentName="x-amz-tagging", ArgumentValue=value)
        seen.add(key)
        pairs.append((key, val))
    return validate(pairs)


def parse_document_tags(body: bytes, *, bucket: bool = False) -> dict[str, str]:
    """A ``<Tagging><TagSet><Tag><Key/><Value/></Tag>...</TagSet></Tagging>`` request
    document (PutObjectTagging, PutBucketTagging). Structure errors are MalformedXML."""
    doc = parse_document(body, "Tagging")
    sets = doc.find_all("TagSet")
    if len(sets) != 1 or len(doc.children) != 1:
        raise MalformedXML()
    pairs: list[tuple[str, str]] = []
    for tag in sets[0].children:
        if tag.name != "Tag":
            raise MalformedXML()
        keys, values = tag.find_all("Key"), tag.find_all("Value")
        if len(keys) != 1 or len(values) != 1 or len(tag.children) != 2:
            raise MalformedXML()
        if keys[0].children or values[0].children:
            raise MalformedXML()
        pairs.append((keys[0].text, values[0].text))
    return validate(pairs, bucket=bucket)


def tagging_xml(tags: Mapping[str, str]) -> bytes:
    """GetObjectTagging / GetBucketTagging: the tag set, keys in order."""
    doc = XmlBuilder("Tagging")
    doc.open("TagSet")
    for key in sorted(tags):
        doc.open("Tag").elem("Key", key).elem("Value", tags[key]).close()
    doc.close()
    return doc.finish()


def directive(headers: Mapping[str, str]) -> str:
    """CopyObject's ``x-amz-tagging-directive``: COPY (the default) or REPLACE."""
    raw = headers.get("x-amz-tagging-directive")
    if raw is None:
        return "COPY"
    value = raw.strip().upper()
    if value not in ("COPY", "REPLACE"):
        raise InvalidArgument("Unknown tagging directive.", ArgumentName="x-amz-tagging-directive",
                              ArgumentValue=raw)
    return value
