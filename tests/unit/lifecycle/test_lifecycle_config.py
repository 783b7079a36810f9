"""The lifecycle configuration: S3's XML in, the stored rules, and back (buckets.lifecycle.config)."""

from __future__ import annotations

import pytest

from buckets.errors import BucketsError
from buckets.lifecycle.config import configuration_xml, parse_configuration, parse_date


def doc(*rules: str) -> bytes:
    return ('<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            + "".join(rules) + "</LifecycleConfiguration>").encode()


def rule(body: str = "<Expiration><Days>1</Days></Expiration>", *, rid: str | None = "r",
         status: str | None = "Enabled", flt: str | None = "<Filter></Filter>") -> str:
    parts = []
    if rid is not None:
        parts.append(f"<ID>{rid}</ID>")
    if flt is not None:
        parts.append(flt)
    if status is not None:
        parts.append(f"<Status>{status}</Status>")
    return "<Rule>" + "".join(parts) + body + "</Rule>"


def refused(body: bytes) -> tuple[str, str]:
    with pytest.raises(BucketsError) as exc:
        parse_configuration(body)
    return exc.value.code, exc.value.message


# --- what is accepted, and how it is kept --------------------------------------------------------


def test_every_element_round_trips() -> None:
    body = doc(
        rule("<Expiration><Days>30</Days></Expiration>", rid="logs",
             flt="<Filter><Prefix>logs/</Prefix></Filter>"),
        rule("<Expiration><Date>2030-01-01T00:00:00.000Z</Date></Expiration>", rid="date", flt="<Prefix>old/</Prefix>"),
        rule("<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>"
             "<NoncurrentVersionExpiration><NoncurrentDays>7</NoncurrentDays>"
             "<NewerNoncurrentVersions>3</NewerNoncurrentVersions></NoncurrentVersionExpiration>", rid="versions"),
        rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation>"
             "</AbortIncompleteMultipartUpload>", rid="mpu", status="Disabled",
             flt="<Filter><Prefix>up/</Prefix></Filter>"),
        rule(rid="and", flt="<Filter><And><Prefix>a/</Prefix><Tag><Key>k1</Key><Value>v1</Value></Tag>"
                            "<Tag><Key>k2</Key><Value></Value></Tag><ObjectSizeGreaterThan>10</ObjectSizeGreaterThan>"
                            "<ObjectSizeLessThan>1000</ObjectSizeLessThan></And></Filter>"),
        rule(rid="tag", flt="<Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter>"),
        rule(rid="gt", flt="<Filter><ObjectSizeGreaterThan>0</ObjectSizeGreaterThan></Filter>"),
        rule(rid="lt", flt="<Filter><ObjectSizeLessThan>5</ObjectSizeLessThan></Filter>"),
    )
    rules = parse_configuration(body)
    assert [r["id"] for r in rules] == ["logs", "date", "versions", "mpu", "and", "tag", "gt", "lt"]
    assert rules[0] == {"id": "logs", "status": "Enabled", "shape": "prefix",
                        "filter": {"prefix": "logs/", "tags": [], "gt": None, "lt": None},
                        "expiration": {"days": 30}}
    assert rules[1]["shape"] == "legacy" and rules[1]["expiration"] == {"date": 1893456000.0}
    assert rules[2]["expiration"] == {"marker": True} and rules[2]["noncurrent"] == {"days": 7, "newer": 3}
    assert rules[2]["shape"] == "empty"
    assert rules[3]["status"] == "Disabled" and rules[3]["abort"] == {"days": 2}
    assert rules[4]["filter"] == {"prefix": "a/", "tags": [["k1", "v1"], ["k2", ""]], "gt": 10, "lt": 1000}
    # Serialized and parsed again, nothing changes; the XML names each filter as it was sent.
    xml = configuration_xml(rules)
    assert parse_configuration(xml) == rules
    text = xml.decode()
    assert "<Rule><ID>date</ID><Prefix>old/</Prefix><Status>Enabled</Status>" in text
    assert "<Filter><And><Prefix>a/</Prefix>" in text
    assert "<Filter></Filter>" in text
    assert "<Date>2030-01-01T00:00:00.000Z</Date>" in text


def test_a_rule_without_an_id_gets_one_and_keeps_it() -> None:
    rules = parse_configuration(doc(rule(rid=None), rule(rid="")))
    assert len(rules[0]["id"]) == 48 and rules[0]["id"] != rules[1]["id"]
    assert parse_configuration(configuration_xml(rules)) == rules


