"""buckets.s3.lockrules: Object Lock documents and headers, checked as S3 checks them."""

from __future__ import annotations

import pytest

from buckets.errors import InvalidArgument, InvalidRequest, MalformedXML
from buckets.s3 import lockrules
from buckets.s3.lockrules import InvalidBucketState

NOW = 1_900_000_000.0  # 2030-03-17


def config(inner: str = "", enabled: str = "<ObjectLockEnabled>Enabled</ObjectLockEnabled>") -> bytes:
    return (f'<ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{enabled}{inner}'
            "</ObjectLockConfiguration>").encode()


def rule(body: str) -> str:
    return f"<Rule><DefaultRetention>{body}</DefaultRetention></Rule>"


def test_configuration_forms_and_round_trip():
    assert lockrules.parse_configuration(config()) == {"enabled": True, "mode": None, "days": None, "years": None}
    days = lockrules.parse_configuration(config(rule("<Mode>GOVERNANCE</Mode><Days>3</Days>")))
    assert days == {"enabled": True, "mode": "GOVERNANCE", "days": 3, "years": None}
    years = lockrules.parse_configuration(config(rule("<Years> 2 </Years><Mode>COMPLIANCE</Mode>")))
    assert years == {"enabled": True, "mode": "COMPLIANCE", "days": None, "years": 2}
    for parsed in (days, years, lockrules.parse_configuration(config())):
        assert lockrules.parse_configuration(lockrules.configuration_xml(parsed)) == parsed
    assert lockrules.parse_configuration(config(rule("<Mode>GOVERNANCE</Mode><Days>36500</Days>")))["days"] == 36500


@pytest.mark.parametrize("body", [
    config(enabled=""),
    config(enabled="<ObjectLockEnabled>Disabled</ObjectLockEnabled>"),
    config(enabled="<ObjectLockEnabled>enabled</ObjectLockEnabled>"),
    config("<Rule/>"),
    config("<Rule><DefaultRetention/></Rule>"),
    config(rule("<Mode>GOVERNANCE</Mode>")),
    config(rule("<Days>1</Days>")),
    config(rule("<Mode>governance</Mode><Days>1</Days>")),
    config(rule("<Mode>BAD-VALUE</Mode><Days>1</Days>")),
    config(rule("<Mode>GOVERNANCE</Mode><Days>1</Days><Years>1</Years>")),
    config(rule("<Mode>GOVERNANCE</Mode><Days>1</Days><Days>2</Days>")),
    config(rule("<Mode>GOVERNANCE</Mode><Days>one</Days>")),
    config(rule("<Mode>GOVERNANCE</Mode><Days>1.5</Days>")),
    config(rule("<Mode>GOVERNANCE</Mode><Days>99999999999999999999</Days>")),
    config(rule("<Mode>GOVERNANCE</Mode><Days>1</Days><DefaultEventHold/>")),
    config(rule("<Mode>GOVERNANCE</Mode><Days>1</Days>") + "<Rule/>"),
    config("<Other/>"),
    b"<ObjectLockConfiguration>",
    b"<Retention/>",
])
def test_malformed_configurations(body):
    with pytest.raises(MalformedXML):
        lockrules.parse_configuration(body)


@pytest.mark.parametrize("element, value, message", [
    ("Days", "0", "Default retention period must be a positive integer value."),
    ("Days", "-1", "Default retention period must be a positive integer value."),
    ("Years", "0", "Default retention period must be a positive integer value."),
    ("Days", "36501", "Default retention period too large."),
    ("Years", "101", "Default retention period too large."),
])
def test_period_out_of_range_is_invalid_argument(element, value, message):
    with pytest.raises(InvalidArgument) as exc:
        lockrules.parse_configuration(config(rule(f"<Mode>GOVERNANCE</Mode><{element}>{value}</{element}>")))
    assert exc.value.message == message
    assert exc.value.extra == {"ArgumentName": element, "ArgumentValue": value}


def test_default_until():
    assert lockrules.default_until({"mode": None}, NOW) is None
    assert lockrules.default_until({"mode": "GOVERNANCE", "days": 2}, NOW) == NOW + 2 * 86400
    assert lockrules.default_until({"mode": "COMPLIANCE", "years": 1}, NOW) == NOW + 365 * 86400


def test_timestamps():
    assert lockrules.parse_timestamp("2030-03-17T17:46:40Z") == NOW
    assert lockrules.parse_timestamp("2030-03-17T17:46:40.000Z") == NOW
    assert lockrules.parse_timestamp("2030-03-17T19:46:40+02:00") == NOW
    assert lockrules.parse_timestamp("2030-03-17T17:46:40") == NOW  # no zone: UTC
    for bad in ("", "abc", "tomorrow", "17/03/2030", "2030-13-01T00:00:00Z", "x" * 100):
        assert lockrules.parse_timestamp(bad) is None
    assert lockrules.format_timestamp(NOW) == "2030-03-17T17:46:40.000Z"


def retention(inner: str) -> bytes:
    return f"<Retention>{inner}</Retention>".encode()


def test_retention_documents():
    body = retention("<Mode>COMPLIANCE</Mode><RetainUntilDate>2030-03-18T00:00:00Z</RetainUntilDate>")
    mode, until = lockrules.parse_retention(body, now=NOW)
    assert mode == "COMPLIANCE" and until == lockrules.parse_timestamp("2030-03-18T00:00:00Z")
    assert lockrules.parse_retention(lockrules.retention_xml(mode, until), now=NOW) == (mode, until)
    assert lockrules.parse_retention(b"<Retention/>", now=NOW) == (None, None)
    with pytest.raises(InvalidArgument) as exc:
        lockrules.parse_retention(retention("<Mode>GOVERNANCE</Mode><RetainUntilDate>2030-03-17T17:46:40Z"
                                            "</RetainUntilDate>"), now=NOW)
    assert exc.value.message == "The retain until date must be in the future!"
    assert exc.value.extra["ArgumentName"] == "RetainUntilDate"


