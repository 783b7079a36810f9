"""Rule evaluation (buckets.lifecycle.rules): which rule selects an object, and when it is due."""

from __future__ import annotations

import calendar

from buckets.lifecycle.config import parse_configuration
from buckets.lifecycle.rules import (
    abort_date,
    abort_due,
    current_expiry,
    due_after,
    expiration_header,
    marker_due,
    matches,
    noncurrent_due,
)


def utc(*parts: int) -> float:
    return float(calendar.timegm((*parts, 0, 0, 0)[:9]))


def rules_of(xml: str) -> list[dict]:
    return parse_configuration(f"<LifecycleConfiguration>{xml}</LifecycleConfiguration>".encode())


def test_days_round_up_to_the_next_midnight_utc() -> None:
    # AWS's example: written 2014-01-15 10:30 UTC, 3 days -> 2014-01-19 00:00 UTC.
    assert due_after(utc(2014, 1, 15, 10, 30, 0), 3) == utc(2014, 1, 19, 0, 0, 0)
    # Written at midnight exactly: still the midnight after the days have passed.
    assert due_after(utc(2014, 1, 15, 0, 0, 0), 1) == utc(2014, 1, 17, 0, 0, 0)
    assert due_after(utc(2014, 1, 15, 23, 59, 59), 1) == utc(2014, 1, 17, 0, 0, 0)


def test_a_shortened_day_scales_the_same_rounding() -> None:
    assert due_after(101.5, 1, day=10) == 120
    assert due_after(100.0, 2, day=10) == 130
    assert due_after(0.2, 1, day=0.5) == 1.0


def test_filters() -> None:
    prefix, tag, size, every = rules_of(
        "<Rule><ID>p</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status>"
        "<Expiration><Days>1</Days></Expiration></Rule>"
        "<Rule><ID>t</ID><Filter><And><Prefix>a/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag>"
        "<Tag><Key>x</Key><Value></Value></Tag></And></Filter><Status>Enabled</Status>"
        "<Expiration><Days>1</Days></Expiration></Rule>"
        "<Rule><ID>s</ID><Filter><And><ObjectSizeGreaterThan>10</ObjectSizeGreaterThan>"
        "<ObjectSizeLessThan>20</ObjectSizeLessThan></And></Filter><Status>Enabled</Status>"
        "<Expiration><Days>1</Days></Expiration></Rule>"
        "<Rule><ID>e</ID><Filter/><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>")
    assert matches(prefix, "logs/x") and not matches(prefix, "log") and not matches(prefix, "x/logs/")
    assert matches(tag, "a/1", 0, {"k": "v", "x": "", "other": "1"})
    assert not matches(tag, "a/1", 0, {"k": "v"})
    assert not matches(tag, "a/1", 0, {"k": "w", "x": ""})
    assert not matches(tag, "b/1", 0, {"k": "v", "x": ""})
    assert not matches(tag, "a/1", 0, None)
    assert [n for n in (9, 10, 11, 19, 20, 21) if matches(size, "k", n)] == [11, 19]  # both bounds exclusive
    assert matches(every, "", 0) and matches(every, "anything", 5, {"t": "v"})


def test_current_expiry_is_the_earliest_enabled_matching_rule() -> None:
    rules = rules_of(
        "<Rule><ID>ten</ID><Filter/><Status>Enabled</Status><Expiration><Days>10</Days></Expiration></Rule>"
        "<Rule><ID>logs</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status>"
        "<Expiration><Days>2</Days></Expiration></Rule>"
        "<Rule><ID>off</ID><Filter/><Status>Disabled</Status><Expiration><Days>1</Days></Expiration></Rule>"
        "<Rule><ID>date</ID><Filter><Prefix>old/</Prefix></Filter><Status>Enabled</Status>"
        "<Expiration><Date>2014-01-16T00:00:00Z</Date></Expiration></Rule>"
        "<Rule><ID>mpu</ID><Filter/><Status>Enabled</Status>"
        "<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>"
        "</AbortIncompleteMultipartUpload></Rule>")
    written = utc(2014, 1, 15, 10, 30, 0)
    assert current_expiry(rules, "x", 1, None, written) == (utc(2014, 1, 26, 0, 0, 0), "ten")
    assert current_expiry(rules, "logs/x", 1, None, written) == (utc(2014, 1, 18, 0, 0, 0), "logs")
    assert current_expiry(rules, "old/x", 1, None, written) == (utc(2014, 1, 16, 0, 0, 0), "date")
    assert current_expiry(rules[2:3] + rules[4:], "x", 1, None, written) is None  # disabled, abort only


