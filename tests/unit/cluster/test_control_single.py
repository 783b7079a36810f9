"""One control-plane node in this process, over real pysyncobj: the asyncio facade, typed
errors, the durable journal and snapshots, restart from disk, a port already taken."""

from __future__ import annotations

import os
import socket
import struct

import msgpack
from pysyncobj.journal import FileJournal, MemoryJournal
from pysyncobj.pickle import loads as pickle_loads
from pathlib import Path

import pytest

from buckets import errors
from buckets.cluster.control import (
    ControlConfig, ControlPlane, ControlPlaneError, NoSuchUser, control_directory,
)
from buckets.cluster.control_raft import (
    JOURNAL_FILE, SNAPSHOT_FILE, SNAPSHOT_KIND, DurableJournal, align_journal,
)
from buckets.cluster.control_state import ControlMachine
from serverproc import free_port

FAST = {"election_timeout": (0.35, 0.5)}


def config(directory: Path, port: int, **overrides) -> ControlConfig:
    address = f"127.0.0.1:{port}"
    return ControlConfig(address=address, members=(address,), secret="single-node-secret",
                         directory=str(directory), **(FAST | overrides))


async def started(directory: Path, port: int, **overrides) -> ControlPlane:
    plane = ControlPlane(config(directory, port, **overrides))
    await plane.start()
    await plane.wait_leader(timeout=30)
    return plane


async def test_apply_read_and_typed_errors(tmp_path: Path) -> None:
    plane = await started(tmp_path, free_port())
    try:
        assert isinstance(plane._raft._SyncObj__raftLog, DurableJournal)
        created = await plane.apply("create_bucket", name="photos", owner="alice")
        assert created["name"] == "photos"
        assert plane.snapshot.buckets["photos"].owner == "alice"

        with pytest.raises(errors.BucketAlreadyOwnedByYou) as caught:
            await plane.apply("create_bucket", name="photos", owner="alice")
        assert caught.value.status == 409 and caught.value.resource == "photos"
        with pytest.raises(errors.BucketAlreadyExists):
            await plane.apply("create_bucket", name="photos", owner="bob")
        with pytest.raises(errors.InvalidBucketName) as caught:
            await plane.apply("create_bucket", name="UPPER")
        assert caught.value.status == 400
        with pytest.raises(NoSuchUser) as caught:
            await plane.apply("delete_user", access_key="nobody")
        assert caught.value.status == 404
        with pytest.raises(errors.InvalidArgument):
            await plane.apply("no_such_command")
        with pytest.raises(errors.InvalidArgument):
            await plane.apply("set_settings", set={"not plain": {1, 2}})

        state = await plane.read(linearizable=True)
        assert set(state.buckets) == {"photos"}
        status = plane.status()
        assert status.role == "leader" and status.has_quorum and status.leader == status.address
        assert [m.is_self and m.online and m.leader for m in status.members] == [True]
    finally:
        await plane.close()


async def test_restart_from_journal_and_from_snapshot(tmp_path: Path) -> None:
    port = free_port()
    plane = await started(tmp_path, port, compaction_entries=10)
    try:
        for i in range(25):
            await plane.apply("create_bucket", name=f"bucket-{i:02d}")
        await plane.apply("put_user", access_key="alice", secret=b"sealed-secret")
        await plane.apply("put_job", key="job", value={"cursor": 7})
    finally:
        await plane.close()
    assert sorted(os.listdir(tmp_path)) == [JOURNAL_FILE, f"{JOURNAL_FILE}.meta", SNAPSHOT_FILE]

    again = await started(tmp_path, port, compaction_entries=10)
    try:
        state = await again.read(linearizable=True)
        assert len(state.buckets) == 25 and state.users["alice"].secret == b"sealed-secret"
        assert state.jobs["job"].value == {"cursor": 7}
        await again.apply("create_bucket", name="after-restart")
        with pytest.raises(errors.BucketAlreadyOwnedByYou):
            await again.apply("create_bucket", name="bucket-03")
    finally:
        await again.close()