@pytest.mark.parametrize("inner", [
    "<Mode>GOVERNANCE</Mode>",
    "<RetainUntilDate>2031-01-01T00:00:00Z</RetainUntilDate>",
    "<Mode>SOMETIMES</Mode><RetainUntilDate>2031-01-01T00:00:00Z</RetainUntilDate>",
    "<Mode>GOVERNANCE</Mode><RetainUntilDate>soon</RetainUntilDate>",
    "<Mode>GOVERNANCE</Mode><Mode>GOVERNANCE</Mode><RetainUntilDate>2031-01-01T00:00:00Z</RetainUntilDate>",
    "<Mode>GOVERNANCE</Mode><RetainUntilDate>2031-01-01T00:00:00Z</RetainUntilDate><EventHold>ON</EventHold>",
])
def test_malformed_retention(inner):
    with pytest.raises(MalformedXML):
        lockrules.parse_retention(retention(inner), now=NOW)


def test_legal_hold_documents():
    assert lockrules.parse_legal_hold(b"<LegalHold><Status>ON</Status></LegalHold>") is True
    assert lockrules.parse_legal_hold(lockrules.legal_hold_xml(False)) is False
    for bad in (b"<LegalHold/>", b"<LegalHold><Status>on</Status></LegalHold>",
                b"<LegalHold><Status>ON</Status><Status>OFF</Status></LegalHold>", b"<Retention/>"):
        with pytest.raises(MalformedXML):
            lockrules.parse_legal_hold(bad)


def test_write_headers():
    assert lockrules.parse_write_headers({}, now=NOW) == lockrules.WriteLock()
    assert not lockrules.WriteLock().asked
    lock = lockrules.parse_write_headers({"x-amz-object-lock-mode": "GOVERNANCE",
                                          "x-amz-object-lock-retain-until-date": "2030-03-18T00:00:00Z",
                                          "x-amz-object-lock-legal-hold": "OFF"}, now=NOW)
    assert lock.mode == "GOVERNANCE" and lock.until == lockrules.parse_timestamp("2030-03-18T00:00:00Z")
    assert lock.legal_hold is False and lock.asked
    assert lockrules.parse_write_headers({"x-amz-object-lock-legal-hold": "ON"}, now=NOW).legal_hold is True


@pytest.mark.parametrize("headers, message, argument", [
    ({"x-amz-object-lock-mode": "GOVERNANCE"},
     "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied",
     "x-amz-object-lock-retain-until-date"),
    ({"x-amz-object-lock-retain-until-date": "2031-01-01T00:00:00Z"},
     "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied",
     "x-amz-object-lock-mode"),
    ({"x-amz-object-lock-mode": "FOREVER", "x-amz-object-lock-retain-until-date": "2031-01-01T00:00:00Z"},
     "Unknown wormMode directive.", "x-amz-object-lock-mode"),
    ({"x-amz-object-lock-mode": "COMPLIANCE", "x-amz-object-lock-retain-until-date": "abc"},
     "The retain until date must be provided in ISO 8601 format", "x-amz-object-lock-retain-until-date"),
    ({"x-amz-object-lock-mode": "COMPLIANCE", "x-amz-object-lock-retain-until-date": "2020-01-01T00:00:00Z"},
     "The retain until date must be in the future!", "x-amz-object-lock-retain-until-date"),
    ({"x-amz-object-lock-legal-hold": "wrong"}, "Legal Hold must be either of 'ON' or 'OFF'",
     "x-amz-object-lock-legal-hold"),
])
def test_bad_write_headers(headers, message, argument):
    with pytest.raises(InvalidArgument) as exc:
        lockrules.parse_write_headers(headers, now=NOW)
    assert exc.value.message == message and exc.value.extra["ArgumentName"] == argument


def test_bucket_state_rules():
    locked = {"lock": {"enabled": True}, "versioning": "Enabled"}
    assert lockrules.lock_enabled(locked) and not lockrules.lock_enabled({})
    lockrules.require_lock(locked, "b")
    with pytest.raises(InvalidRequest, match="Bucket is missing Object Lock Configuration"):
        lockrules.require_lock({"versioning": "Enabled"}, "b")
    lockrules.check_versioning_change(locked, "Enabled")
    lockrules.check_versioning_change({}, "Suspended")
    with pytest.raises(InvalidBucketState) as exc:
        lockrules.check_versioning_change(locked, "Suspended")
    assert exc.value.status == 409
    lockrules.check_bypass_header({}, {})
    lockrules.check_bypass_header({"x-amz-bypass-governance-retention": "true"}, locked)
    with pytest.raises(InvalidArgument):
        lockrules.check_bypass_header({"x-amz-bypass-governance-retention": "false"}, {})
    assert lockrules.bypass_requested({"x-amz-bypass-governance-retention": "True"})
    assert not lockrules.bypass_requested({"x-amz-bypass-governance-retention": "false"})


def test_response_headers():
    assert lockrules.response_headers(None, None, None) == {}
    assert lockrules.response_headers("GOVERNANCE", NOW, True) == {
        "x-amz-object-lock-mode": "GOVERNANCE", "x-amz-object-lock-retain-until-date": "2030-03-17T17:46:40.000Z",
        "x-amz-object-lock-legal-hold": "ON"}
