"""Three control-plane processes on 127.0.0.1-3 (real pysyncobj over real sockets, journals
on disk): forwarding, identical decisions, leader loss, majority loss, restart, strangers.

The default run has the fast cases; the longer ones (an impostor with the wrong secret at a
member's address, full restart, membership changes, snapshot installs) carry the
``cluster`` marker (``pytest -m cluster``).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_cluster import DEFAULT_LAYOUT, ControlCluster, Node, node_records
from cryptography.fernet import Fernet

from buckets.cluster.control_records import TopologyRecord, parse_table
from buckets.placement import build_table


def comparable(state: dict) -> dict:
    """A node's state without its applied-command count (which counts refused commands too)."""
    return {key: value for key, value in state.items() if key != "applied"}


def bucket_names(state: dict) -> set[str]:
    return {b["name"] for b in state["buckets"]}


def refused(frame: dict, code: str, status: int) -> None:
    assert frame.get("error") == code and frame.get("status") == status, frame


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCluster]:
    # A shorter connection timeout than the default 3.5 s: the stranger test waits for it.
    cluster = ControlCluster(tmp_path_factory.mktemp("control"), connection_timeout=2.0)
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture
def shared(cluster: ControlCluster) -> Iterator[ControlCluster]:
    with cluster.no_tracebacks():
        yield cluster


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[ControlCluster]:
    cluster = ControlCluster(tmp_path)
    try:
        cluster.start()
        with cluster.no_tracebacks():
            yield cluster
    finally:
        cluster.close()


# --- the shared cluster: nothing here kills a node -------------------------------------------------
def test_a_change_through_a_follower_is_committed_and_seen_by_every_node(shared: ControlCluster) -> None:
    leader = shared.wait_leader()
    one, other = shared.followers()

    created = one.apply("create_bucket", name="via-follower", owner="alice")
    assert created["ok"]["name"] == "via-follower", created
    assert other.apply("put_user", access_key="alice", secret=b"sealed-by-caller")["ok"] == {"created": True}
    assert leader.apply("set_settings", set={"heal.interval": "1h"})["ok"] == {"settings": 1}

    # Followers forwarded to the leader (a follower cannot commit by itself): its state has them.
    states = [node.state(linearizable=True) for node in shared.nodes]
    for state in states:
        assert "via-follower" in bucket_names(state)
        assert [u["secret"] for u in state["users"] if u["access_key"] == "alice"] == [b"sealed-by-caller"]
        assert state["settings"]["heal.interval"] == "1h"
    assert comparable(states[0]) == comparable(states[1]) == comparable(states[2])
    # Local reads (no round trip) catch up on their own.
    shared.wait_applied(lambda state: "via-follower" in bucket_names(state))


def test_racing_nodes_get_one_decision(shared: ControlCluster) -> None:
    names = [f"race-{i}" for i in range(8)]
    sent = [(node, name, node.send("apply", op="create_bucket", args={"name": name, "owner": f"owner{node.index}"}))
            for name in names for node in shared.nodes]
    answers: dict[str, list[tuple[Node, dict]]] = {name: [] for name in names}
    for node, name, request in sent:
        answers[name].append((node, node.wait(request)))

    winners = {}
    for name, results in answers.items():
        won = [(node, frame) for node, frame in results if "ok" in frame]
        assert len(won) == 1, f"{name}: {results}"
        winners[name] = f"owner{won[0][0].index}"
        for node, frame in results:
            if "ok" not in frame:
                refused(frame, "BucketAlreadyExists", 409)

    states = [node.state(linearizable=True) for node in shared.nodes]
    for state in states:
        owners = {b["name"]: b["owner"] for b in state["buckets"] if b["name"] in winners}
        assert owners == winners
    assert comparable(states[0]) == comparable(states[1]) == comparable(states[2])


