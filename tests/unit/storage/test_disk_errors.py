"""Disk errors keep their class across a peer RPC: ``code`` -> wire record -> same class."""

from __future__ import annotations

import msgpack
import pytest

from buckets import errors
from buckets.errors import DISK_ERRORS, DiskError, disk_error_from_wire, disk_error_to_wire


def all_disk_error_classes() -> list[type[DiskError]]:
    found, stack = [], [DiskError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def test_every_disk_error_class_has_its_own_registered_code() -> None:
    classes = [c for c in all_disk_error_classes() if c.__module__ == "buckets.errors"]
    assert len(classes) >= 11
    assert len({c.code for c in classes}) == len(classes), "two classes share a code"
    for cls in classes:
        assert DISK_ERRORS[cls.code] is cls, cls
        assert getattr(errors, cls.__name__) is cls


@pytest.mark.parametrize("cls", sorted(DISK_ERRORS.values(), key=lambda c: c.code), ids=lambda c: c.code)
def test_round_trip_through_msgpack(cls) -> None:
    original = cls(f"/srv/d1: something about {cls.code} (é, 💾)")
    record = msgpack.unpackb(msgpack.packb(disk_error_to_wire(original)))
    assert record == {"code": cls.code, "message": str(original)}
    back = disk_error_from_wire(record)
    assert type(back) is cls and str(back) == str(original)


def test_offline_family_stays_a_family() -> None:
    for code in ("DiskFaulty", "DiskTimeout"):
        assert isinstance(disk_error_from_wire({"code": code, "message": "m"}), errors.DiskOffline)
    assert not isinstance(disk_error_from_wire({"code": "FileNotFound", "message": "m"}), errors.DiskOffline)


@pytest.mark.parametrize("record", [
    {"code": "SomethingNewer", "message": "from a newer peer"}, {"code": 7, "message": "m"},
    {"message": "no code"}, {"code": "FileNotFound", "message": b"bytes"}, ["FileNotFound", "m"], None,
])
def test_unknown_or_malformed_records_are_still_disk_errors(record) -> None:
    back = disk_error_from_wire(record)
    assert type(back) is DiskError
    if isinstance(record, dict) and isinstance(record.get("message"), str):
        assert str(back) == record["message"]