def test_limits_are_inclusive() -> None:
    rules = parse_configuration(doc(*(rule(rid=f"r{i}") for i in range(1000))))
    assert len(rules) == 1000
    assert parse_configuration(doc(rule(rid="i" * 255)))[0]["id"] == "i" * 255
    assert parse_configuration(doc(rule(flt=f"<Prefix>{'p' * 1024}</Prefix>")))[0]["filter"]["prefix"] == "p" * 1024
    tag = f"<Filter><Tag><Key>{'k' * 128}</Key><Value>{'v' * 256}</Value></Tag></Filter>"
    assert parse_configuration(doc(rule(flt=tag)))[0]["filter"]["tags"] == [["k" * 128, "v" * 256]]
    noncurrent = "<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays>" \
                 "<NewerNoncurrentVersions>100</NewerNoncurrentVersions></NoncurrentVersionExpiration>"
    assert parse_configuration(doc(rule(noncurrent)))[0]["noncurrent"]["newer"] == 100


@pytest.mark.parametrize("text, seconds", [
    ("2030-01-01", 1893456000.0),
    ("2030-01-01T00:00:00Z", 1893456000.0),
    ("2030-01-01T00:00:00.000Z", 1893456000.0),
    ("2030-01-01T00:00:00", 1893456000.0),
    ("2030-01-01T02:00:00+02:00", 1893456000.0),
    ("2029-12-31T19:00:00-05:00", 1893456000.0),
])
def test_dates_in_any_iso_form_at_midnight_utc(text: str, seconds: float) -> None:
    assert parse_date(text) == seconds


# --- what is refused, with AWS's code and message --------------------------------------------------

EXPIRE = "<Expiration><Days>1</Days></Expiration>"
ABORT = "<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload>"


