"""A bucket's lifecycle configuration: the XML S3 clients send, checked as AWS checks it,
and the plain data the bucket record keeps (``lifecycle``).

Pure: bytes in, a list of rule dicts out (or an S3 error), and back to XML. Nothing here
knows about HTTP, the engine or the clock (``buckets.lifecycle.rules`` evaluates rules).

A stored rule is JSON-able::

    {"id": "logs", "status": "Enabled",
     "shape": "legacy" | "empty" | "prefix" | "tag" | "gt" | "lt" | "and",
     "filter": {"prefix": "logs/", "tags": [["k", "v"]], "gt": 100, "lt": None},
     "expiration": {"days": 30} | {"date": 1893456000.0} | {"marker": True},   (optional)
     "noncurrent": {"days": 7, "newer": 2 | None},                              (optional)
     "abort": {"days": 3}}                                                       (optional)

``shape`` remembers how the filter was written (the legacy top-level ``Prefix``, an empty
``Filter``, one predicate, or ``And``) so that GetBucketLifecycleConfiguration answers with
the document's own form.
"""

from __future__ import annotations

import base64
import calendar
import re
import uuid

from buckets.errors import InvalidArgument, InvalidRequest, MalformedXML, NotImplementedErr
from buckets.s3.xmlio import XmlBuilder, XmlNode, iso8601, parse_document

MAX_RULES = 1000
MAX_ID_LENGTH = 255
MAX_PREFIX_LENGTH = 1024
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
MAX_NEWER_NONCURRENT = 100
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
DAY = 86400

RULE_ELEMENTS = frozenset({"ID", "Status", "Prefix", "Filter", "Expiration", "NoncurrentVersionExpiration",
                           "AbortIncompleteMultipartUpload", "Transition", "NoncurrentVersionTransition"})
ACTIONS = ("Expiration", "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload")
_PREDICATES = ("Prefix", "Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan")
_SHAPE_OF = {"Prefix": "prefix", "Tag": "tag", "ObjectSizeGreaterThan": "gt", "ObjectSizeLessThan": "lt",
             "And": "and"}

# ISO 8601 as clients write a lifecycle Date: a day, or a day and a time with an optional
# fraction and zone (boto3 and the aws cli send 2030-01-01T00:00:00Z).
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?)?")
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


# --- parsing ---------------------------------------------------------------------------------


def parse_configuration(body: bytes) -> list[dict]:
    """A LifecycleConfiguration document as the bucket record keeps it (see module docstring).

    MalformedXML for what the schema refuses (unknown or repeated elements, a bad Status,
    Days and Date together, a filter with two predicates outside And, ...); InvalidArgument
    and InvalidRequest with AWS's messages for values the schema allows but S3 does not.
    """
    doc = parse_document(body, "LifecycleConfiguration")
    if any(child.name != "Rule" for child in doc.children):
        raise MalformedXML()
    if not doc.children:
        raise MalformedXML()
    if len(doc.children) > MAX_RULES:
        raise InvalidRequest(f"The number of lifecycle rules must not exceed the allowed limit of {MAX_RULES} rules.")
    rules: list[dict] = []
    ids: set[str] = set()
    for node in doc.children:
        rule = _parse_rule(node)
        if rule["id"] in ids:
            raise InvalidArgument("Rule ID must be unique. Found same ID for more than one rule.",
                                  ArgumentName="ID", ArgumentValue=rule["id"])
        ids.add(rule["id"])
        rules.append(rule)
    return rules


def _single(node: XmlNode, allowed: frozenset[str] | tuple[str, ...]) -> dict[str, XmlNode]:
    """The children of ``node`` by name: each allowed at most once, nothing else allowed."""
    found: dict[str, XmlNode] = {}
    for child in node.children:
        if child.name not in allowed or child.name in found:
            raise MalformedXML()
        found[child.name] = child
    return found


def _leaf(node: XmlNode) -> str:
    if node.children:
        raise MalformedXML()
    return node.text


def _integer(node: XmlNode, maximum: int = INT32_MAX) -> int:
    """An xs:int (or xs:long) element: anything else is refused by the schema (MalformedXML)."""
    text = _leaf(node).strip()
    if not _INTEGER.fullmatch(text):
        raise MalformedXML()
    value = int(text)
    if not -maximum - 1 <= value <= maximum:
        raise MalformedXML()
    return value


def _positive(node: XmlNode, element: str, action: str) -> int:
    value = _integer(node)
    if value <= 0:
        raise InvalidArgument(f"'{element}' for {action} action must be a positive integer",
                              ArgumentName=element, ArgumentValue=node.text.strip())
    return value


def _generated_id() -> str:
    """An ID for a rule sent without one, in the form S3 gives (base64 of a UUID)."""
    return base64.b64encode(str(uuid.uuid4()).encode()).decode("ascii")


