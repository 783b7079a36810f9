"""S3 XML in and out.

Owns the two directions of S3's XML: building response documents (element order is the
caller's, as AWS emits it; text is escaped here) and parsing the small request documents
clients send (DeleteObjects, CompleteMultipartUpload, CreateBucketConfiguration). Every
request document goes through `parse_document`, which bounds size, depth and element count,
accepts UTF-8 only, strips namespaces, and refuses any DTD, entity declaration or processing
instruction wherever it appears. Nothing here knows about HTTP or the engine.
"""

from __future__ import annotations

import functools
import pyexpat
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from buckets.errors import MalformedXML

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

# Request documents are small; anything larger is refused before it is parsed.
MAX_REQUEST_XML = 2 * 1024 * 1024
# S3's request schemas nest 3 levels (Delete/Object/Key); the bound leaves room for any
# future document while keeping a hostile one from nesting thousands deep.
MAX_XML_DEPTH = 32
# The largest legitimate document, a CompleteMultipartUpload of 10,000 parts each with
# PartNumber, ETag and checksum elements, has at most 80,001 elements; the cap bounds the
# tree a 2 MiB body of empty elements (`<a/>` x 500,000) could otherwise build.
MAX_XML_ELEMENTS = 128 * 1024

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


class _Refused(Exception):
    """Raised from an expat handler to stop the parse; becomes MalformedXML."""


# Encodings a document may declare. The bytes are always read as UTF-8 (the parser is
# created for UTF-8, which overrides the declaration); US-ASCII is its subset.
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_ASCII_NAMES = frozenset({"us-ascii", "ascii"})


class _TreeBuilder:
    """Builds XmlNodes from expat events with an explicit stack (no recursion anywhere),
    counting depth and elements, and refusing every declaration a request has no use for."""

    __slots__ = ("_ascii_only", "_count", "_expected_root", "_stack", "_texts", "root")

    def __init__(self, expected_root: str, ascii_only: bool) -> None:
        self._expected_root = expected_root
        self._ascii_only = ascii_only
        self._stack: list[XmlNode] = []
        self._texts: list[list[str]] = []  # text before each open element's first child
        self._count = 0
        self.root: XmlNode | None = None

    def attach(self, parser: "pyexpat.XMLParserType") -> None:
        parser.buffer_text = True
        parser.XmlDeclHandler = self.xml_decl
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.data
        # Refused wherever they appear: a DOCTYPE (and with it every entity, parameter
        # entity, notation, element or attribute-list declaration, which can only occur
        # inside one), a processing instruction, any external or skipped entity reference.
        for name in ("StartDoctypeDeclHandler", "EntityDeclHandler", "UnparsedEntityDeclHandler",
                     "NotationDeclHandler", "ElementDeclHandler", "AttlistDeclHandler",
                     "ProcessingInstructionHandler", "SkippedEntityHandler", "ExternalEntityRefHandler"):
            setattr(parser, name, self.refuse)

    def refuse(self, *_args: object) -> None:
        raise _Refused()

    def xml_decl(self, _version: str, encoding: str | None, _standalone: int) -> None:
        if encoding is None:
            return
        name = encoding.strip().lower()
        if name in _UTF8_NAMES or (name in _ASCII_NAMES and self._ascii_only):
            return
        raise _Refused()

    def start(self, tag: str, _attrs: object) -> None:
        self._count += 1
        if len(self._stack) >= MAX_XML_DEPTH or self._count > MAX_XML_ELEMENTS:
            raise _Refused()
        node = XmlNode(_local(tag), "", [])
        if self._stack:
            self._stack[-1].children.append(node)
        elif node.name != self._expected_root:
            raise _Refused()  # the wrong document: no need to read further
        else:
            self.root = node
        self._stack.append(node)
        self._texts.append([])

    def end(self, _tag: str) -> None:
        node = self._stack.pop()
        text = "".join(self._texts.pop())
        # As ElementTree's `text`: what precedes the first child, stripped when there are children.
        node.text = text.strip() if node.children else text

    def data(self, text: str) -> None:
        if self._stack and not self._stack[-1].children:
            self._texts[-1].append(text)


def _local(tag: str) -> str:
    # Namespaced names arrive as "<uri>}<local>" (the parser's separator is "}").
    return tag.rsplit("}", 1)[-1]


def parse_document(body: bytes, expected_root: str) -> XmlNode:
    """Parse a request document; anything but a well-formed UTF-8 document rooted at
    `expected_root`, within the size, depth and element bounds and free of DTDs, entity
    declarations and processing instructions, is MalformedXML."""
    if len(body) > MAX_REQUEST_XML:
        raise MalformedXML("The XML you provided was larger than the maximum allowed size.")
    # Only UTF-8 is accepted, as S3 does. A forced encoding still yields to a UTF-16 byte
    # order mark or a NUL-patterned start in expat, so those are refused here; a NUL is
    # never legal XML and 0xFE/0xFF never legal UTF-8. Every other byte sequence is
    # validated as UTF-8 by the parser itself.
    if b"\x00" in body or body[:1] in (b"\xfe", b"\xff"):
        raise MalformedXML()
    builder = _TreeBuilder(expected_root, ascii_only=body.isascii())
    parser = pyexpat.ParserCreate("UTF-8", "}")
    parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
    builder.attach(parser)
    try:
        parser.Parse(body, True)
    except (_Refused, pyexpat.ExpatError, ValueError):
        raise MalformedXML() from None
    if builder.root is None:
        raise MalformedXML()
    return builder.root