async def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        plane = ControlPlane(config(tmp_path, taken.getsockname()[1], bind_timeout=0.5))
        with pytest.raises(ControlPlaneError, match="cannot bind the control port"):
            await plane.start()
    with pytest.raises(RuntimeError, match="not started"):
        await plane.apply("noop")


def test_control_directory_is_a_system_directory_of_the_disk() -> None:
    assert control_directory("/srv/d1") == "/srv/d1/.buckets.sys/control"


async def test_a_damaged_journal_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    plane = await started(tmp_path, port)
    for i in range(5):
        await plane.apply("create_bucket", name=f"bucket-{i}")
    await plane.close()
    journal = tmp_path / JOURNAL_FILE
    good = journal.read_bytes()
    damaged = {
        "not a journal": b"PYSYNCOBJ" + bytes(200),
        "end offset inside the header": good[:36] + struct.pack("<I", 8) + good[40:],
        "end offset past the file": good[:36] + struct.pack("<I", len(good) + 1) + good[40:],
        "an entry index overwritten": good[:44] + struct.pack("<Q", 99) + good[52:],
    }
    for why, data in damaged.items():
        journal.write_bytes(data)
        plane = ControlPlane(config(tmp_path, port))
        with pytest.raises(ControlPlaneError, match="cannot open the control-plane journal"):
            await plane.start()
            await plane.close()
            pytest.fail(f"{why}: started over a damaged journal")
    journal.write_bytes(good)
    again = await started(tmp_path, port)
    try:
        assert len((await again.read(linearizable=True)).buckets) == 5
    finally:
        await again.close()


async def test_restart_after_a_snapshot_whose_journal_was_not_truncated_yet(tmp_path: Path) -> None:
    port = free_port()
    plane = await started(tmp_path, port)
    for i in range(20):
        await plane.apply("create_bucket", name=f"bucket-{i:02d}")
    await plane.close()

    # The disk as a kill leaves it between pysyncobj renaming a snapshot (taken after the
    # 10th bucket) into place and truncating the journal one tick later.
    journal = FileJournal(str(tmp_path / JOURNAL_FILE))
    entries = [journal[i] for i in range(len(journal))]
    journal._destroy()
    machine = ControlMachine()
    for position, (command, _, _) in enumerate(entries):
        if command[:1] == b"\x00":  # a regular command: (method id, (payload,))
            machine.apply(pickle_loads(command[1:])[1][0])
            if len(machine.snapshot.buckets) == 10:
                break
    document = {"kind": SNAPSHOT_KIND, "machine": machine.dump(),
                "raft": {"last": list(entries[position]), "previous": list(entries[position - 1]),
                         "cluster": [f"127.0.0.1:{port}"]}}
    (tmp_path / SNAPSHOT_FILE).write_bytes(msgpack.packb(document, use_bin_type=True))

    again = await started(tmp_path, port)
    try:
        state = await again.read(linearizable=True)
        assert len(state.buckets) == 20, "entries after the snapshot were dropped"
    finally:
        await again.close()


def test_align_journal_drops_only_what_the_snapshot_covers() -> None:
    journal = MemoryJournal()
    for index in range(1, 11):
        journal.add(b"entry %d" % index, index, 1)
    align_journal(journal, last=(b"entry 6", 6, 1), previous=(b"entry 5", 5, 1))
    assert [journal[i][1] for i in range(len(journal))] == [5, 6, 7, 8, 9, 10]
    align_journal(journal, last=(b"entry 6", 6, 1), previous=(b"entry 5", 5, 1))  # already aligned
    assert len(journal) == 6
    align_journal(journal, last=(b"other", 8, 2), previous=(b"entry 7", 7, 1))  # not this log: untouched
    assert len(journal) == 6
