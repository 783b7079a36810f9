"""Typed errors survive the wire: the same class comes back, with its message and fields."""

from __future__ import annotations

import msgpack
import pytest

import buckets.errors as errors_module
from buckets.cluster import rpcerrors
from buckets.cluster.rpcerrors import (
    PeerOffline, PeerProtocolError, RemoteError, error_from_wire, error_to_wire, register_wire_error,
)
from buckets.errors import BucketsError, DiskError, FormatError, NoSuchKey


def _typed_classes() -> list[type[BaseException]]:
    found = set()
    for value in vars(errors_module).values():
        if isinstance(value, type) and issubclass(value, BucketsError | DiskError | FormatError):
            found.add(value)
    for value in vars(rpcerrors).values():
        if isinstance(value, type) and issubclass(value, BucketsError) and value is not RemoteError:
            found.add(value)
    return sorted(found, key=lambda cls: cls.__name__)


def through_the_wire(error: BaseException) -> BaseException:
    record = msgpack.unpackb(msgpack.packb(error_to_wire(error), use_bin_type=True), raw=False)
    return error_from_wire(record)


@pytest.mark.parametrize("cls", _typed_classes(), ids=lambda cls: cls.__name__)
def test_every_typed_error_comes_back_as_its_own_class(cls: type[BaseException]) -> None:
    error = cls(f"{cls.__name__} happened on the peer")
    back = through_the_wire(error)
    assert type(back) is cls
    assert str(back) == f"{cls.__name__} happened on the peer"
    if isinstance(error, BucketsError):
        assert isinstance(back, BucketsError)
        assert (back.code, back.status, back.message) == (error.code, error.status, error.message)


def test_resource_and_extra_fields_come_back() -> None:
    back = through_the_wire(NoSuchKey(resource="/b/k", BucketName="b", Key="k"))
    assert isinstance(back, NoSuchKey)
    assert back.resource == "/b/k" and back.extra == {"BucketName": "b", "Key": "k"}
    assert back.message == NoSuchKey.default_message


def test_a_class_this_node_does_not_know_keeps_its_code_status_and_message() -> None:
    record = {"type": "SomethingNewer", "code": "SlowDown", "status": 503, "message": "later",
              "resource": None, "extra": {}}
    back = error_from_wire(record)
    assert isinstance(back, RemoteError)
    assert (back.remote_type, back.code, back.status, back.message) == ("SomethingNewer", "SlowDown", 503, "later")
    assert error_to_wire(back)["type"] == "SomethingNewer"  # passed on unchanged


@pytest.mark.parametrize(("family", "cls"), [("disk", DiskError), ("format", FormatError)])
def test_an_unknown_disk_or_format_error_stays_in_its_family(family: str, cls: type[Exception]) -> None:
    back = error_from_wire({"type": "DiskOnFireNewerPeer", "family": family, "code": "X", "status": 500,
                            "message": "smoke"})
    assert type(back) is cls and str(back) == "smoke"


def test_a_class_defined_later_round_trips_without_registration() -> None:
    class LaterDiskError(DiskError):
        code = "DiskLater"

    assert type(through_the_wire(LaterDiskError("x"))) is LaterDiskError


def test_a_registered_class_with_its_own_constructor_round_trips() -> None:
    @register_wire_error
    class OddError(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}+{b}")

    back = through_the_wire(OddError(1, 2))
    assert type(back) is OddError and str(back) == "1+2"


@pytest.mark.parametrize("record", [None, [], "text", {"type": 5}, {}])
def test_garbage_records_become_an_error_not_a_crash(record: object) -> None:
    back = error_from_wire(record)
    assert isinstance(back, PeerProtocolError | RemoteError)


def test_messages_are_bounded_on_the_wire() -> None:
    assert len(error_to_wire(PeerOffline("x" * 100_000))["message"]) == 2048


def test_a_refused_signature_is_known_by_type_and_status_never_by_text() -> None:
    from buckets.cluster.rpcerrors import PeerAuthRefused, PeerOffline, RemoteError, refused_signature

    assert refused_signature(PeerAuthRefused(endpoint="http://127.0.0.1:9000"))
    assert refused_signature(RemoteError("AccessDenied", "AccessDenied", 403, "refused"))
    # A peer that could not be reached, on a port with "403" in it (a start-up once failed so)
    assert not refused_signature(PeerOffline("cannot connect to peer http://127.0.0.1:40351"))
    assert not refused_signature(RemoteError("SlowDown", "SlowDown", 503, "peer 127.0.0.1:40300 is busy"))
