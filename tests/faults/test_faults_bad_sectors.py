"""A disk with bad sectors under the single node's registry.

LMDB reads the registry through a map of its file: a page that the disk cannot read is no
error a read returns, but a ``SIGBUS`` that ends the process at the first lookup, listing or
scan that touches it, and at every start after it (each start reads the usage and bucket
tables). Here a disk is a FUSE file system over a directory that answers EIO for chosen byte
ranges of chosen files, through ``read`` and through mapped pages alike (``tests/fusedisk.py``).

- Unreadable pages found at start: the node reads its registry through with ``pread`` before
  it opens it, finds the EIO, leaves the registry on that disk alone, rebuilds it on another
  from the disks' metadata and serves every object.
- Unreadable pages met while serving: the process ends (``SIGBUS``), and the start that a
  supervisor makes next finds them as above.

The scanner's deep cycles read the registry through from its disk before they walk it:
``tests/unit/engine/test_engine_registry_check.py`` (here every page is unreadable, and the
node's other background work maps one in before a cycle starts).

Needs root, ``/dev/fuse``, libfuse 2 and fusepy; skipped (with the reason) where missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fault_campaign import BUCKET
from fault_checks import read_all_ok
from fault_server import server_bugs
from fusedisk import FuseDisk
from test_faults_eio import mounted_disks, ready, serving_with_objects
from test_faults_wipe import judge_load

from buckets.storage.format import REGISTRY_DIR

DATA_MDB = f"{REGISTRY_DIR}/data.mdb"
META_PAGES = 2 * 4096  # LMDB's two meta pages: the rest is the tables' pages


@pytest.fixture
def fuse_disk(tmp_path: Path, servers):
    """``fuse_disk(n)``: disk n of ``servers.disks(4)`` made a FUSE disk over ``backing<n>``."""
    with mounted_disks(servers, lambda n: FuseDisk(tmp_path / f"backing{n}", tmp_path / "disks" / f"disk{n}")) as make:
        yield make


def check_moved_and_serving(server, tally, before, label: str) -> None:
    unreadable = server.wait_log(r"the registry on \S+ cannot be read \(([^)]*)\)", timeout=30)
    moved = server.wait_log(r"registry disk \S+ is failed: rebuilding the registry on (\S+)", timeout=30)
    server.wait_log(r"registry was missing: rebuilt from disk metadata", timeout=60)
    assert "disk1" not in moved.group(1)
    tally.faults_detected += 1
    tally.repaired += 1
    client = server.client()
    assert ready(server) == 200
    stats = read_all_ok(client, before)
    judge_load(tally, stats, f"every object after {label}")
    client.put_object(Bucket=BUCKET, Key="after", Body=b"writable")
    assert client.get_object(Bucket=BUCKET, Key="after")["Body"].read() == b"writable"
    tally.objects_written += len(before.keys) + 1
    tally.note(f"{label}: {unreadable.group(1)}; registry moved to {moved.group(1)}, "
               f"{len(before.keys)} objects read back")
    bugs = server_bugs(server.log_text())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])


@pytest.mark.parametrize("stop", ["kill", "clean"])
def test_unreadable_registry_pages_found_at_start(servers, tally, fuse_disk, stop) -> None:
    """The node stopped (``kill -9`` or cleanly), then the pages of its registry's tables became
    unreadable: the start must not touch them through the map (SIGBUS: the node would end at
    every start), but find them, move the registry and serve."""
    bad = fuse_disk(1)
    disks, server, _, before = serving_with_objects(servers)
    if stop == "kill":
        server.kill()
    else:
        assert server.stop() == 0
    size = os.path.getsize(bad.path / DATA_MDB)
    bad.bad(DATA_MDB, META_PAGES, size)
    tally.faults_injected += 1
    server = servers.start(disks, port=server.port)
    check_moved_and_serving(server, tally, before, f"a start with the registry's pages unreadable ({stop})")
    assert server.stop() == 0


def test_unreadable_registry_pages_met_while_serving(servers, tally, fuse_disk) -> None:
    """The pages of the registry's tables become unreadable while the node serves: a lookup
    that maps one in ends the process (SIGBUS: there is no error to return from a mapped
    page). The start a supervisor makes next finds them, moves the registry and serves."""
    bad = fuse_disk(1)
    disks, server, _, before = serving_with_objects(servers)
    assert server.stop() == 0
    server = servers.start(disks, port=server.port)  # its map cold: nothing looked up yet
    size = os.path.getsize(bad.path / DATA_MDB)
    bad.bad(DATA_MDB, META_PAGES, size)
    tally.faults_injected += 1
    client = server.client()
    for key in before.keys:
        try:
            client.head_object(Bucket=BUCKET, Key=key)
        except Exception:  # noqa: BLE001 - the connection the process's end cut
            break
    server.proc.wait(timeout=30)
    assert server.proc.returncode == -7, (server.proc.returncode, server.log_text()[-2000:])
    assert "Fatal Python error: Bus error" in server.log_text()  # not an end without a line
    tally.note("a lookup mapped an unreadable page in: the process ended with SIGBUS")
    server = servers.restart(server)
    server.wait_log(r"was not closed by the last process to open it \(pid \d+", timeout=30)
    check_moved_and_serving(server, tally, before, "a restart after a SIGBUS")
    assert server.stop() == 0