def test_noncurrent_versions_count_from_their_successor_and_keep_the_newest() -> None:
    rules = rules_of(
        "<Rule><ID>nc</ID><Filter/><Status>Enabled</Status><NoncurrentVersionExpiration>"
        "<NoncurrentDays>2</NoncurrentDays><NewerNoncurrentVersions>2</NewerNoncurrentVersions>"
        "</NoncurrentVersionExpiration></Rule>")
    since = utc(2020, 5, 1, 12, 0, 0)  # the successor's write
    due = utc(2020, 5, 4, 0, 0, 0)
    assert noncurrent_due(rules, "k", 1, None, since, 5, due - 1) is None
    assert noncurrent_due(rules, "k", 1, None, since, 5, due) == "nc"
    # The two newest noncurrent versions are kept however old they are.
    assert noncurrent_due(rules, "k", 1, None, since, 0, due + 1e6) is None
    assert noncurrent_due(rules, "k", 1, None, since, 1, due + 1e6) is None
    assert noncurrent_due(rules, "k", 1, None, since, 2, due + 1e6) == "nc"
    plain = rules_of("<Rule><ID>p</ID><Filter/><Status>Enabled</Status><NoncurrentVersionExpiration>"
                     "<NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration></Rule>")
    assert noncurrent_due(plain, "k", 1, None, since, 0, utc(2020, 5, 3, 0, 0, 0)) == "p"


def test_a_lone_delete_marker_is_removed_by_the_flag_or_by_days() -> None:
    flag, days, tagged = rules_of(
        "<Rule><ID>flag</ID><Filter><Prefix>f/</Prefix></Filter><Status>Enabled</Status>"
        "<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule>"
        "<Rule><ID>days</ID><Filter><Prefix>d/</Prefix></Filter><Status>Enabled</Status>"
        "<Expiration><Days>1</Days></Expiration></Rule>"
        "<Rule><ID>tagged</ID><Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter><Status>Enabled</Status>"
        "<Expiration><Days>1</Days></Expiration></Rule>")
    made = utc(2020, 1, 1, 6, 0, 0)
    assert marker_due([flag, days, tagged], "f/x", made, made) == "flag"
    assert marker_due([flag, days, tagged], "d/x", made, made) is None
    assert marker_due([flag, days, tagged], "d/x", made, utc(2020, 1, 3, 0, 0, 0)) == "days"
    assert marker_due([tagged], "any", made, made + 1e9) is None  # a marker has no tags
    off = rules_of("<Rule><ID>off</ID><Filter/><Status>Enabled</Status>"
                   "<Expiration><ExpiredObjectDeleteMarker>false</ExpiredObjectDeleteMarker></Expiration></Rule>")
    assert marker_due(off, "x", made, made + 1e9) is None


def test_incomplete_uploads() -> None:
    rules = rules_of(
        "<Rule><ID>tmp</ID><Filter><Prefix>tmp/</Prefix></Filter><Status>Enabled</Status>"
        "<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>"
        "</AbortIncompleteMultipartUpload></Rule>"
        "<Rule><ID>all</ID><Filter/><Status>Enabled</Status>"
        "<AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation>"
        "</AbortIncompleteMultipartUpload></Rule>")
    started = utc(2020, 1, 1, 6, 0, 0)
    assert abort_due(rules, "tmp/a", started, utc(2020, 1, 2, 23, 59, 59)) is None
    assert abort_due(rules, "tmp/a", started, utc(2020, 1, 3, 0, 0, 0)) == "tmp"
    assert abort_due(rules, "keep/a", started, utc(2020, 1, 3, 0, 0, 0)) is None
    assert abort_due(rules, "keep/a", started, utc(2020, 1, 9, 0, 0, 0)) == "all"
    assert abort_date(rules, "tmp/a", started) == (utc(2020, 1, 3, 0, 0, 0), "tmp")


def test_the_expiration_header() -> None:
    assert expiration_header(utc(2012, 12, 23, 0, 0, 0), "picture-deletion-rule") == \
        'expiry-date="Sun, 23 Dec 2012 00:00:00 GMT", rule-id="picture-deletion-rule"'
    assert expiration_header(0, 'a "b"\\c\nd') == 'expiry-date="Thu, 01 Jan 1970 00:00:00 GMT", rule-id="a \\"b\\"\\\\cd"'
