"""The AWS policy language: parsing, validation and matching of one policy document.

Bucket policies and user (identity) policies share it; a bucket policy names its
``Principal`` and may only name resources of its own bucket, a user policy names no
principal. Anything the language does not allow is ``MalformedPolicy`` with AWS's
message. Matching is case-insensitive for actions, case-sensitive for resources (S3 keys
are), with ``*``/``?`` wildcards and the policy variables ``${aws:username}``,
``${aws:userid}``, ``${*}``, ``${?}``, ``${$}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from buckets.iam import conditions
from buckets.iam.actions import ACTIONS, BUCKET, OBJECT, SERVICE
from buckets.iam.conditions import ConditionError, glob_match
from buckets.iam.errors import MalformedPolicy
from buckets.iam.identity import canonical_id

MAX_POLICY_BYTES = 20 * 1024
VERSIONS = ("2012-10-17", "2008-10-17")
_STATEMENT_FIELDS = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource",
                     "NotResource", "Condition"}
_USER_ARN = re.compile(r"^arn:aws:iam::([0-9]{12}|\*|[A-Za-z0-9-]*):(user/(.+)|root)$")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True, slots=True)
class Principals:
    """Who a statement is about: everyone, or named users (access keys), the root user,
    canonical IDs."""

    everyone: bool = False
    users: frozenset[str] = frozenset()
    root: bool = False
    canonical: frozenset[str] = frozenset()

    def matches(self, access_key: str | None, is_root: bool) -> bool:
        if self.everyone:
            return True
        if access_key is None:
            return False
        if is_root and self.root:
            return True
        return access_key in self.users or canonical_id("" if is_root else access_key) in self.canonical \
            or (is_root and canonical_id("") in self.canonical)


@dataclass(frozen=True, slots=True)
class Statement:
    sid: str
    allow: bool
    principal: Principals | None  # None: a user policy's statement (it is about its user)
    not_principal: bool
    actions: tuple[str, ...]  # lower-case patterns
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    condition: Mapping[str, Mapping[str, Sequence[str]]]

    def applies_to(self, access_key: str | None, is_root: bool) -> bool:
        if self.principal is None:
            return True
        return self.principal.matches(access_key, is_root) != self.not_principal

    def matches(self, action: str, resource: str, context: conditions.Context,
                variables: Mapping[str, str]) -> bool:
        lowered = action.lower()
        hit = any(glob_match(p, lowered) for p in self.actions)
        if hit == self.not_action:
            return False
        patterns = [_substitute(p, variables) for p in self.resources]
        if None in patterns and self.not_resource:
            return False  # a NotResource that cannot be resolved for this caller excludes nothing safely
        hit = any(p is not None and glob_match(p, resource) for p in patterns)
        if hit == self.not_resource:
            return False
        if self.condition:
            values = [v for pairs in self.condition.values() for vs in pairs.values() for v in vs]
            if any(_substitute(v, variables) is None for v in values):
                return False  # a variable this request has no value for (an anonymous caller's name)
            return conditions.holds(self.condition, context, lambda v: _substitute(v, variables) or "")
        return True

    @property
    def is_public(self) -> bool:
        """An Allow for everyone that no condition narrows to known callers (AWS's rule for
        ``PolicyStatus.IsPublic`` and the public access block)."""
        if not self.allow or self.principal is None or self.not_principal or not self.principal.everyone:
            return False
        for operator, pairs in self.condition.items():
            core = operator.split(":")[-1].lower().removesuffix("ifexists")
            for key, values in pairs.items():
                key = key.lower()
                fixed = all("*" not in v and "?" not in v for v in values)
                if core in ("ipaddress",) and key == "aws:sourceip" and \
                        all(not v.endswith("/0") for v in values):
                    return False
                if core in ("stringequals", "stringequalsignorecase", "arnequals", "arnlike", "stringlike") \
                        and fixed and key in _NARROWING_KEYS:
                    return False
        return True


_NARROWING_KEYS = {"aws:sourcearn", "aws:sourcevpc", "aws:sourcevpce", "aws:sourceaccount",
                   "aws:principalaccount", "aws:principalarn", "aws:principalorgid", "aws:userid",
                   "aws:username", "s3:dataaccesspointarn", "s3:dataaccesspointaccount"}


@dataclass(frozen=True, slots=True)
class Policy:
    statements: tuple[Statement, ...]
    text: str  # the document as stored and given back

    @property
    def is_public(self) -> bool:
        return any(s.is_public for s in self.statements)


def _substitute(pattern: str, variables: Mapping[str, str]) -> str | None:
    """The pattern with its policy variables replaced; None when one has no value for this
    request (AWS: the element then matches nothing)."""
    if "${" not in pattern:
        return pattern
    missing = False

    def one(m: re.Match[str]) -> str:
        nonlocal missing
        name = m.group(1)
        if name in ("*", "?"):
            return "\x00" + name  # a literal character, not a wildcard (see glob_match)
        if name == "$":
            return "$"
        value = variables.get(name.lower())
        if value is None:
            missing = True
            return ""
        return "".join("\x00" + ch if ch in "*?" else ch for ch in value)

    text = _VARIABLE.sub(one, pattern)
    return None if missing else text


def _strings(value: Any, field: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise MalformedPolicy(f"Invalid {field} in policy" if field != "Action" else "Policy has invalid action")
    return items


def _principals(value: Any) -> Principals:
    if value == "*":
        return Principals(everyone=True)
    if not isinstance(value, dict) or not value:
        raise MalformedPolicy("Invalid principal in policy")
    users: set[str] = set()
    canonical: set[str] = set()
    root = everyone = False
    for kind, names in value.items():
        items = names if isinstance(names, list) else [names]
        if not items or not all(isinstance(n, str) for n in items):
            raise MalformedPolicy("Invalid principal in policy")
        if kind == "AWS":
            for name in items:
                if name == "*":
                    everyone = True
                    continue
                m = _USER_ARN.match(name)
                if m is None:
                    raise MalformedPolicy("Invalid principal in policy")
                if m.group(2) == "root":
                    root = True
                else:
                    users.add(m.group(3))
        elif kind == "CanonicalUser":
            for name in items:
                if not re.fullmatch(r"[0-9a-f]{64}", name):
                    raise MalformedPolicy("Invalid principal in policy")
                canonical.add(name)
        else:
            raise MalformedPolicy("Invalid principal in policy")
    return Principals(everyone, frozenset(users), root, frozenset(canonical))


def _resource_kind(pattern: str) -> set[str]:
    """Which kinds of resource an ARN pattern can name."""
    if pattern == "*":
        return {SERVICE, BUCKET, OBJECT}
    rest = pattern[len("arn:aws:s3:::"):]
    if "/" in rest:
        return {OBJECT}
    return {BUCKET, OBJECT} if "*" in rest else {BUCKET}


def _check_statement(raw: Any, bucket: str | None) -> Statement:
    if not isinstance(raw, dict):
        raise MalformedPolicy("Invalid statement in policy")
    unknown = set(raw) - _STATEMENT_FIELDS
    if unknown:
        raise MalformedPolicy(f"Unknown field {sorted(unknown)[0]}")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise MalformedPolicy(f"Invalid effect: {effect}" if effect is not None else "Missing required field Effect")
    if ("Action" in raw) == ("NotAction" in raw):
        raise MalformedPolicy("Missing required field Action" if "Action" not in raw and "NotAction" not in raw
                              else "Statement can not have both Action and NotAction")
    if ("Resource" in raw) == ("NotResource" in raw):
        raise MalformedPolicy("Missing required field Resource" if "Resource" not in raw and "NotResource" not in raw
                              else "Statement can not have both Resource and NotResource")
    principal: Principals | None = None
    not_principal = "NotPrincipal" in raw
    if bucket is not None:
        if ("Principal" in raw) == not_principal:
            raise MalformedPolicy("Missing required field Principal")
        principal = _principals(raw["NotPrincipal" if not_principal else "Principal"])
    elif "Principal" in raw or not_principal:
        raise MalformedPolicy("Policy document should not specify a principal.")
    action_field = "NotAction" if "NotAction" in raw else "Action"
    actions = _strings(raw[action_field], "Action")
    kinds: set[str] = set()
    for a in actions:
        lowered = a.lower()
        if lowered == "*":
            kinds |= {SERVICE, BUCKET, OBJECT}
            continue
        if not lowered.startswith("s3:"):
            raise MalformedPolicy("Policy has invalid action")
        if "*" in lowered or "?" in lowered:
            hits = [kind for name, (_, kind) in ACTIONS.items() if glob_match(lowered, name)]
            if not hits and bucket is not None:
                raise MalformedPolicy("Policy has invalid action")
            kinds |= set(hits) if hits else {SERVICE, BUCKET, OBJECT}
        elif lowered in ACTIONS:
            kinds.add(ACTIONS[lowered][1])
        else:
            raise MalformedPolicy("Policy has invalid action")
    resource_field = "NotResource" if "NotResource" in raw else "Resource"
    resources = _strings(raw[resource_field], "Resource")
    resource_kinds: set[str] = set()
    for r in resources:
        if r != "*" and not r.startswith("arn:aws:s3:::"):
            raise MalformedPolicy("Policy has invalid resource")
        if bucket is not None:
            name = r[len("arn:aws:s3:::"):].split("/", 1)[0] if r != "*" else "*"
            if not glob_match(_substitute(name, {}) or "*", bucket):
                raise MalformedPolicy("Policy has invalid resource")
        resource_kinds |= _resource_kind(r)
    if action_field == "Action" and resource_field == "Resource" and not (kinds & resource_kinds):
        raise MalformedPolicy("Action does not apply to any resource(s) in statement")
    condition: dict = {}
    if "Condition" in raw:
        try:
            condition = conditions.check_block(raw["Condition"])
        except ConditionError as exc:
            raise MalformedPolicy(str(exc)) from None
    sid = raw.get("Sid", "")
    if not isinstance(sid, str):
        raise MalformedPolicy("Invalid Sid in policy")
    return Statement(sid, effect == "Allow", principal, not_principal, tuple(a.lower() for a in actions),
                     action_field == "NotAction", tuple(resources), resource_field == "NotResource", condition)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise MalformedPolicy(f"Duplicate field {k} in policy")
        out[k] = v
    return out


@lru_cache(maxsize=512)
def parse_policy(text: str, bucket: str | None = None) -> Policy:
    """Parse and validate a policy document: a bucket policy of ``bucket``, or a user
    policy when ``bucket`` is None. ``MalformedPolicy`` says what is wrong."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_POLICY_BYTES:
        raise MalformedPolicy("Policy exceeds the maximum allowed document size.")
    stripped = text.lstrip()
    if not stripped.startswith("{"):
        raise MalformedPolicy("Policies must be valid JSON and the first byte must be '{'")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):
        raise MalformedPolicy("This policy contains invalid Json") from None
    if not isinstance(doc, dict):
        raise MalformedPolicy("Policies must be valid JSON and the first byte must be '{'")
    unknown = set(doc) - {"Version", "Id", "Statement"}
    if unknown:
        raise MalformedPolicy(f"Unknown field {sorted(unknown)[0]}")
    version = doc.get("Version")
    if version is not None and version not in VERSIONS:
        raise MalformedPolicy("The policy must contain a valid version string")
    if "Statement" not in doc:
        raise MalformedPolicy("Missing required field Statement")
    raw = doc["Statement"]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise MalformedPolicy("Could not parse the policy: Statement is empty!")
    statements = tuple(_check_statement(item, bucket) for item in items)
    sids = [s.sid for s in statements if s.sid]
    if len(sids) != len(set(sids)):
        raise MalformedPolicy("Statement IDs (SID) in a single policy must be unique")
    return Policy(statements, text)


# The policies ``buckets-admin user add --policy`` knows by name (MinIO's names). A user
# policy bounds what its user may do; it never reaches into another user's bucket by
# itself (that takes the owner's bucket policy or ACL).
CANNED_USER_POLICIES = {
    "readwrite": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}]},
    "readonly": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": ["arn:aws:s3:::*"]},
        {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets"], "Resource": ["*"]}]},
    "writeonly": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": ["arn:aws:s3:::*"]}]},
}


@lru_cache(maxsize=None)
def canned_user_policy(name: str) -> Policy | None:
    doc = CANNED_USER_POLICIES.get(name)
    return parse_policy(json.dumps(doc)) if doc is not None else None