@pytest.mark.parametrize("body, code, message", [
    # the document
    (b"", "MalformedXML", ""),
    (b"<LifecycleConfiguration>", "MalformedXML", ""),
    (doc(), "MalformedXML", ""),
    (b"<CORSConfiguration/>", "MalformedXML", ""),
    (doc(rule(), "<Other/>"), "MalformedXML", ""),
    (doc(*(rule(rid=f"r{i}") for i in range(1001))), "InvalidRequest",
     "The number of lifecycle rules must not exceed the allowed limit of 1000 rules."),
    # ID and Status
    (doc(rule(rid="i" * 256)), "InvalidArgument", "ID length should not exceed allowed limit of 255"),
    (doc(rule(rid="same"), rule(rid="same")), "InvalidArgument",
     "Rule ID must be unique. Found same ID for more than one rule."),
    (doc(rule(status=None)), "MalformedXML", ""),
    (doc(rule(status="enabled")), "MalformedXML", ""),
    (doc(rule(status="")), "MalformedXML", ""),
    (doc(rule(EXPIRE + "<Status>Enabled</Status>")), "MalformedXML", ""),
    (doc(rule(EXPIRE + "<Unknown/>")), "MalformedXML", ""),
    # filters
    (doc(rule(flt=None)), "MalformedXML", ""),
    (doc(rule(flt="<Prefix>a</Prefix><Filter><Prefix>a</Prefix></Filter>")), "MalformedXML", ""),
    (doc(rule(flt="<Filter><Prefix>a</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></Filter>")), "MalformedXML", ""),
    (doc(rule(flt="<Filter><Prefix>a</Prefix><Prefix>b</Prefix></Filter>")), "MalformedXML", ""),
    (doc(rule(flt="<Filter><And><Prefix>a</Prefix></And></Filter>")), "MalformedXML", ""),
    (doc(rule(flt="<Filter><And><Prefix>a</Prefix><Prefix>b</Prefix></And></Filter>")), "MalformedXML", ""),
    (doc(rule(flt="<Filter><Bogus/></Filter>")), "MalformedXML", ""),
    (doc(rule(flt="<Filter><Tag><Key>k</Key></Tag></Filter>")), "MalformedXML", ""),
    (doc(rule(flt="<Filter><Tag><Key></Key><Value>v</Value></Tag></Filter>")), "InvalidRequest",
     "A Tag's Key must be a length between 1 and 128"),
    (doc(rule(flt=f"<Filter><Tag><Key>{'k' * 129}</Key><Value>v</Value></Tag></Filter>")), "InvalidRequest",
     "A Tag's Key must be a length between 1 and 128"),
    (doc(rule(flt=f"<Filter><Tag><Key>k</Key><Value>{'v' * 257}</Value></Tag></Filter>")), "InvalidRequest",
     "A Tag's Value must be a length between 0 and 256"),
    (doc(rule(flt="<Filter><And><Tag><Key>k</Key><Value>1</Value></Tag><Tag><Key>k</Key><Value>2</Value></Tag>"
                  "</And></Filter>")), "InvalidRequest", "Duplicate Tag Keys are not allowed."),
    (doc(rule(flt=f"<Prefix>{'p' * 1025}</Prefix>")), "InvalidArgument",
     "Specified prefix is longer than maximum allowed key length of 1024"),
    (doc(rule(flt="<Filter><ObjectSizeGreaterThan>-1</ObjectSizeGreaterThan></Filter>")), "InvalidRequest",
     "'ObjectSizeGreaterThan' should be between 0 and"),
    (doc(rule(flt="<Filter><ObjectSizeLessThan>0</ObjectSizeLessThan></Filter>")), "InvalidRequest",
     "'ObjectSizeLessThan' should be between 1 and"),
    (doc(rule(flt="<Filter><ObjectSizeLessThan>big</ObjectSizeLessThan></Filter>")), "MalformedXML", ""),
    (doc(rule(flt="<Filter><And><ObjectSizeGreaterThan>10</ObjectSizeGreaterThan>"
                  "<ObjectSizeLessThan>10</ObjectSizeLessThan></And></Filter>")), "InvalidRequest",
     "'ObjectSizeGreaterThan' must be less than 'ObjectSizeLessThan'."),
    # actions
    (doc(rule("")), "InvalidRequest", "At least one action needs to be specified in a rule."),
    (doc(rule("<Expiration></Expiration>")), "MalformedXML", ""),
    (doc(rule("<Expiration><Days>1</Days><Date>2030-01-01T00:00:00Z</Date></Expiration>")), "MalformedXML", ""),
    (doc(rule("<Expiration><Days>1</Days><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>"
              "</Expiration>")), "MalformedXML", ""),
    (doc(rule("<Expiration><Days>0</Days></Expiration>")), "InvalidArgument",
     "'Days' for Expiration action must be a positive integer"),
    (doc(rule("<Expiration><Days>-3</Days></Expiration>")), "InvalidArgument",
     "'Days' for Expiration action must be a positive integer"),
    (doc(rule("<Expiration><Days>ten</Days></Expiration>")), "MalformedXML", ""),
    (doc(rule("<Expiration><Days>1.5</Days></Expiration>")), "MalformedXML", ""),
    (doc(rule("<Expiration><Days>" + "9" * 40 + "</Days></Expiration>")), "MalformedXML", ""),
    (doc(rule("<Expiration><Days>1</Days></Expiration><Expiration><Days>2</Days></Expiration>")),
     "MalformedXML", ""),
    (doc(rule("<Expiration><Date>2030-01-01T12:00:00Z</Date></Expiration>")), "InvalidArgument",
     "'Date' must be at midnight GMT"),
    (doc(rule("<Expiration><Date>2030-01-01T00:00:00.5Z</Date></Expiration>")), "InvalidArgument",
     "'Date' must be at midnight GMT"),
    (doc(rule("<Expiration><Date>soon</Date></Expiration>")), "MalformedXML", ""),
    (doc(rule("<Expiration><Date>2030-02-30</Date></Expiration>")), "MalformedXML", ""),
    (doc(rule("<Expiration><ExpiredObjectDeleteMarker>yes</ExpiredObjectDeleteMarker></Expiration>")),
     "MalformedXML", ""),
    (doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>0</NoncurrentDays></NoncurrentVersionExpiration>")),
     "InvalidArgument", "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer"),
    (doc(rule("<NoncurrentVersionExpiration></NoncurrentVersionExpiration>")), "MalformedXML", ""),
    (doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays>"
              "<NewerNoncurrentVersions>0</NewerNoncurrentVersions></NoncurrentVersionExpiration>")),
     "InvalidArgument", "'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must be a positive integer"),
    (doc(rule("<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays>"
              "<NewerNoncurrentVersions>101</NewerNoncurrentVersions></NoncurrentVersionExpiration>")),
     "InvalidArgument", "must not exceed 100"),
    (doc(rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>0</DaysAfterInitiation>"
              "</AbortIncompleteMultipartUpload>")), "InvalidArgument",
     "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer"),
    (doc(rule("<AbortIncompleteMultipartUpload></AbortIncompleteMultipartUpload>")), "MalformedXML", ""),
    (doc(rule(ABORT, flt="<Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter>")), "InvalidRequest",
     "AbortIncompleteMultipartUpload cannot be specified with Tags."),
    (doc(rule(ABORT, flt="<Filter><And><Prefix>p</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></And></Filter>")),
     "InvalidRequest", "AbortIncompleteMultipartUpload cannot be specified with Tags."),
    (doc(rule(ABORT, flt="<Filter><ObjectSizeLessThan>5</ObjectSizeLessThan></Filter>")), "InvalidRequest",
     "AbortIncompleteMultipartUpload cannot be specified with Object Size."),
    (doc(rule("<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>",
              flt="<Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter>")), "InvalidRequest",
     "ExpiredObjectDeleteMarker cannot be specified with Tags."),
    (doc(rule("<Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition>")), "NotImplemented",
     "Transition"),
])
def test_refused(body: bytes, code: str, message: str) -> None:
    got_code, got_message = refused(body)
    assert got_code == code
    assert message in got_message
