"""The signed policy document of a POST Object form: who signed it, and does the form obey it.

A form carries ``policy`` (base64 of a JSON document), signed either with SigV4
(``x-amz-algorithm``, ``x-amz-credential``, ``x-amz-date``, ``x-amz-signature``: the hex
HMAC-SHA256 of the base64 text under the credential's signing key) or with SigV2
(``AWSAccessKeyId``, ``signature``: base64 HMAC-SHA1 of the base64 text under the
secret). The document is::

    {"expiration": "2030-01-01T00:00:00.000Z",
     "conditions": [{"bucket": "photos"}, ["starts-with", "$key", "user/"],
                    ["content-length-range", 1, 1048576], {"x-amz-meta-tag": "x"}]}

A condition is ``{"field": "value"}`` (exact), ``["eq", "$field", "value"]``,
``["starts-with", "$field", "prefix"]`` (an empty prefix allows anything) or
``["content-length-range", min, max]`` (the file's size, checked while it streams).
Field names and operators are case-insensitive; values are not. As in S3, every field of
the form (and the bucket) must be named by some condition, except ``policy``, the
signature fields, ``file`` and names starting with ``x-ignore-``. Failures answer as S3
does: a bad document is 400 InvalidPolicyDocument, a broken condition, an uncovered field
or an expired policy 403 AccessDenied "Invalid according to Policy: ...".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from buckets.errors import (
    AccessDenied,
    InvalidAccessKeyId,
    InvalidArgument,
    SignatureDoesNotMatch,
    define_error,
)
from buckets.s3.auth import AuthContext, CredentialStore, derive_signing_key
from buckets.s3.auth.canonical import parse_amz_date
from buckets.s3.auth.sigv4 import ALGORITHM, parse_credential, signatures_equal

METHOD_V4_POST = "v4-post"
METHOD_V2_POST = "v2-post"

InvalidPolicyDocument = define_error(
    "InvalidPolicyDocument", "InvalidPolicyDocument", 400,
    "The content of the form does not meet the conditions specified in the policy document.")

# Fields no condition has to name (S3's list; the V2 pair included).
EXEMPT_FIELDS = frozenset({"policy", "x-amz-signature", "signature", "awsaccesskeyid", "file"})
IGNORED_PREFIX = "x-ignore-"
# Fields that only an exact condition may constrain.
EXACT_ONLY = frozenset({"bucket", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-security-token"})
_V4_FIELDS = ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
_EXPIRATION = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z", re.ASCII)


@dataclass(frozen=True)
class Condition:
    op: str  # "eq" | "starts-with"
    name: str  # the field, lower-case, without "$"
    value: str
    text: str  # as S3 quotes it in an error message

    def holds(self, actual: str) -> bool:
        return actual == self.value if self.op == "eq" else actual.startswith(self.value)


@dataclass
class PostPolicy:
    expiration: datetime
    conditions: list[Condition] = field(default_factory=list)
    length_ranges: list[tuple[int, int]] = field(default_factory=list)

    def length_range(self) -> tuple[int, int] | None:
        """The file size the policy allows, ``(min, max)`` inclusive (all ranges at once)."""
        if not self.length_ranges:
            return None
        return max(r[0] for r in self.length_ranges), min(r[1] for r in self.length_ranges)


def _invalid(detail: str) -> InvalidPolicyDocument:
    return InvalidPolicyDocument(f"Invalid Policy: {detail}")


def _parse_expiration(value: Any) -> datetime:
    m = _EXPIRATION.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise _invalid(f"Invalid 'expiration' value: '{value}'")
    year, month, day, hour, minute, second, fraction = m.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          tzinfo=timezone.utc)
    except ValueError:
        raise _invalid(f"Invalid 'expiration' value: '{value}'") from None
    if fraction:
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return moment


def _length_bound(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _parse_condition(item: Any, policy: PostPolicy) -> None:
    if isinstance(item, dict):
        if not item:
            raise _invalid("Invalid Simple-Condition: Simple-Conditions must have exactly one property specified.")
        for name, value in item.items():
            if not isinstance(value, str):
                raise _invalid(f"Invalid Simple-Condition: value of '{name}' must be a string.")
            policy.conditions.append(Condition("eq", name.lower(), value, json.dumps(["eq", "$" + name, value])))
        return
    if not isinstance(item, list) or not item or not isinstance(item[0], str):
        raise _invalid(f"Invalid Condition: {json.dumps(item)}")
    op = item[0].lower()
    if op == "content-length-range":
        if len(item) != 3:
            raise _invalid("Invalid Content-Length-Range condition: it needs a minimum and a maximum.")
        low, high = _length_bound(item[1]), _length_bound(item[2])
        if low is None or high is None or low > high:
            raise _invalid(f"Invalid Content-Length-Range condition: {json.dumps(item)}")
        policy.length_ranges.append((low, high))
        return
    if op not in ("eq", "starts-with"):
        raise _invalid(f"Invalid Condition: unknown operation '{item[0]}'")
    if len(item) != 3 or not all(isinstance(v, str) for v in item[1:]):
        raise _invalid(f"Invalid Condition: {json.dumps(item)}")
    name, value = item[1], item[2]
    if not name.startswith("$") or len(name) < 2:
        raise _invalid(f"Invalid Condition: the field must start with '$': {json.dumps(item)}")
    policy.conditions.append(Condition(op, name[1:].lower(), value, json.dumps(item)))


def parse_policy(encoded: str) -> PostPolicy:
    """The policy of a form, from its base64 text (InvalidPolicyDocument when malformed)."""
    try:
        raw = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _invalid("Invalid Base64 Encoding.") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _invalid("Invalid JSON.") from None
    if not isinstance(doc, dict):
        raise _invalid("Invalid JSON.")
    unknown = sorted(set(doc) - {"expiration", "conditions"})
    if unknown:
        raise _invalid(f"Unexpected field '{unknown[0]}'.")
    if "expiration" not in doc:
        raise _invalid("Policy missing expiration.")
    if "conditions" not in doc:
        raise _invalid("Policy missing conditions.")
    policy = PostPolicy(_parse_expiration(doc["expiration"]))
    conditions = doc["conditions"]
    if not isinstance(conditions, list):
        raise _invalid("Invalid 'conditions' value: it must be a list.")
    for item in conditions:
        _parse_condition(item, policy)
    return policy


def check_policy(policy: PostPolicy, values: Mapping[str, str], now: float) -> None:
    """AccessDenied unless the form's ``values`` (lower-case field names, the key with
    ``${filename}`` already in place, plus ``bucket``) obey every condition and every
    field is named by one. The length range is left to the caller (the file streams)."""
    if policy.expiration.timestamp() <= now:
        raise AccessDenied("Invalid according to Policy: Policy expired.")
    covered = set()
    for cond in policy.conditions:
        if cond.op == "starts-with" and (cond.name in EXACT_ONLY or
                                         (cond.name.startswith("x-amz-") and not cond.name.startswith("x-amz-meta-"))):
            raise AccessDenied(f"Invalid according to Policy: Policy Condition failed: {cond.text}")
        if not cond.holds(values.get(cond.name, "")):
            raise AccessDenied(f"Invalid according to Policy: Policy Condition failed: {cond.text}")
        covered.add(cond.name)
    extra = [name for name in values
             if name not in covered and name not in EXEMPT_FIELDS and not name.startswith(IGNORED_PREFIX)]
    if extra:
        raise AccessDenied(f"Invalid according to Policy: Extra input fields: {', '.join(sorted(extra))}")


# --- the signature -----------------------------------------------------------------------------


def _missing(name: str) -> InvalidArgument:
    return InvalidArgument(f"Bucket POST must contain a field named '{name}'.  If it is specified, please check "
                           f"the order of the fields.", ArgumentName=name, ArgumentValue="")


def has_signature_fields(fields: Mapping[str, str]) -> bool:
    return any(name in fields for name in (*_V4_FIELDS, "awsaccesskeyid", "signature"))


async def _secret(creds: CredentialStore, access_key: str) -> str:
    secret = await creds.secret_for(access_key)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
    return secret


async def verify_signature(fields: Mapping[str, str], creds: CredentialStore, *,
                           region: str | None) -> AuthContext:
    """The signer of the form's ``policy`` (InvalidArgument for a missing or malformed
    field, InvalidAccessKeyId, SignatureDoesNotMatch). ``region`` None accepts any region
    in the credential scope, as the header signatures do."""
    policy = fields["policy"]
    if any(name in fields for name in _V4_FIELDS):
        for name in _V4_FIELDS:
            if not fields.get(name):
                raise _missing(name)
        algorithm = fields["x-amz-algorithm"]
        if algorithm != ALGORITHM:
            raise InvalidArgument(f"The POST form's x-amz-algorithm must be {ALGORITHM}.",
                                  ArgumentName="x-amz-algorithm", ArgumentValue=algorithm)
        scope = parse_credential(fields["x-amz-credential"], InvalidArgument, "Invalid x-amz-credential:",
                                 region=region, service="s3")
        amz_date = fields["x-amz-date"]
        if parse_amz_date(amz_date) is None:
            raise InvalidArgument("The POST form's x-amz-date must be in the form YYYYMMDDTHHMMSSZ.",
                                  ArgumentName="x-amz-date", ArgumentValue=amz_date)
        secret = await _secret(creds, scope.access_key)
        key = derive_signing_key(secret, scope.date, scope.region, scope.service)
        expected = hmac.new(key, policy.encode("utf-8"), hashlib.sha256).hexdigest()
        provided = fields["x-amz-signature"].strip()
        if not signatures_equal(expected, provided):
            raise SignatureDoesNotMatch(AWSAccessKeyId=scope.access_key, StringToSign=policy,
                                        SignatureProvided=provided)
        return AuthContext(access_key=scope.access_key, method=METHOD_V4_POST, content_sha256=None,
                           seed_signature=provided, scope=scope.scope, amz_date=amz_date, region=scope.region)
    for name in ("awsaccesskeyid", "signature"):
        if not fields.get(name):
            raise _missing("AWSAccessKeyId" if name == "awsaccesskeyid" else "Signature")
    access_key, provided = fields["awsaccesskeyid"], fields["signature"].strip()
    secret = await _secret(creds, access_key)
    expected = hmac.new(secret.encode("utf-8", "surrogateescape"), policy.encode("utf-8"), hashlib.sha1).digest()
    try:
        given = base64.b64decode(provided.replace(" ", "+").encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        given = b""
    if not hmac.compare_digest(expected, given):
        raise SignatureDoesNotMatch(AWSAccessKeyId=access_key, StringToSign=policy, SignatureProvided=provided)
    return AuthContext(access_key=access_key, method=METHOD_V2_POST, content_sha256=None, seed_signature=provided)
