"""A bucket's CORS rules: the XML document in and out, matching a request, the headers.

A configuration is a list of rules (at most 100), each a plain dict kept in the bucket's
record under ``cors`` (so it replicates and persists with the bucket's other settings):

    {"origins": ["https://*.example.com"], "methods": ["GET", "PUT"],
     "headers": ["*"], "expose": ["ETag"], "max_age": 3000, "id": "uploads"}

Matching follows S3: rules are tried in order and the first whose AllowedOrigin matches
the request's Origin (one ``*`` wildcard matching any run of characters, case-sensitive),
whose AllowedMethod lists the method (the ``Access-Control-Request-Method`` of a
preflight, the request's own method otherwise) and, for a preflight, whose AllowedHeader
patterns cover every name in ``Access-Control-Request-Headers`` (case-insensitive) wins.

``response_hook`` adds the headers of the matching rule to every response of a bucket
with rules whose request carries an ``Origin`` (errors included); requests without an
Origin cost one dictionary lookup of a header and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from buckets.errors import InvalidRequest, MalformedXML, define_error
from buckets.s3.router import Target
from buckets.s3.xmlio import XmlBuilder, XmlNode, parse_document

MAX_RULES = 100
MAX_ID_LENGTH = 255
METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"

NoSuchCORSConfiguration = define_error("NoSuchCORSConfiguration", "NoSuchCORSConfiguration", 404,
                                       "The CORS configuration does not exist")
CORSForbidden = define_error("CORSForbidden", "AccessForbidden", 403,
                             "CORSResponse: This CORS request is not allowed. This is usually because the "
                             "evalution of Origin, request method / Access-Control-Request-Method or "
                             "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")
CORSBadRequest = define_error("CORSBadRequest", "BadRequest", 400,
                              "Insufficient information. Origin request header needed.")
CORS_NOT_ENABLED = "CORSResponse: CORS is not enabled for this bucket."

_RULE_ELEMENTS = frozenset({"ID", "AllowedOrigin", "AllowedMethod", "AllowedHeader", "ExposeHeader",
                            "MaxAgeSeconds"})


# --- the document ------------------------------------------------------------------------------


def _one(rule: XmlNode, name: str) -> str | None:
    nodes = rule.find_all(name)
    if len(nodes) > 1:
        raise MalformedXML(f"A CORSRule may have only one {name}.")
    return nodes[0].text.strip() if nodes else None


def _values(rule: XmlNode, name: str) -> list[str]:
    values = []
    for node in rule.find_all(name):
        if node.children:
            raise MalformedXML()
        values.append(node.text.strip())
    return values


def _check_wildcards(kind: str, values: Iterable[str]) -> None:
    for value in values:
        if not value:
            raise MalformedXML(f"{kind} must not be empty.")
        if value.count("*") > 1:
            raise InvalidRequest(f'{kind} "{value}" can not have more than one wildcard.')


def _parse_rule(node: XmlNode) -> dict[str, Any]:
    for child in node.children:
        if child.name not in _RULE_ELEMENTS:
            raise MalformedXML(f"Unexpected element {child.name} in CORSRule.")
    origins = _values(node, "AllowedOrigin")
    methods = _values(node, "AllowedMethod")
    if not origins or not methods:
        raise MalformedXML("Each CORSRule must identify at least one origin and one method.")
    for method in methods:
        if method not in METHODS:
            raise InvalidRequest(f'Found unsupported HTTP method in CORS config. Unsupported method is {method}')
    _check_wildcards("AllowedOrigin", origins)
    headers = _values(node, "AllowedHeader")
    _check_wildcards("AllowedHeader", headers)
    expose = _values(node, "ExposeHeader")
    for header in expose:
        if not header:
            raise MalformedXML("ExposeHeader must not be empty.")
        if "*" in header:
            raise InvalidRequest(f'ExposeHeader "{header}" contains wildcard. We currently do not support '
                                 f'wildcard for ExposeHeader.')
        if any(ord(ch) < 0x21 or ord(ch) > 0x7E or ch in '()<>@,;:\\"/[]?={}' for ch in header):
            raise InvalidRequest(f'ExposeHeader "{header}" contains invalid character.')
    rule: dict[str, Any] = {"origins": origins, "methods": methods}
    if headers:
        rule["headers"] = headers
    if expose:
        rule["expose"] = expose
    max_age = _one(node, "MaxAgeSeconds")
    if max_age is not None and max_age != "":
        if not max_age.isdigit() or not max_age.isascii() or int(max_age) > 2**31 - 1:
            raise MalformedXML(f'MaxAgeSeconds "{max_age}" is not a valid value.')
        rule["max_age"] = int(max_age)
    rule_id = _one(node, "ID")
    if rule_id:
        if len(rule_id) > MAX_ID_LENGTH:
            raise InvalidRequest(f"The ID of a CORSRule must not be longer than {MAX_ID_LENGTH} characters.")
        rule["id"] = rule_id
    return rule


def parse_configuration(body: bytes) -> list[dict[str, Any]]:
    """A ``CORSConfiguration`` document as the list of rules to store (MalformedXML or
    InvalidRequest, with S3's messages, for what S3 refuses)."""
    doc = parse_document(body, "CORSConfiguration")
    for child in doc.children:
        if child.name != "CORSRule":
            raise MalformedXML(f"Unexpected element {child.name} in CORSConfiguration.")
    nodes = doc.find_all("CORSRule")
    if not nodes:
        raise MalformedXML("A CORSConfiguration must hold at least one CORSRule.")
    if len(nodes) > MAX_RULES:
        raise InvalidRequest(f"The number of CORS rules should not exceed allowed limit of {MAX_RULES} rules.")
    return [_parse_rule(node) for node in nodes]


def configuration_xml(rules: list[Mapping[str, Any]]) -> bytes:
    """GetBucketCors's document, elements in the order S3 sends them."""
    doc = XmlBuilder("CORSConfiguration")
    for rule in rules:
        doc.open("CORSRule")
        doc.elem("ID", rule.get("id"))
        for name, key in (("AllowedHeader", "headers"), ("AllowedMethod", "methods"),
                          ("AllowedOrigin", "origins"), ("ExposeHeader", "expose")):
            for value in rule.get(key) or ():
                doc.elem(name, value)
        doc.elem("MaxAgeSeconds", rule.get("max_age"))
        doc.close()
    return doc.finish()


# --- matching ----------------------------------------------------------------------------------


def wildcard_match(pattern: str, value: str) -> bool:
    """``pattern`` with at most one ``*`` (any run of characters, possibly empty)."""
    star = pattern.find("*")
    if star < 0:
        return pattern == value
    head, tail = pattern[:star], pattern[star + 1:]
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def _origin_pattern(rule: Mapping[str, Any], origin: str) -> str | None:
    for pattern in rule.get("origins") or ():
        if wildcard_match(pattern, origin):
            return pattern
    return None


def _headers_allowed(rule: Mapping[str, Any], requested: list[str]) -> bool:
    allowed = [h.lower() for h in rule.get("headers") or ()]
    return all(any(wildcard_match(pattern, name) for pattern in allowed) for name in requested)


def find_rule(rules: Iterable[Mapping[str, Any]], origin: str, method: str,
              requested_headers: list[str] | None = None) -> Mapping[str, Any] | None:
    """The first rule allowing ``origin`` to use ``method`` (and, for a preflight, to send
    ``requested_headers``: lower-case names), or None."""
    for rule in rules:
        if method not in (rule.get("methods") or ()):
            continue
        if _origin_pattern(rule, origin) is None:
            continue
        if requested_headers and not _headers_allowed(rule, requested_headers):
            continue
        return rule
    return None


def requested_headers(value: str | None) -> list[str]:
    """``Access-Control-Request-Headers`` as lower-case names."""
    if not value:
        return []
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def rule_headers(rule: Mapping[str, Any], origin: str, *, allow_headers: list[str] | None = None) -> dict[str, str]:
    """The Access-Control-* headers S3 sends for a request that ``rule`` allows."""
    out: dict[str, str] = {}
    if "*" in (rule.get("origins") or ()):
        out["Access-Control-Allow-Origin"] = "*"
    else:
        # Only an origin named by the rule (not the wildcard) may send credentials.
        out["Access-Control-Allow-Origin"] = origin
        out["Access-Control-Allow-Credentials"] = "true"
    out["Access-Control-Allow-Methods"] = ", ".join(rule.get("methods") or ())
    if allow_headers:
        out["Access-Control-Allow-Headers"] = ", ".join(allow_headers)
    if rule.get("expose"):
        out["Access-Control-Expose-Headers"] = ", ".join(rule["expose"])
    if rule.get("max_age") is not None:
        out["Access-Control-Max-Age"] = str(rule["max_age"])
    out["Vary"] = VARY
    return out


def bucket_rules(store: Any, bucket: str) -> list[Mapping[str, Any]] | None:
    """The bucket's rules from this node's (local, synchronous) view of the catalog."""
    catalog = getattr(store, "catalog", None)
    if catalog is None:
        return None
    try:
        record = catalog.get_bucket(bucket)
    except Exception:  # noqa: BLE001 - a name the catalog cannot even look up has no rules
        return None
    return record.get("cors") if record else None


def response_hook(store: Any, target_key: web.RequestKey[Target]):
    """An ``on_response_prepare`` hook adding the CORS headers of a matching rule to every
    response (success or error) of a bucket with rules, when the request has an Origin.
    ``target_key`` is where the pipeline keeps the request's routed ``Target``."""

    async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None or request.method == "OPTIONS":  # a preflight answers for itself
            return
        target = request.get(target_key)
        bucket = getattr(target, "bucket", None)
        if not bucket:
            return
        rules = bucket_rules(store, bucket)
        if not rules:
            return
        rule = find_rule(rules, origin, request.method)
        if rule is None:
            response.headers["Vary"] = VARY
            return
        response.headers.update(rule_headers(rule, origin))

    return add_cors_headers