def test_bootstrap_from_every_node_and_racing_generations(shared: ControlCluster) -> None:
    records = node_records(shared)
    requests = [(node, node.send("bootstrap", deployment_id=f"dep-{node.index}", layout=DEFAULT_LAYOUT,
                                 nodes=records)) for node in shared.nodes]
    results = [node.wait(request)["ok"] for node, request in requests]
    assert sorted(r["created"] for r in results) == [False, False, True]
    winner = next(r["deployment_id"] for r in results if r["created"])
    assert {r["deployment_id"] for r in results} == {winner}

    tables = []
    for node in shared.nodes:
        topology = node.state(linearizable=True)["topology"]
        assert topology["deployment_id"] == winner and len(topology["history"]) == 1
        tables.append(topology["history"][0]["table"])
    assert tables[0] == tables[1] == tables[2]
    table = parse_table(tables[0])
    # The stored table is what placement computes from the stored inputs, and spans the nodes.
    record = TopologyRecord.from_wire(shared.nodes[0].state()["topology"])
    assert build_table(record.current.topology(DEFAULT_LAYOUT["partitions"]), 3) == table
    owner = {d["id"]: n["id"] for n in records for d in n["disks"]}
    assert all(len({owner[d] for d in row}) == 3 for row in table.rows), "one shard per node"

    # Two nodes propose a generation at once. Where both planned from generation 1, exactly
    # one wins and the other is refused (it must re-plan); where one node read the topology
    # only after the other's commit (a loaded machine: fresh-clone run 287), it planned from
    # generation 2 and commits 3. Never two generation 2s. (The refusal of a stale plan
    # itself: test_control_state.py, GenerationConflict.)
    draining = [dict(n, state="draining") if n["id"] == "node3" else n for n in records]
    joining = [dict(n, state="joining") if n["id"] == "node3" else n for n in records]
    first = shared.nodes[0].send("propose_generation", nodes=draining)
    second = shared.nodes[1].send("propose_generation", nodes=joining)
    frames = [shared.nodes[0].wait(first), shared.nodes[1].wait(second)]
    won = sorted(f["ok"]["generation"] for f in frames if "ok" in f)
    assert won in ([2], [2, 3]), frames
    if won == [2]:
        refused(next(f for f in frames if "ok" not in f), "GenerationConflict", 409)
    for node in shared.nodes:  # a follower may not have applied it yet: read through the log
        assert node.state(linearizable=True)["topology"]["history"][-1]["generation"] == won[-1]
    history = shared.nodes[2].state(linearizable=True)["topology"]["history"]
    assert [g["generation"] for g in history] == [1, *won]


def test_status_shows_every_member(shared: ControlCluster) -> None:
    def check() -> None:
        leader = shared.wait_leader()
        statuses = [node.status() for node in shared.nodes]
        assert {s["term"] for s in statuses} == {statuses[0]["term"]}
        for node, status in zip(shared.nodes, statuses):
            assert status["address"] == node.address and status["has_quorum"]
            assert status["role"] == ("leader" if node is leader else "follower")
            assert status["leader"] == leader.address
            members = {m["address"]: m for m in status["members"]}
            assert set(members) == set(shared.members)
            assert all(m["online"] for m in members.values())
            assert [a for a, m in members.items() if m["leader"]] == [leader.address]
            assert members[node.address]["self"]
        leader_view = {m["address"]: m for m in statuses[shared.nodes.index(leader)]["members"]}
        assert all(m["match_index"] is not None for a, m in leader_view.items() if a != leader.address)

    # Each node's status is its own view: right after an election (an earlier test may
    # have stopped a leader) a follower may not have heard the new leader's first heartbeat,
    # nor the leader its first answer. The views must agree within a few heartbeats.
    deadline = time.monotonic() + 30
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_bad_input_is_refused_the_same_everywhere_and_changes_nothing(shared: ControlCluster) -> None:
    follower = shared.followers()[0]
    before = [comparable(node.state(linearizable=True)) for node in shared.nodes]
    refused(follower.apply("create_bucket", name="Bad_Name"), "InvalidBucketName", 400)
    refused(follower.apply("create_bucket", name="ok-name", settings={"x": {1: 2}}), "InvalidArgument", 400)
    refused(follower.apply("put_user", access_key="x", secret=b"s"), "InvalidArgument", 400)
    refused(follower.apply("delete_bucket", name="never-created"), "NoSuchBucket", 404)
    refused(follower.apply("no_such_command"), "InvalidArgument", 400)
    after = [comparable(node.state(linearizable=True)) for node in shared.nodes]
    assert after == before


