"""Which lifecycle rule applies to what, and when: pure functions over the stored rules
(``buckets.lifecycle.config``), an object's facts and a clock value given by the caller.

Time follows S3: an action due ``Days`` after a moment is due at the first midnight UTC
after that moment plus the days (an object written 2014-01-15 10:30 UTC with ``Days`` 3
expires 2014-01-19 00:00 UTC). ``day`` is the length of a day in seconds, 86400 except when
an operator shortens it for tests (``--lifecycle-day-seconds``): "midnight" is then every
multiple of ``day`` seconds since the epoch. A ``Date`` is an absolute time and is never
scaled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from email.utils import formatdate

DAY = 86400.0


def active(rules: Iterable[dict]) -> list[dict]:
    return [r for r in rules if r.get("status") == "Enabled"]


def due_after(moment: float, days: int, day: float = DAY) -> float:
    """The first "midnight" after ``moment`` + ``days`` days (S3's rounding)."""
    return (math.floor(moment / day) + days + 1) * day


def matches(rule: dict, key: str, size: int | None = None, tags: Mapping[str, str] | None = None) -> bool:
    """Whether the rule's filter selects an object (status is not looked at). ``size`` None
    matches no size predicate; ``tags`` None counts as no tags."""
    flt = rule["filter"]
    if flt.get("prefix") and not key.startswith(flt["prefix"]):
        return False
    if flt.get("gt") is not None and (size is None or not size > flt["gt"]):
        return False
    if flt.get("lt") is not None and (size is None or not size < flt["lt"]):
        return False
    if flt.get("tags"):
        have = tags or {}
        if any(have.get(k) != v for k, v in flt["tags"]):
            return False
    return True


def needs_tags(rule: dict) -> bool:
    return bool(rule["filter"].get("tags"))


def current_expiry(rules: Iterable[dict], key: str, size: int, tags: Mapping[str, str] | None,
                   last_modified: float, day: float = DAY) -> tuple[float, str] | None:
    """When the current version of an object expires, and by which rule: the earliest of
    the enabled rules with an Expiration Days or Date whose filter selects it; None if none."""
    best: tuple[float, str] | None = None
    for rule in active(rules):
        expiration = rule.get("expiration")
        if not expiration or ("days" not in expiration and "date" not in expiration):
            continue
        if not matches(rule, key, size, tags):
            continue
        when = due_after(last_modified, expiration["days"], day) if "days" in expiration else expiration["date"]
        if best is None or when < best[0]:
            best = (when, rule["id"])
    return best


def noncurrent_due(rules: Iterable[dict], key: str, size: int, tags: Mapping[str, str] | None,
                   noncurrent_since: float, newer_count: int, now: float, day: float = DAY) -> str | None:
    """The rule that expires a noncurrent version now, if any. ``noncurrent_since`` is when
    it stopped being current (its successor's last-modified time); ``newer_count`` is how
    many noncurrent versions of the key are newer than it (a rule with
    NewerNoncurrentVersions N keeps the N newest)."""
    for rule in active(rules):
        noncurrent = rule.get("noncurrent")
        if not noncurrent or not matches(rule, key, size, tags):
            continue
        newer = noncurrent.get("newer")
        if newer is not None and newer_count < newer:
            continue
        if now >= due_after(noncurrent_since, noncurrent["days"], day):
            return rule["id"]
    return None


def marker_due(rules: Iterable[dict], key: str, last_modified: float, now: float, day: float = DAY) -> str | None:
    """The rule that removes a delete marker which is the only version of its key: one with
    ExpiredObjectDeleteMarker true, or with Expiration Days once the marker is that old (as
    S3 does). A marker has no tags and no size, so tag and size-above filters never select it."""
    for rule in active(rules):
        expiration = rule.get("expiration") or {}
        if not matches(rule, key, 0, None):
            continue
        if expiration.get("marker"):
            return rule["id"]
        if "days" in expiration and now >= due_after(last_modified, expiration["days"], day):
            return rule["id"]
    return None


def abort_due(rules: Iterable[dict], key: str, initiated: float, now: float, day: float = DAY) -> str | None:
    """The rule that aborts an incomplete multipart upload now, if any (such rules filter by
    prefix only)."""
    for rule in active(rules):
        abort = rule.get("abort")
        if abort and matches(rule, key) and now >= due_after(initiated, abort["days"], day):
            return rule["id"]
    return None


def abort_date(rules: Iterable[dict], key: str, initiated: float, day: float = DAY) -> tuple[float, str] | None:
    """When an upload will be aborted and by which rule (``x-amz-abort-date``), or None."""
    best: tuple[float, str] | None = None
    for rule in active(rules):
        abort = rule.get("abort")
        if abort and matches(rule, key):
            when = due_after(initiated, abort["days"], day)
            if best is None or when < best[0]:
                best = (when, rule["id"])
    return best


def expiration_header(when: float, rule_id: str) -> str:
    """The ``x-amz-expiration`` value: ``expiry-date="<HTTP date>", rule-id="<id>"``. The id is
    a quoted string: a quote or backslash in it is escaped, and a control character (which a
    header cannot carry) is dropped."""
    text = header_text(rule_id).replace("\\", "\\\\").replace('"', '\\"')
    return f'expiry-date="{formatdate(when, usegmt=True)}", rule-id="{text}"'


def header_text(rule_id: str) -> str:
    """A rule id as a header can carry it: control characters dropped."""
    return "".join(ch for ch in rule_id if ch >= " " and ch != "\x7f")
