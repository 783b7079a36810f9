"""Condition operators of the policy language.

A condition block is ``{operator: {key: value | [values]}}``; every operator and every key
in it must hold (AND), any of a key's values may match (OR). Keys are case-insensitive;
the request's context maps each lower-cased key to its values (absent: the request does
not carry it). As AWS: a negated operator (``StringNotEquals``, ``NotIpAddress``, ...) holds
when the key is absent, every other holds only when it is present, ``...IfExists`` holds
when the key is absent, ``ForAllValues:`` holds for an absent key, ``ForAnyValue:`` does not.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache

Context = Mapping[str, Sequence[str]]


class ConditionError(ValueError):
    """A condition block the policy language does not allow (MalformedPolicy)."""


@lru_cache(maxsize=2048)
def _glob(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """``*`` any run, ``?`` one character, ``\\x00`` makes the next character literal (a policy
    variable's value, ``${*}``); everything else literal."""
    out = []
    literal = False
    for ch in pattern:
        if literal:
            out.append(re.escape(ch))
            literal = False
        elif ch == "\x00":
            literal = True
        else:
            out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def glob_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _date(text: str) -> float | None:
    text = str(text).strip()
    number = _number(text)
    if number is not None:
        return number
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _ip_in(value: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(value.split("%")[0]) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _cmp_number(op: Callable[[float, float], bool]) -> Callable[[str, str], bool]:
    def test(value: str, wanted: str) -> bool:
        a, b = _number(value), _number(wanted)
        return a is not None and b is not None and op(a, b)
    return test


def _cmp_date(op: Callable[[float, float], bool]) -> Callable[[str, str], bool]:
    def test(value: str, wanted: str) -> bool:
        a, b = _date(value), _date(wanted)
        return a is not None and b is not None and op(a, b)
    return test


def _binary_equals(value: str, wanted: str) -> bool:
    try:
        return base64.b64decode(wanted, validate=True) == value.encode()
    except ValueError:
        return False


# operator -> (match one context value against one policy value, negated)
_OPERATORS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "stringequals": (lambda v, w: v == w, False),
    "stringnotequals": (lambda v, w: v == w, True),
    "stringequalsignorecase": (lambda v, w: v.lower() == w.lower(), False),
    "stringnotequalsignorecase": (lambda v, w: v.lower() == w.lower(), True),
    "stringlike": (lambda v, w: glob_match(w, v), False),
    "stringnotlike": (lambda v, w: glob_match(w, v), True),
    "numericequals": (_cmp_number(lambda a, b: a == b), False),
    "numericnotequals": (_cmp_number(lambda a, b: a == b), True),
    "numericlessthan": (_cmp_number(lambda a, b: a < b), False),
    "numericlessthanequals": (_cmp_number(lambda a, b: a <= b), False),
    "numericgreaterthan": (_cmp_number(lambda a, b: a > b), False),
    "numericgreaterthanequals": (_cmp_number(lambda a, b: a >= b), False),
    "dateequals": (_cmp_date(lambda a, b: a == b), False),
    "datenotequals": (_cmp_date(lambda a, b: a == b), True),
    "datelessthan": (_cmp_date(lambda a, b: a < b), False),
    "datelessthanequals": (_cmp_date(lambda a, b: a <= b), False),
    "dategreaterthan": (_cmp_date(lambda a, b: a > b), False),
    "dategreaterthanequals": (_cmp_date(lambda a, b: a >= b), False),
    "bool": (lambda v, w: v.lower() == w.lower(), False),
    "binaryequals": (_binary_equals, False),
    "ipaddress": (_ip_in, False),
    "notipaddress": (_ip_in, True),
    "arnequals": (lambda v, w: glob_match(w, v), False),
    "arnlike": (lambda v, w: glob_match(w, v), False),
    "arnnotequals": (lambda v, w: glob_match(w, v), True),
    "arnnotlike": (lambda v, w: glob_match(w, v), True),
}

# Condition keys a policy may use (lower case); the families with a name after the slash
# (``s3:ExistingObjectTag/<tag>``) are prefixes.
KNOWN_KEYS = frozenset(k.lower() for k in """
aws:CurrentTime aws:EpochTime aws:SecureTransport aws:SourceIp aws:UserAgent aws:Referer
aws:username aws:userid aws:PrincipalType aws:PrincipalArn aws:PrincipalAccount aws:SourceArn
aws:SourceAccount aws:SourceVpc aws:SourceVpce aws:PrincipalOrgID aws:MultiFactorAuthPresent
aws:MultiFactorAuthAge aws:TokenIssueTime aws:RequestedRegion aws:ViaAWSService aws:CalledVia
aws:TagKeys s3:prefix s3:delimiter s3:max-keys s3:x-amz-acl s3:x-amz-content-sha256
s3:x-amz-copy-source s3:x-amz-metadata-directive s3:x-amz-server-side-encryption
s3:x-amz-server-side-encryption-aws-kms-key-id s3:x-amz-server-side-encryption-customer-algorithm
s3:x-amz-storage-class s3:x-amz-grant-read s3:x-amz-grant-write s3:x-amz-grant-read-acp
s3:x-amz-grant-write-acp s3:x-amz-grant-full-control s3:VersionId s3:authType s3:signatureversion
s3:signatureAge s3:TlsVersion s3:LocationConstraint s3:RequestObjectTagKeys s3:object-lock-mode
s3:object-lock-retain-until-date s3:object-lock-remaining-retention-days s3:object-lock-legal-hold
s3:ResourceAccount s3:DataAccessPointArn s3:DataAccessPointAccount s3:AccessPointNetworkOrigin
s3:if-match s3:if-none-match s3:x-amz-object-ownership s3:ExistingObjectTag s3:RequestObjectTag
""".split())
KEY_FAMILIES = ("s3:existingobjecttag/", "s3:requestobjecttag/", "aws:requesttag/", "aws:resourcetag/",
                "aws:principaltag/")


def check_key(key: str) -> None:
    lowered = key.lower()
    if lowered in KNOWN_KEYS or (lowered.startswith(KEY_FAMILIES) and lowered.split("/", 1)[1]):
        return
    raise ConditionError(f"Policy has an invalid condition key: {key}")


def parse_operator(name: str) -> tuple[str, str | None, bool]:
    """``ForAnyValue:StringLikeIfExists`` -> ("stringlike", "anyvalue", True)."""
    qualifier = None
    base = name
    if ":" in name:
        prefix, _, base = name.partition(":")
        qualifier = {"forallvalues": "allvalues", "foranyvalue": "anyvalue"}.get(prefix.lower())
        if qualifier is None:
            raise ConditionError(f"Invalid Condition type : {name}")
    if_exists = base.lower().endswith("ifexists")
    core = base[:-len("IfExists")].lower() if if_exists else base.lower()
    if core == "null":
        if if_exists or qualifier:
            raise ConditionError(f"Invalid Condition type : {name}")
        return "null", None, False
    if core not in _OPERATORS:
        raise ConditionError(f"Invalid Condition type : {name}")
    return core, qualifier, if_exists


def check_block(block: object) -> dict[str, dict[str, list[str]]]:
    """Validate a Condition element; returns it with every value a list of strings."""
    if not isinstance(block, dict):
        raise ConditionError("Condition must be an object")
    out: dict[str, dict[str, list[str]]] = {}
    for operator, pairs in block.items():
        core, _, _ = parse_operator(operator)
        if not isinstance(pairs, dict) or not pairs:
            raise ConditionError(f"Invalid Condition block for {operator}")
        clean: dict[str, list[str]] = {}
        for key, values in pairs.items():
            check_key(key)
            items = values if isinstance(values, list) else [values]
            if not items:
                raise ConditionError(f"Condition {operator} {key} has no value")
            strings = []
            for v in items:
                if isinstance(v, bool):
                    strings.append("true" if v else "false")
                elif isinstance(v, (str, int, float)):
                    strings.append(str(v))
                else:
                    raise ConditionError(f"Condition {operator} {key} has an invalid value")
            if core in ("ipaddress", "notipaddress"):
                for s in strings:
                    try:
                        ipaddress.ip_network(s, strict=False)
                    except ValueError:
                        raise ConditionError(f"Invalid IP address or CIDR: {s}") from None
            clean[key] = strings
        out[operator] = clean
    return out


def holds(block: Mapping[str, Mapping[str, Sequence[str]]], context: Context,
          substitute: Callable[[str], str] = lambda s: s) -> bool:
    """Whether every condition of ``block`` holds for ``context``."""
    for operator, pairs in block.items():
        core, qualifier, if_exists = parse_operator(operator)
        for key, wanted in pairs.items():
            present = context.get(key.lower())
            if core == "null":
                absent = not present
                if (wanted[0].lower() == "true") != absent:
                    return False
                continue
            test, negated = _OPERATORS[core]
            values = [substitute(w) for w in wanted]
            if not present:
                if if_exists:
                    continue
                if qualifier == "allvalues":
                    continue
                if qualifier == "anyvalue":
                    return False
                if not negated:
                    return False
                continue
            def value_holds(v: str) -> bool:
                return any(test(v, w) for w in values) != negated

            if qualifier == "allvalues":
                ok = all(value_holds(v) for v in present)
            elif qualifier == "anyvalue" or not negated:
                ok = any(value_holds(v) for v in present)
            else:  # a negated single-valued key: no value may match
                ok = all(value_holds(v) for v in present)
            if not ok:
                return False
    return True

