"""Object Lock: the bucket's configuration, a version's retention and legal hold, and the
object-lock headers of writes, as S3 defines and checks them.

Pure functions, no I/O. The bucket record keeps the configuration as ``lock``:
``{"enabled": True, "mode": "GOVERNANCE" | "COMPLIANCE" | None, "days": int | None,
"years": int | None}``; a version keeps ``lock_mode``, ``lock_until`` (unix seconds) and
``legal_hold`` (see ``buckets.engine.types``). The rules that protect a version (COMPLIANCE
is never shortened, GOVERNANCE only with the bypass) are the engine's; this module checks
what a request says before anything is read or written.

Errors and messages are S3's: MalformedXML for a document that does not follow the schema
(a mode S3 does not know, Days with Years, a Rule without DefaultRetention), InvalidArgument
for a value S3 refuses (a period that is not positive, a date in the past), InvalidRequest
when the bucket has no Object Lock, 409 InvalidBucketState for versioning that does not allow
it, 404 ObjectLockConfigurationNotFoundError / NoSuchObjectLockConfiguration when none is set.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

# InvalidBucketState is the engine's own class (errors travel between nodes by class name)
from buckets.errors import InvalidArgument, InvalidBucketState, InvalidRequest, MalformedXML, define_error
from buckets.s3.xmlio import XmlBuilder, XmlNode, iso8601, parse_document

MODES = ("GOVERNANCE", "COMPLIANCE")
MAX_LOCK_XML = 64 * 1024
MAX_DAYS = 36500  # S3: a default retention of at most 100 years
MAX_YEARS = 100

ObjectLockConfigurationNotFound = define_error(
    "ObjectLockConfigurationNotFound", "ObjectLockConfigurationNotFoundError", 404,
    "Object Lock configuration does not exist for this bucket")
NoSuchObjectLockConfiguration = define_error(
    "NoSuchObjectLockConfiguration", "NoSuchObjectLockConfiguration", 404,
    "The specified object does not have a ObjectLock configuration")

MISSING_LOCK = "Bucket is missing Object Lock Configuration"
BYPASS_HEADER = "x-amz-bypass-governance-retention"
MODE_HEADER = "x-amz-object-lock-mode"
UNTIL_HEADER = "x-amz-object-lock-retain-until-date"
HOLD_HEADER = "x-amz-object-lock-legal-hold"
LOCK_HEADERS = (MODE_HEADER, UNTIL_HEADER, HOLD_HEADER)


def lock_enabled(record: Mapping) -> bool:
    return bool((record.get("lock") or {}).get("enabled"))


def require_lock(record: Mapping, bucket: str) -> None:
    """Retention and legal-hold requests on a bucket without Object Lock: 400 InvalidRequest."""
    if not lock_enabled(record):
        raise InvalidRequest(MISSING_LOCK, BucketName=bucket)


def check_versioning_change(record: Mapping, status: str) -> None:
    """PutBucketVersioning: a bucket with Object Lock keeps versioning Enabled (409)."""
    if lock_enabled(record) and status != "Enabled":
        raise InvalidBucketState("An Object Lock configuration is present on this bucket, so the versioning "
                                 "state cannot be changed.", BucketName=record.get("bucket", ""))


# --- dates ----------------------------------------------------------------------------------


def parse_timestamp(text: str) -> float | None:
    """An ISO 8601 timestamp (``2030-01-01T00:00:00Z``, with fractions or an offset; without
    a zone it is UTC) as unix seconds; None when it is not one."""
    value = text.strip()
    if not value or len(value) > 64 or not value[:4].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def format_timestamp(ts: float) -> str:
    """How S3 writes a retain-until date, in XML and in headers: 2030-01-01T00:00:00.000Z."""
    return iso8601(ts)


# --- the bucket's configuration ----------------------------------------------------------------


def _positive_int(node: XmlNode) -> int:
    if node.children:
        raise MalformedXML()
    text = node.text.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not (digits.isascii() and digits.isdigit()) or len(digits.lstrip("0")) > 10:
        raise MalformedXML()
    value = int(text)
    if value <= 0:
        raise InvalidArgument("Default retention period must be a positive integer value.",
                              ArgumentName=node.name, ArgumentValue=text)
    if value > (MAX_DAYS if node.name == "Days" else MAX_YEARS):
        raise InvalidArgument("Default retention period too large.", ArgumentName=node.name, ArgumentValue=text)
    return value


def parse_configuration(body: bytes) -> dict:
    """An ObjectLockConfiguration document as the bucket record keeps it."""
    doc = parse_document(body, "ObjectLockConfiguration")
    if any(child.name not in ("ObjectLockEnabled", "Rule") for child in doc.children):
        raise MalformedXML()
    enabled = doc.find_all("ObjectLockEnabled")
    rules = doc.find_all("Rule")
    if len(enabled) != 1 or enabled[0].text != "Enabled" or len(rules) > 1:
        raise MalformedXML()
    config: dict = {"enabled": True, "mode": None, "days": None, "years": None}
    if not rules:
        return config
    rule = rules[0]
    if len(rule.children) != 1 or rule.children[0].name != "DefaultRetention":
        raise MalformedXML()
    retention = rule.children[0]
    names = [child.name for child in retention.children]
    if any(name not in ("Mode", "Days", "Years") for name in names) or len(set(names)) != len(names):
        raise MalformedXML()
    mode = retention.find("Mode")
    days, years = retention.find("Days"), retention.find("Years")
    if mode is None or mode.children or mode.text not in MODES or (days is None) == (years is None):
        raise MalformedXML()
    config["mode"] = mode.text
    if days is not None:
        config["days"] = _positive_int(days)
    else:
        config["years"] = _positive_int(years)  # type: ignore[arg-type]
    return config


def configuration_xml(lock: Mapping) -> bytes:
    doc = XmlBuilder("ObjectLockConfiguration")
    doc.elem("ObjectLockEnabled", "Enabled")
    if lock.get("mode"):
        doc.open("Rule").open("DefaultRetention").elem("Mode", lock["mode"])
        if lock.get("days"):
            doc.elem("Days", lock["days"])
        if lock.get("years"):
            doc.elem("Years", lock["years"])
        doc.close().close()
    return doc.finish()


def default_until(lock: Mapping, created: float) -> float | None:
    """The retain-until date the bucket's default retention gives a version created at
    ``created`` (S3 adds the period to the creation time; a year is 365 days)."""
    if not lock.get("mode"):
        return None
    days = lock.get("days") or 365 * (lock.get("years") or 0)
    return created + days * 86400 if days else None


# --- a version's retention and legal hold --------------------------------------------------


def parse_retention(body: bytes, now: float | None = None) -> tuple[str | None, float | None]:
    """A Retention document: (mode, retain-until) or (None, None) for an empty one, which
    removes a GOVERNANCE retention (with the bypass)."""
    doc = parse_document(body, "Retention")
    names = [child.name for child in doc.children]
    if any(name not in ("Mode", "RetainUntilDate") for name in names) or len(set(names)) != len(names):
        raise MalformedXML()
    mode, until = doc.find("Mode"), doc.find("RetainUntilDate")
    if mode is None and until is None:
        return None, None
    if mode is None or until is None or mode.children or until.children or mode.text not in MODES:
        raise MalformedXML()
    ts = parse_timestamp(until.text)
    if ts is None:
        raise MalformedXML()
    if ts <= (time.time() if now is None else now):
        raise InvalidArgument("The retain until date must be in the future!", ArgumentName="RetainUntilDate",
                              ArgumentValue=until.text)
    return mode.text, ts


def retention_xml(mode: str, until: float) -> bytes:
    doc = XmlBuilder("Retention")
    doc.elem("Mode", mode).elem("RetainUntilDate", format_timestamp(until))
    return doc.finish()


def parse_legal_hold(body: bytes) -> bool:
    doc = parse_document(body, "LegalHold")
    statuses = doc.find_all("Status")
    if len(statuses) != 1 or len(doc.children) != 1 or statuses[0].children \
            or statuses[0].text not in ("ON", "OFF"):
        raise MalformedXML()
    return statuses[0].text == "ON"


def legal_hold_xml(on: bool) -> bytes:
    doc = XmlBuilder("LegalHold")
    doc.elem("Status", "ON" if on else "OFF")
    return doc.finish()


# --- the headers of a write ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteLock:
    """What a PutObject/CopyObject/CreateMultipartUpload asks for."""

    mode: str | None = None
    until: float | None = None
    legal_hold: bool | None = None  # None: the header was not sent

    @property
    def asked(self) -> bool:
        return self.mode is not None or self.legal_hold is not None


def parse_write_headers(headers: Mapping[str, str], now: float | None = None) -> WriteLock:
    """``x-amz-object-lock-mode`` with ``-retain-until-date`` (both or neither), and
    ``-legal-hold``; checked before the bucket is looked at, as S3 does."""
    mode = headers.get(MODE_HEADER)
    until_text = headers.get(UNTIL_HEADER)
    hold_text = headers.get(HOLD_HEADER)
    until = None
    if mode is not None or until_text is not None:
        if mode is None or until_text is None:
            missing = MODE_HEADER if mode is None else UNTIL_HEADER
            raise InvalidArgument(f"{UNTIL_HEADER} and {MODE_HEADER} must both be supplied",
                                  ArgumentName=missing)
        if mode not in MODES:
            raise InvalidArgument("Unknown wormMode directive.", ArgumentName=MODE_HEADER, ArgumentValue=mode)
        until = parse_timestamp(until_text)
        if until is None:
            raise InvalidArgument("The retain until date must be provided in ISO 8601 format",
                                  ArgumentName=UNTIL_HEADER, ArgumentValue=until_text)
        if until <= (time.time() if now is None else now):
            raise InvalidArgument("The retain until date must be in the future!", ArgumentName=UNTIL_HEADER,
                                  ArgumentValue=until_text)
    hold = None
    if hold_text is not None:
        if hold_text not in ("ON", "OFF"):
            raise InvalidArgument("Legal Hold must be either of 'ON' or 'OFF'", ArgumentName=HOLD_HEADER,
                                  ArgumentValue=hold_text)
        hold = hold_text == "ON"
    return WriteLock(mode, until, hold)


def bypass_requested(headers: Mapping[str, str]) -> bool:
    return (headers.get(BYPASS_HEADER) or "").strip().lower() == "true"


def check_bypass_header(headers: Mapping[str, str], record: Mapping) -> None:
    """DeleteObject / DeleteObjects: ``x-amz-bypass-governance-retention`` (true or false) on a
    bucket without Object Lock is 400 InvalidArgument, as S3 answers it."""
    if BYPASS_HEADER in headers and not lock_enabled(record):
        raise InvalidArgument(f"{BYPASS_HEADER} is only applicable to Object Lock enabled buckets.",
                              ArgumentName=BYPASS_HEADER)


def response_headers(mode: str | None, until: float | None, legal_hold: bool | None) -> dict[str, str]:
    """GET/HEAD: the version's lock, as S3 reports it."""
    out: dict[str, str] = {}
    if mode and until is not None:
        out[MODE_HEADER] = mode
        out[UNTIL_HEADER] = format_timestamp(until)
    if legal_hold:
        out[HOLD_HEADER] = "ON"
    return out
