"""``buckets-admin cluster add-node`` (and remove-node, add-disk, remove-disk) ask again when the
control plane leaves a change unconfirmed (503 "no majority of the control plane committed it
within 30s": a leader change, or a follower's forward lost on a reconnect). Before, the operator
saw the 503 and had to run the command again; a change applies once, so asking again is safe."""

from __future__ import annotations

import pytest

from buckets.admin.client import AdminCallError
from buckets.cli import admin


class FlakyControlPlane:
    def __init__(self, failures: list[AdminCallError], answer: dict) -> None:
        self.failures = failures
        self.answer = answer
        self.calls: list[tuple[str, str, dict]] = []

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        self.calls.append((method, path, body))
        if path == "cluster/migration":
            return {"state": "done", "moved_objects": 7, "moved_bytes": 7 << 20, "errors": 0}
        if self.failures:
            raise self.failures.pop(0)
        return self.answer


UNCONFIRMED = AdminCallError("ServiceUnavailable: add member 127.0.0.5:9101: no majority of the control plane "
                             "committed it within 30s", code="ServiceUnavailable", status=503, reason="NoQuorum")


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr(admin.time, "sleep", lambda s: None)


@pytest.mark.parametrize("argv,path,answer", [
    (["cluster", "add-node", "local", "http://127.0.0.5:9000/d{1...4}"], "cluster/add-node",
     {"node": "http://127.0.0.5:9000", "added": False, "message": "http://127.0.0.5:9000 is already an active node"}),
    (["cluster", "remove-node", "local", "http://127.0.0.5:9000"], "cluster/remove-node",
     {"node": "http://127.0.0.5:9000", "removed": False, "message": "http://127.0.0.5:9000 is draining already"}),
    (["cluster", "add-disk", "local", "http://127.0.0.2:9000/srv/d5"], "cluster/add-disk",
     {"added": False, "message": "http://127.0.0.2:9000/srv/d5 is a disk of the cluster already"}),
])
def test_an_unconfirmed_change_is_asked_again(argv, path, answer, monkeypatch, capsys, no_sleep) -> None:
    """The retry's answer says the change was made already: by the first attempt, whose answer
    was lost; its migration is followed as the first answer's would have been."""
    control = FlakyControlPlane([UNCONFIRMED, UNCONFIRMED], answer)
    monkeypatch.setattr(admin, "_client", lambda args: control)
    args = admin.build_parser().parse_args(argv)
    assert args.func(args) == 0
    posts = [(p, body) for method, p, body in control.calls if method == "POST"]
    assert [p for p, _ in posts] == [path] * 3  # the same change, asked three times
    assert len({repr(body) for _, body in posts}) == 1
    assert control.calls[3][:2] == ("GET", "cluster/migration")  # then its migration, followed
    out, err = capsys.readouterr()
    assert err.count("asking again") == 2 and answer["message"] in out
    assert "the first attempt" in out and "Migration done: 7 objects" in out


def test_a_change_made_before_is_not_followed(monkeypatch, capsys, no_sleep) -> None:
    """Without a retry, "already" means the operator asked for what was there: nothing to follow."""
    control = FlakyControlPlane([], {"added": False, "message": "http://127.0.0.5:9000 is already an active node"})
    monkeypatch.setattr(admin, "_client", lambda args: control)
    args = admin.build_parser().parse_args(["cluster", "add-node", "local", "http://127.0.0.5:9000/d{1...4}"])
    assert args.func(args) == 0
    assert [(m, p) for m, p, _ in control.calls] == [("POST", "cluster/add-node")]
    out, _ = capsys.readouterr()
    assert "already an active node" in out and "first attempt" not in out


def test_other_refusals_are_not_asked_again(monkeypatch, no_sleep) -> None:
    queued = AdminCallError("ServiceUnavailable: 4 changes are queued already: wait for the migration",
                            code="ServiceUnavailable", status=503)
    control = FlakyControlPlane([queued], {})
    monkeypatch.setattr(admin, "_client", lambda args: control)
    args = admin.build_parser().parse_args(["cluster", "add-node", "local", "http://127.0.0.5:9000/d{1...4}"])
    with pytest.raises(AdminCallError, match="queued already"):
        args.func(args)
    assert len(control.calls) == 1


def test_asking_again_stops_at_the_wait_timeout(monkeypatch, no_sleep) -> None:
    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(admin.time, "monotonic", lambda: float(next(clock)))
    control = FlakyControlPlane([UNCONFIRMED] * 100, {})
    monkeypatch.setattr(admin, "_client", lambda args: control)
    args = admin.build_parser().parse_args(["cluster", "remove-disk", "local", "http://127.0.0.2:9000/srv/d3",
                                            "--wait-timeout", "120"])
    with pytest.raises(AdminCallError, match="committed it within"):
        args.func(args)
    assert 2 <= len(control.calls) <= 4


def test_the_retry_is_decided_by_the_reason_not_the_message(monkeypatch, capsys, no_sleep) -> None:
    """A server names the refusal (``reason``): a NoQuorum is asked again whatever its wording,
    and another 503 is not, even one whose text reads like a NoQuorum's. A server from before
    ``reason`` (None) is still read by its message."""
    answer = {"node": "http://127.0.0.5:9000", "added": True, "generation": 3, "from_generation": 2}
    argv = ["cluster", "add-node", "local", "http://127.0.0.5:9000/d{1...4}", "--no-wait"]
    reworded = AdminCallError("ServiceUnavailable: the change is not confirmed yet", code="ServiceUnavailable",
                              status=503, reason="NoQuorum")
    lookalike = AdminCallError("ServiceUnavailable: nothing committed it within 30s", code="ServiceUnavailable",
                               status=503, reason="SlowDown")
    older = AdminCallError(str(UNCONFIRMED), code="ServiceUnavailable", status=503)
    for failures, asked in (([reworded], 2), ([older], 2), ([lookalike], 1)):
        control = FlakyControlPlane(list(failures), answer)
        monkeypatch.setattr(admin, "_client", lambda args: control)
        args = admin.build_parser().parse_args(argv)
        if asked == 1:
            with pytest.raises(AdminCallError, match="nothing committed"):
                args.func(args)
        else:
            assert args.func(args) == 0
        assert [p for m, p, _ in control.calls if m == "POST"] == ["cluster/add-node"] * asked
