"""Small response helpers shared by the handler modules."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web

from buckets.errors import InvalidArgument
from buckets.s3.context import S3Request
from buckets.s3.xmlio import XmlBuilder


def xml_response(body: bytes, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    out = {"Content-Type": "application/xml"}
    if headers:
        out.update(headers)
    return web.Response(status=status, body=body, headers=out)


def empty_response(status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(status=status, headers=headers or {})
    return resp


def add_owner(doc: XmlBuilder, req: S3Request, element: str = "Owner") -> None:
    owner_id, display = req.owner()
    doc.open(element).elem("ID", owner_id).elem("DisplayName", display).close()


def encode_token(marker: str) -> str:
    """An opaque continuation token carrying the last key (or prefix) returned."""
    return base64.urlsafe_b64encode(b"k1:" + marker.encode("utf-8", "surrogateescape")).decode("ascii")


def decode_token(token: str, name: str = "continuation-token") -> str:
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        if not raw.startswith(b"k1:"):
            raise ValueError
        return raw[3:].decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise InvalidArgument("The continuation token provided is incorrect",
                              ArgumentName=name, ArgumentValue=token) from None


def name_encoder(req: S3Request) -> tuple[Callable[[str], str], str | None]:
    """How listings write key names: as-is, or URL-encoded for `encoding-type=url`."""
    encoding = req.query.get("encoding-type")
    if encoding is None or encoding == "":
        return (lambda s: s), None
    if encoding.lower() != "url":
        raise InvalidArgument("Invalid Encoding Method specified in Request",
                              ArgumentName="encoding-type", ArgumentValue=encoding)
    return (lambda s: quote(s, safe="/", encoding="utf-8", errors="surrogateescape")), "url"
