"""S3 XML in and out.

Owns the two directions of S3's XML: building response documents (element order is the
caller's, as AWS emits it; text is escaped here) and parsing the small request documents
clients send (DeleteObjects, CompleteMultipartUpload, CreateBucketConfiguration), with a
size cap and namespace stripping. Nothing here knows about HTTP or the engine.
"""

from __future__ import annotations

import functools
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

from buckets.errors import MalformedXML

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

# Request documents are small; anything larger is refused before it is parsed.
MAX_REQUEST_XML = 2 * 1024 * 1024

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;"}
# Characters XML 1.0 cannot carry literally; AWS emits them as numeric references.
_NEEDS_ESCAPE = re.compile(r'[&<>"\r\x00-\x08\x0b\x0c\x0e-\x1f]')


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group(0)
    return _ESCAPES.get(ch) or f"&#x{ord(ch):x};"


def escape(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is None:  # the common case: nothing to replace
        return text
    return _NEEDS_ESCAPE.sub(_escape_char, text)


@functools.lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso8601(ts: float) -> str:
    """S3's timestamp form in XML: 2009-10-12T17:50:30.000Z."""
    ms = int(round((ts - int(ts)) * 1000))
    if ms >= 1000:
        ts, ms = int(ts) + 1, 0
    return f"{_iso_seconds(int(ts))}.{ms:03d}Z"


class XmlBuilder:
    """Append-only builder for one response document; `elem` escapes text."""

    __slots__ = ("_parts", "_root_stack")

    def __init__(self, root: str, *, namespace: bool = True) -> None:
        ns = f' xmlns="{S3_NS}"' if namespace else ""
        self._parts: list[str] = [XML_DECL, f"<{root}{ns}>"]
        self._root_stack = [root]

    def elem(self, name: str, value: object) -> "XmlBuilder":
        if value is None:
            return self
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = escape(str(value))
        self._parts.append(f"<{name}>{text}</{name}>" if text else f"<{name}></{name}>")
        return self

    def raw(self, markup: str) -> "XmlBuilder":
        """Append markup the caller has already escaped (hot paths such as listings)."""
        self._parts.append(markup)
        return self

    def text(self, value: str) -> "XmlBuilder":
        """Escaped character data inside the currently open element."""
        self._parts.append(escape(value))
        return self

    def open(self, name: str) -> "XmlBuilder":
        self._parts.append(f"<{name}>")
        self._root_stack.append(name)
        return self

    def close(self) -> "XmlBuilder":
        self._parts.append(f"</{self._root_stack.pop()}>")
        return self

    def elems(self, pairs: Iterable[tuple[str, object]]) -> "XmlBuilder":
        for name, value in pairs:
            self.elem(name, value)
        return self

    def finish(self) -> bytes:
        while self._root_stack:
            self.close()
        return "".join(self._parts).encode("utf-8")


# --- parsing -------------------------------------------------------------------------------


@dataclass(slots=True)
class XmlNode:
    """A parsed element with its namespace stripped: name, text, children in order."""

    name: str
    text: str
    children: list["XmlNode"]

    def find(self, name: str) -> "XmlNode | None":
        for child in self.children:
            if child.name == name:
                return child
        return None

    def find_all(self, name: str) -> list["XmlNode"]:
        return [c for c in self.children if c.name == name]

    def child_text(self, name: str, default: str | None = None) -> str | None:
        node = self.find(name)
        return node.text if node is not None else default


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag


def _convert(el: ET.Element) -> XmlNode:
    return XmlNode(_local(el.tag), (el.text or "").strip() if len(el) else (el.text or ""),
                   [_convert(c) for c in el])


def parse_document(body: bytes, expected_root: str) -> XmlNode:
    """Parse a request document; any syntax error, DTD or wrong root is MalformedXML."""
    if len(body) > MAX_REQUEST_XML:
        raise MalformedXML("The XML you provided was larger than the maximum allowed size.")
    head = body[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in body.lower():
        raise MalformedXML()
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError):
        raise MalformedXML() from None
    node = _convert(root)
    if node.name != expected_root:
        raise MalformedXML()
    return node