def _parse_rule(node: XmlNode) -> dict:
    parts = _single(node, RULE_ELEMENTS)
    if "Transition" in parts or "NoncurrentVersionTransition" in parts:
        raise NotImplementedErr("Transition and NoncurrentVersionTransition actions are not implemented by this "
                                "server: it has one storage class.")
    status = _leaf(parts["Status"]) if "Status" in parts else None
    if status not in ("Enabled", "Disabled"):
        raise MalformedXML()
    rule_id = _leaf(parts["ID"]) if "ID" in parts else ""
    if len(rule_id) > MAX_ID_LENGTH:
        raise InvalidArgument(f"ID length should not exceed allowed limit of {MAX_ID_LENGTH}",
                              ArgumentName="ID", ArgumentValue=rule_id)
    rule: dict = {"id": rule_id or _generated_id(), "status": status}
    if "Prefix" in parts and "Filter" in parts:
        raise MalformedXML()
    if "Prefix" in parts:
        rule["shape"] = "legacy"
        rule["filter"] = {"prefix": _prefix(parts["Prefix"]), "tags": [], "gt": None, "lt": None}
    elif "Filter" in parts:
        rule["shape"], rule["filter"] = _parse_filter(parts["Filter"])
    else:
        raise MalformedXML()
    if not any(action in parts for action in ACTIONS):
        raise InvalidRequest("At least one action needs to be specified in a rule.")
    if "Expiration" in parts:
        rule["expiration"] = _parse_expiration(parts["Expiration"])
    if "NoncurrentVersionExpiration" in parts:
        rule["noncurrent"] = _parse_noncurrent(parts["NoncurrentVersionExpiration"])
    if "AbortIncompleteMultipartUpload" in parts:
        abort = _single(parts["AbortIncompleteMultipartUpload"], ("DaysAfterInitiation",))
        if "DaysAfterInitiation" not in abort:
            raise MalformedXML()
        rule["abort"] = {"days": _positive(abort["DaysAfterInitiation"], "DaysAfterInitiation",
                                           "AbortIncompleteMultipartUpload")}
    flt = rule["filter"]
    if "abort" in rule and flt["tags"]:
        raise InvalidRequest("AbortIncompleteMultipartUpload cannot be specified with Tags.")
    if "abort" in rule and (flt["gt"] is not None or flt["lt"] is not None):
        raise InvalidRequest("AbortIncompleteMultipartUpload cannot be specified with Object Size.")
    if rule.get("expiration", {}).get("marker") and flt["tags"]:
        raise InvalidRequest("ExpiredObjectDeleteMarker cannot be specified with Tags.")
    return rule


def _prefix(node: XmlNode) -> str:
    prefix = _leaf(node)
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_PREFIX_LENGTH:
        raise InvalidArgument(f"Specified prefix is longer than maximum allowed key length of {MAX_PREFIX_LENGTH}",
                              ArgumentName="Prefix")
    return prefix


def _tag(node: XmlNode) -> tuple[str, str]:
    parts = _single(node, ("Key", "Value"))
    if "Key" not in parts or "Value" not in parts:
        raise MalformedXML()
    key, value = _leaf(parts["Key"]), _leaf(parts["Value"])
    if not 1 <= len(key) <= MAX_TAG_KEY:
        raise InvalidRequest(f"A Tag's Key must be a length between 1 and {MAX_TAG_KEY}")
    if len(value) > MAX_TAG_VALUE:
        raise InvalidRequest(f"A Tag's Value must be a length between 0 and {MAX_TAG_VALUE}")
    return key, value


def _size(node: XmlNode, element: str) -> int:
    value = _integer(node, INT64_MAX)
    if value < 0 or (element == "ObjectSizeLessThan" and value == 0):
        low = 1 if element == "ObjectSizeLessThan" else 0
        raise InvalidRequest(f"'{element}' should be between {low} and {INT64_MAX}.")
    return value


def _parse_filter(node: XmlNode) -> tuple[str, dict]:
    flt: dict = {"prefix": None, "tags": [], "gt": None, "lt": None}
    parts = _single(node, (*_PREDICATES, "And"))
    if len(parts) > 1:
        raise MalformedXML()  # one predicate, or And around several
    if not parts:
        return "empty", flt
    (name, child), = parts.items()
    if name == "And":
        _fill_predicates(flt, child, conjunction=True)
    else:
        _fill_predicates(flt, node, conjunction=False)
    _check_sizes(flt)
    return _SHAPE_OF[name], flt


