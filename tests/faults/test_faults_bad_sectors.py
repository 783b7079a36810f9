"""A disk with bad sectors under the single node's registry.

LMDB reads the registry through a map of its file: a page that the disk cannot read is no
error a read returns, but a ``SIGBUS`` that ends the process at the first lookup, listing or
scan that touches it, and at every start after it (each start reads the usage and bucket
tables). Here a disk is a FUSE file system over a directory that answers EIO for chosen byte
ranges of chosen files, through ``read`` and through mapped pages alike (``tests/fusedisk.py``).

- Unreadable pages found at start: the node reads its registry through with ``pread`` before
  it opens it, finds the EIO, leaves the registry on that disk alone, rebuilds it on another
  from the disks' metadata and serves every object.
- Unreadable sectors in a data disk's shard files: reads go around them, the shards are
  rewritten, and the disk stays online.
- Unreadable pages met while serving: the process ends (``SIGBUS``), and the start that a
  supervisor makes next finds them as above.

The scanner's deep cycles read the registry through from its disk before they walk it:
``tests/unit/engine/test_engine_registry_check.py`` (here every page is unreadable, and the
node's other background work maps one in before a cycle starts).

Needs root, ``/dev/fuse``, libfuse 2 and fusepy; skipped (with the reason) where missing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fault_campaign import BUCKET, write_objects
from fault_checks import read_all_ok
from fault_offline import heal_pass, verify
from fault_server import server_bugs
from fusedisk import FuseDisk
from test_faults_eio import mounted_disks, ready, serving_with_objects
from test_faults_wipe import judge_load

from buckets.engine import hedge
from buckets.engine.meta import decode_meta_file
from buckets.storage.format import LOG_DIR, REGISTRY_DIR

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


def test_unreadable_sectors_in_a_data_disks_shards(servers, tally, fuse_disk) -> None:
    """Disk 3's shard files of the larger objects get unreadable sectors (one 64 KiB range in
    each), and so do its log segments (the small objects' records): every GET still returns the right bytes (read around, from the other slots); a shard
    a GET met is rewritten by the heal after it, the rest (parity, which a GET reads only when
    it must) by the deep check (here the offline heal pass); a rewritten shard is a new file, on
    sound sectors. The disk stays online: one bad sector is not a dead disk."""
    bad = fuse_disk(3)
    disks, server, client, before = serving_with_objects(servers)

    def large_shards() -> tuple[list[Path], list[Path]]:
        """Disk 3's shard files over 256 KiB, and those of them that are data slots (a GET reads
        k = 2 data slots first: a parity slot is read only when one of those fails)."""
        found = [p for p in bad.backing.rglob("part.*") if ".buckets.sys" not in p.parts
                 and p.stat().st_size > 256 * 1024]
        metas = {p: decode_meta_file(p.parent.with_name(p.parent.name + ".meta").read_bytes()) for p in found}
        return found, [p for p in found if metas[p]["shard"] < metas[p]["k"]]

    shards, data = large_shards()
    # Where an object's slots go follows its key's partition: disk 3 may hold only parity slots
    # of the edge sizes' objects (1 run in 64 or so). More 1 MiB objects until it holds a data slot.
    for n in range(64):
        if data:
            break
        more = write_objects(client, [1 << 20], prefix=f"more{n:02d}")
        before.keys.extend(more.keys)
        before.ledger.keys.update(more.ledger.keys)
        shards, data = large_shards()
    assert len(shards) >= 4 and data, shards
    for shard in shards:
        bad.bad(str(shard.relative_to(bad.backing)), 128 * 1024, 192 * 1024)
        tally.faults_injected += 1
    # and the small objects' records in the disk's log: all of its segments so far
    segments = sorted((bad.backing / LOG_DIR).glob("*.seg"))
    assert segments
    for segment in segments:
        bad.bad(str(segment.relative_to(bad.backing)), 0, segment.stat().st_size)

    def still_bad() -> list[Path]:
        return [p for p in shards if bad.is_bad(p)]

    def data_healed() -> bool:
        return any(not bad.is_bad(p) for p in data)

    mark = len(server.log_text())
    stats = read_all_ok(client, before)
    judge_load(tally, stats, "every object with disk3's shards unreadable in places")
    deadline = time.monotonic() + 10
    while not data_healed() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not data_healed():
        # No GET met a bad range: on a loaded machine the FUSE disk's reads can lag past the
        # hedge (engine/hedge.py), its slots answered by spares instead, and the disk avoided
        # by the reads after for SLOW_FOR seconds. Once that has passed, read again.
        time.sleep(hedge.SLOW_FOR + 1)
        judge_load(tally, read_all_ok(client, before), "read again, once the disk was no longer avoided")
        deadline = time.monotonic() + 10
        while not data_healed() and time.monotonic() < deadline:
            time.sleep(0.2)
    log = server.log_text()[mark:]
    assert "went offline" not in log, log[-3000:]
    assert server.stop() == 0  # (a heal still running finishes or not: counted after the stop)
    on_read = len(shards) - len(still_bad())
    assert data_healed(), f"none of disk 3's {len(data)} data shards was rewritten after the GETs"
    report = heal_pass([str(d) for d in disks])
    assert report.shards_repaired == report.shards_bad and not report.failed, report
    assert report.shards_bad >= len(shards) - on_read, report
    after = verify([str(d) for d in disks])  # every slot of every object reads well now
    assert not after.still_bad and not after.read_errors and after.objects == len(before.keys), after
    assert still_bad() == []
    tally.faults_detected += len(shards)
    tally.repaired += len(shards)
    server = servers.start(disks, port=server.port)
    stats = read_all_ok(server.client(), before)  # read again, the rewritten shards too
    judge_load(tally, stats, "every object after the rewrite")
    tally.objects_written += len(before.keys)
    tally.note(f"{len(shards)} shard files with a bad 64 KiB range and the log's segments unreadable on disk3: "
               f"every read right, {on_read} shard files rewritten after a GET, {report.shards_repaired} slots "
               f"by the deep check, the disk online")
    bugs = server_bugs(server.log_text())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
    assert server.stop() == 0