def _silent_close(address: str, payload: bytes) -> bytes:
    """Send ``payload`` to a control port; return what came back before the server closed."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        received = b""
        try:
            sock.sendall(payload)
            while chunk := sock.recv(4096):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed while we were still sending: unread bytes turn the close into a reset
        return received


def test_strangers_without_the_secret_learn_nothing(shared: ControlCluster) -> None:
    wrong_key = Fernet(Fernet.generate_key())
    token = wrong_key.encrypt(os.urandom(32))
    probes = [
        struct.pack("i", len(token)) + token,  # a well-formed frame under another key
        struct.pack("i", 5) + b"hello",  # a frame that is no token at all
    ]
    for node in shared.nodes:
        for probe in probes:
            assert _silent_close(node.address, probe) == b"", "the control port answered a stranger"
    # Noise is dropped too: a frame that never completes at the connection timeout, one that
    # announces a huge length as soon as more than a handshake's worth of it has arrived.
    assert _silent_close(shared.nodes[0].address, struct.pack("i", 1 << 30) + os.urandom(60)) == b""
    assert _silent_close(shared.nodes[1].address, struct.pack("i", 1 << 30) + os.urandom(1 << 20)) == b""
    # The members did not notice.
    assert shared.followers()[0].apply("create_bucket", name="after-strangers")["ok"]
    for status in (node.status() for node in shared.nodes):
        assert status["has_quorum"] and all(m["online"] for m in status["members"])


# --- fresh clusters: nodes die ---------------------------------------------------------------------
def test_leader_killed_a_new_leader_commits_exactly_once_and_the_old_one_catches_up(fresh: ControlCluster) -> None:
    old_leader = fresh.wait_leader()
    writer = fresh.followers()[0]
    assert writer.apply("create_bucket", name="before")["ok"]

    # A stream of compare-and-set updates through a follower while the leader dies: every
    # acknowledged update applied exactly once (a retried request is not applied twice).
    acknowledged = 0
    killed = threading.Event()

    def kill_leader() -> None:
        old_leader.kill()
        killed.set()

    version = 0
    for i in range(40):
        if i == 10:
            threading.Thread(target=kill_leader).start()
        frame = writer.apply("put_job", key="counter", value=i, expected_version=version, timeout=10)
        if "ok" in frame:
            version = frame["ok"]["version"]
            acknowledged += 1
        else:
            refused(frame, "ServiceUnavailable", 503)
    assert killed.wait(30)
    new_leader = fresh.wait_leader()
    assert new_leader is not old_leader
    state = writer.state(linearizable=True)
    assert [j["version"] for j in state["jobs"] if j["key"] == "counter"] == [acknowledged]

    assert fresh.alive()[0].apply("create_bucket", name="after")["ok"]
    old_leader.start()  # same directory: its journal, then what it missed from the new leader
    fresh.wait_applied(lambda s: {"before", "after"} <= bucket_names(s), [old_leader])
    assert comparable(old_leader.state(linearizable=True)) == comparable(new_leader.state(linearizable=True))


def test_majority_lost_changes_fail_fast_with_503_and_local_reads_still_work(fresh: ControlCluster) -> None:
    assert fresh.nodes[0].apply("create_bucket", name="kept")["ok"]
    fresh.wait_applied(lambda s: "kept" in bucket_names(s))
    survivor, *dead = fresh.nodes[2], fresh.nodes[0], fresh.nodes[1]
    for node in dead:
        node.kill()
    deadline = time.monotonic() + 30
    while survivor.status()["has_quorum"]:
        assert time.monotonic() < deadline, "the survivor never noticed it is alone"
        time.sleep(0.05)

    frame = survivor.apply("create_bucket", name="not-committed", timeout=2)
    assert frame["type"] == "NoQuorum"
    refused(frame, "ServiceUnavailable", 503)
    refused(survivor.call("read", linearizable=True, timeout=2), "ServiceUnavailable", 503)
    assert bucket_names(survivor.state()) == {"kept"}  # local reads work without a majority
    status = survivor.status()
    assert not status["has_quorum"]
    assert {m["address"]: m["online"] for m in status["members"]} == {
        fresh.nodes[0].address: False, fresh.nodes[1].address: False, survivor.address: True}

    dead[0].start()  # a majority again
    assert survivor.apply("create_bucket", name="back", timeout=30)["ok"]
    assert bucket_names(dead[0].state(linearizable=True)) == {"kept", "back"}


@pytest.mark.cluster
def test_a_node_with_the_wrong_secret_cannot_join_or_read(fresh: ControlCluster, tmp_path: Path) -> None:
    assert fresh.nodes[0].apply("create_bucket", name="secret-stuff")["ok"]
    real = fresh.nodes[2]
    real.kill()
    impostor = Node(3, real.address, fresh.members, tmp_path / "impostor", secret="not-the-cluster-secret")
    fresh.nodes.append(impostor)
    impostor.start()
    good = fresh.nodes[:2]
    for i in range(5):  # the members keep committing with the impostor around
        assert good[i % 2].apply("create_bucket", name=f"while-impostor-{i}")["ok"]
    for node in good:
        members = {m["address"]: m["online"] for m in node.status()["members"]}
        assert members[real.address] is False, "the impostor counts as online"

    refused(impostor.apply("create_bucket", name="from-impostor", timeout=2), "ServiceUnavailable", 503)
    state = impostor.state()
    assert state["buckets"] == [] and state["topology"] is None, "the impostor read the cluster's state"
    assert not any(m["online"] for m in impostor.status()["members"] if not m["self"])
    assert "from-impostor" not in bucket_names(good[0].state(linearizable=True))

    impostor.kill()
    real.start()  # the real node, its own journal, the right secret: catches up
    fresh.wait_applied(lambda s: "while-impostor-4" in bucket_names(s), [real])


# --- longer cases (pytest -m cluster) ---------------------------------------------------------------
@pytest.mark.cluster
def test_every_node_killed_and_restarted_from_its_journal(fresh: ControlCluster) -> None:
    records = node_records(fresh)
    assert fresh.nodes[0].call("bootstrap", deployment_id="dep", layout=DEFAULT_LAYOUT, nodes=records)["ok"]
    for i in range(30):
        assert fresh.nodes[i % 3].apply("create_bucket", name=f"b-{i:02d}", owner="o")["ok"]
    assert fresh.nodes[1].apply("put_user", access_key="alice", secret=b"sealed")["ok"]
    expected = comparable(fresh.nodes[0].state(linearizable=True))
    for node in fresh.nodes:
        node.kill()
    for node in fresh.nodes:
        node.start()
    fresh.wait_leader()
    for node in fresh.nodes:
        assert comparable(node.state(linearizable=True)) == expected


@pytest.mark.cluster
def test_members_added_and_removed_one_at_a_time(tmp_path: Path) -> None:
    cluster = ControlCluster(tmp_path, compaction_entries=20)
    try:
        cluster.start()
        with cluster.no_tracebacks():
            for i in range(50):  # past compaction: a newcomer gets a snapshot, then the log
                assert cluster.nodes[i % 3].apply("create_bucket", name=f"b-{i:02d}")["ok"]
            follower = cluster.followers()[0]
            address = f"127.0.0.4:{cluster.port}"
            newcomer = Node(4, address, cluster.members + [address], tmp_path / "n4", compaction_entries=20)
            cluster.nodes.append(newcomer)
            newcomer.start()
            assert newcomer.status()["leader"] is None  # not a member yet: nobody talks to it
            # (Membership changes get 30 s, as `buckets-admin cluster add-node` gives them: one is
            # refused until a new leader's first entry is applied, and a node restarted under load
            # can call elections for longer than the default 5 s.)
            assert follower.ok("add_member", address=address, timeout=30) is True
            assert cluster.nodes[0].ok("add_member", address=address, timeout=30) is False  # already a member
            cluster.wait_applied(lambda s: len(s["buckets"]) == 50, [newcomer])
            assert newcomer.apply("create_bucket", name="via-newcomer")["ok"]
            for node in cluster.nodes:
                assert len(node.status()["members"]) == 4

            # Four members: a majority is three, so one may be down.
            cluster.nodes[1].kill()
            assert newcomer.apply("create_bucket", name="three-of-four", timeout=30)["ok"]
            cluster.nodes[1].start()

            assert cluster.nodes[0].ok("remove_member", address=address, timeout=30) is True
            newcomer.kill()
            assert cluster.nodes[2].apply("create_bucket", name="after-removal", timeout=30)["ok"]
            # The restarted node may still be catching up: wait (bounded) for every node to agree.
            deadline = time.monotonic() + 30
            for node in cluster.nodes[:3]:
                while not (len(node.status()["members"]) == 3 and node.status()["has_quorum"]):
                    assert time.monotonic() < deadline, f"{node.address}: {node.status()}"
                    time.sleep(0.05)
            refused(cluster.nodes[0].call("remove_member", address=cluster.nodes[0].address),
                    "InvalidArgument", 400)
    finally:
        cluster.close()


@pytest.mark.cluster
def test_the_leader_removed_through_a_follower_hands_over_and_leaves(fresh: ControlCluster) -> None:
    """pysyncobj refuses to remove the node that leads, as if another change were in progress,
    for as long as it leads: the removal answered 409 after its whole budget (seen when a
    node added then elected leader was removed). Asked to remove itself, the leader hands
    over; the request, sent again, is applied by the next leader."""
    leader = fresh.wait_leader()
    follower = fresh.followers()[0]
    assert follower.ok("remove_member", address=leader.address, timeout=30) is True
    rest = [n for n in fresh.nodes if n is not leader]
    deadline = time.monotonic() + 30
    for node in rest:
        while not (len(node.status()["members"]) == 2 and node.status()["has_quorum"]
                   and node.status()["leader"] not in (None, leader.address)):
            assert time.monotonic() < deadline, f"{node.address}: {node.status()}"
            time.sleep(0.05)
    assert rest[1].apply("create_bucket", name="after-the-leader-left", timeout=30)["ok"]
    assert follower.ok("remove_member", address=leader.address, timeout=30) is False  # not a member now


@pytest.mark.cluster
def test_a_follower_behind_the_compacted_log_gets_a_snapshot(tmp_path: Path) -> None:
    cluster = ControlCluster(tmp_path, compaction_entries=20)
    try:
        cluster.start()
        with cluster.no_tracebacks():
            lagging = cluster.followers()[0]
            lagging.kill()
            alive = cluster.alive()
            for i in range(80):
                assert alive[i % 2].apply("create_bucket", name=f"b-{i:02d}")["ok"]
            lagging.start()
            cluster.wait_applied(lambda s: len(s["buckets"]) == 80, [lagging])
            assert "raft.snapshot" in os.listdir(lagging.directory)
            lagging.kill()  # and it restarts from that snapshot plus its journal
            lagging.start()
            assert len(lagging.state(linearizable=True)["buckets"]) == 80
    finally:
        cluster.close()


def test_a_leader_standing_aside_hands_over_and_the_cluster_keeps_a_leader(fresh: ControlCluster) -> None:
    """A node whose link the others find slow stands aside (``ControlPlane.stand_aside``,
    control_raft.py): if it leads it hands leadership over, and it starts no election while
    aside. Its followers heard it within the election timeout, so before, it kept leading and
    every control change waited for its link. It still votes: with the new leader killed, the
    remaining two elect the other one, and changes go on through every live node."""
    leader = fresh.wait_leader()
    assert leader.apply("create_bucket", name="before-aside")["ok"]
    leader.ok("stand_aside", aside=True)
    deadline = time.monotonic() + 30
    while True:
        statuses = [n.status() for n in fresh.nodes]
        if all(s["has_quorum"] and s["leader"] not in (None, leader.address) for s in statuses) and \
                len({s["leader"] for s in statuses}) == 1:
            break
        assert time.monotonic() < deadline, f"the leader did not hand over: {statuses}"
        time.sleep(0.05)
    assert "handing leadership over" in leader.log_text()
    assert leader.apply("create_bucket", name="through-the-aside-node", timeout=10)["ok"]  # forwarded
    successor = fresh.node(statuses[0]["leader"])
    successor.kill()
    third = next(n for n in fresh.nodes if n not in (leader, successor))
    deadline = time.monotonic() + 30
    while (status := third.status())["leader"] != third.address or not status["has_quorum"]:
        # the node aside never leads meanwhile, though the third needs its vote
        assert leader.status()["role"] != "leader", leader.status()
        assert time.monotonic() < deadline, f"no leader elected with the node aside: {status}"
        time.sleep(0.05)
    assert leader.apply("create_bucket", name="after-the-successor-died", timeout=10)["ok"]
    successor.restart()
    leader.ok("stand_aside", aside=False)  # back: it may lead again, and follows meanwhile
    fresh.wait_applied(lambda s: {"before-aside", "through-the-aside-node", "after-the-successor-died"}
                       <= bucket_names(s))


def test_a_partitioned_follower_does_not_unseat_the_leader_when_the_partition_heals(fresh: ControlCluster) -> None:
    """PreVote (control_raft.py): cut off with its connections up, a follower keeps asking
    whether it could win an election and is told no; its term does not grow, so when the
    partition heals it takes the leader's heartbeats instead of forcing an election, and no
    change is refused for a moment. Without PreVote its term grew at every election timeout
    and the healed cluster re-elected (stop 23's ListBuckets 503 after a heal)."""
    leader = fresh.wait_leader()
    assert leader.apply("create_bucket", name="before-cut")["ok"]
    term = leader.status()["term"]
    lone = fresh.followers()[0]
    rest = [n for n in fresh.alive() if n is not lone]
    lone.ok("isolate", peers=[n.address for n in rest])
    for n in rest:
        n.ok("isolate", peers=[lone.address])
    try:
        # An election the lone node had already won its pre-vote for (a heartbeat delayed past a
        # timeout on a loaded machine, just before the cut: fresh run 331) starts on its next tick
        # and raises its term once; nothing reaches it after that, so its term is read once the
        # cut has settled, and must not grow from there.
        time.sleep(1.0)
        cut_term = lone.status()["term"]
        time.sleep(6.0)  # three times the longest election timeout (2 s)
        # The majority side went on under the same leader; the lone node could not commit.
        assert leader.apply("create_bucket", name="during-cut")["ok"]
        refused(lone.apply("create_bucket", name="through-lone", timeout=2), "ServiceUnavailable", 503)
        # Without PreVote its term grew at every election timeout (3 or more in these 6 s).
        lone_term = lone.status()["term"]
        assert lone_term == cut_term, f"the lone follower's term went from {cut_term} to {lone_term} while cut off"
        term = leader.status()["term"]
    finally:
        for n in fresh.alive():
            n.ok("isolate", peers=[])
    fresh.wait_applied(lambda s: {"before-cut", "during-cut"} <= bucket_names(s), [lone])
    time.sleep(3.0)  # time for an election, had the heal forced one
    if lone_term <= term:
        # The heal forces no election: every node follows the same leader in the same term.
        for n in fresh.alive():
            status = n.status()
            assert (status["leader"], status["term"]) == (leader.address, term), (n.address, status)
    else:
        # The lone node took its higher term into the cut (above): Raft's rule makes the leader
        # step down when it hears it. One election, and the cluster agrees again.
        fresh.wait_leader()
        statuses = [n.status() for n in fresh.alive()]
        assert len({(s["leader"], s["term"]) for s in statuses}) == 1, statuses
        assert statuses[0]["leader"] is not None and statuses[0]["term"] <= lone_term + 1, statuses
    # A change through the healed node commits at once.
    frame = lone.apply("create_bucket", name="after-heal", timeout=2)
    assert frame.get("ok"), frame
    assert "through-lone" not in bucket_names(leader.state(linearizable=True))