def _fill_predicates(flt: dict, node: XmlNode, *, conjunction: bool) -> None:
    count = 0
    seen: set[str] = set()
    for child in node.children:
        if child.name not in _PREDICATES or (child.name != "Tag" and child.name in seen):
            raise MalformedXML()
        seen.add(child.name)
        count += 1
        if child.name == "Prefix":
            flt["prefix"] = _prefix(child)
        elif child.name == "Tag":
            key, value = _tag(child)
            if any(k == key for k, _ in flt["tags"]):
                raise InvalidRequest("Duplicate Tag Keys are not allowed.")
            flt["tags"].append([key, value])
        elif child.name == "ObjectSizeGreaterThan":
            flt["gt"] = _size(child, child.name)
        else:
            flt["lt"] = _size(child, child.name)
    if conjunction and count < 2:
        raise MalformedXML()  # And joins two or more predicates


def _check_sizes(flt: dict) -> None:
    if flt["gt"] is not None and flt["lt"] is not None and flt["gt"] >= flt["lt"]:
        raise InvalidRequest("'ObjectSizeGreaterThan' must be less than 'ObjectSizeLessThan'.")


def _parse_expiration(node: XmlNode) -> dict:
    parts = _single(node, ("Days", "Date", "ExpiredObjectDeleteMarker"))
    if len(parts) != 1:
        raise MalformedXML()  # exactly one of Days, Date, ExpiredObjectDeleteMarker
    (name, child), = parts.items()
    if name == "Days":
        return {"days": _positive(child, "Days", "Expiration")}
    if name == "Date":
        return {"date": parse_date(_leaf(child))}
    flag = _leaf(child).strip()
    if flag not in ("true", "false"):
        raise MalformedXML()
    return {"marker": flag == "true"}


def _parse_noncurrent(node: XmlNode) -> dict:
    parts = _single(node, ("NoncurrentDays", "NewerNoncurrentVersions"))
    if "NoncurrentDays" not in parts:
        raise MalformedXML()
    out = {"days": _positive(parts["NoncurrentDays"], "NoncurrentDays", "NoncurrentVersionExpiration"),
           "newer": None}
    if "NewerNoncurrentVersions" in parts:
        newer = _positive(parts["NewerNoncurrentVersions"], "NewerNoncurrentVersions", "NoncurrentVersionExpiration")
        if newer > MAX_NEWER_NONCURRENT:
            raise InvalidArgument(f"'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must not exceed "
                                  f"{MAX_NEWER_NONCURRENT}", ArgumentName="NewerNoncurrentVersions",
                                  ArgumentValue=str(newer))
        out["newer"] = newer
    return out


def parse_date(text: str) -> float:
    """A lifecycle Date as unix seconds: ISO 8601, and at midnight UTC (InvalidArgument)."""
    m = _DATE.fullmatch(text.strip())
    if m is None:
        raise MalformedXML()
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour, minute, second = (int(m[4]), int(m[5]), int(m[6])) if m[4] else (0, 0, 0)
    fraction = int(m[7]) if m[7] else 0
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour < 24 and minute < 60 and second < 60) or year < 1970:
        raise MalformedXML()
    offset = 0
    zone = m[8]
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
    if fraction or seconds % DAY:
        raise InvalidArgument("'Date' must be at midnight GMT", ArgumentName="Date", ArgumentValue=text.strip())
    return float(seconds)


# --- serialization ---------------------------------------------------------------------------


def configuration_xml(rules: list[dict]) -> bytes:
    """The stored rules as GetBucketLifecycleConfiguration answers them."""
    doc = XmlBuilder("LifecycleConfiguration")
    for rule in rules:
        doc.open("Rule")
        doc.elem("ID", rule["id"])
        flt = rule["filter"]
        shape = rule["shape"]
        if shape == "legacy":
            doc.elem("Prefix", flt["prefix"] or "")
        else:
            doc.open("Filter")
            if shape == "and":
                doc.open("And")
            if flt["prefix"] is not None:
                doc.elem("Prefix", flt["prefix"])
            for key, value in flt["tags"]:
                doc.open("Tag").elem("Key", key).elem("Value", value).close()
            doc.elem("ObjectSizeGreaterThan", flt["gt"])
            doc.elem("ObjectSizeLessThan", flt["lt"])
            if shape == "and":
                doc.close()
            doc.close()
        doc.elem("Status", rule["status"])
        expiration = rule.get("expiration")
        if expiration is not None:
            doc.open("Expiration")
            if "days" in expiration:
                doc.elem("Days", expiration["days"])
            elif "date" in expiration:
                doc.elem("Date", iso8601(expiration["date"]))
            else:
                doc.elem("ExpiredObjectDeleteMarker", bool(expiration["marker"]))
            doc.close()
        noncurrent = rule.get("noncurrent")
        if noncurrent is not None:
            doc.open("NoncurrentVersionExpiration").elem("NoncurrentDays", noncurrent["days"])
            doc.elem("NewerNoncurrentVersions", noncurrent.get("newer"))
            doc.close()
        abort = rule.get("abort")
        if abort is not None:
            doc.open("AbortIncompleteMultipartUpload").elem("DaysAfterInitiation", abort["days"]).close()
        doc.close()
    return doc.finish()
