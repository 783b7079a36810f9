"""Disks that fail with I/O errors while the node serves.

Here a disk is a real ext4 file system on a loop device, and it fails under load the way a
dead disk does: ``EXT4_IOC_SHUTDOWN`` makes every read and write on it fail with EIO from then
on (xfstests' "godown"); open files, a log segment being appended to, the registry's LMDB map,
fail as well (renaming a disk's directory away, as the other fault tests do, leaves those
working).

- A data disk: the node marks it offline and goes on degraded; every acknowledged object
  reads back exactly, and no request fails.
- Disk 1, home of the single node's LMDB registry: the node must notice at its next registry
  commit, answer that request 503 (never a 500 or a traceback), restart in place with its port
  kept open, rebuild the registry on another disk from the disks' metadata, and serve again.

Needs root, a free loop device and ``mkfs.ext4``; skipped (with the reason) where missing.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from botocore.config import Config
from fault_campaign import BUCKET, EDGE_SIZES, write_objects
from fault_checks import read_all_ok
from fault_load import Ledger, start_load, verify_ledger
from fault_offline import heal_pass
from fault_server import server_bugs
from loopdisk import LoopDisk
from test_faults_wipe import judge_load


@contextlib.contextmanager
def mounted_disks(servers, mount):
    """``make(n)`` mounts disk n with ``mount(n)``; at the end every server is stopped before
    the disks go (thawed first: a process stuck in a frozen file system cannot even be killed)."""
    made: list = []

    def make(n: int):
        made.append(mount(n))
        return made[-1]

    try:
        yield make
    finally:
        for disk in made:
            if hasattr(disk, "thaw"):
                disk.thaw()
        try:
            servers.cleanup()  # no server may hold the file system when it goes
        finally:
            for disk in made:
                disk.close()


@pytest.fixture
def loop_disk(tmp_path: Path, servers):
    """``loop_disk(n)``: disk n of ``servers.disks(4)`` made a loop-mounted ext4 file system."""
    with mounted_disks(servers, lambda n: LoopDisk(tmp_path / f"disk{n}.img", tmp_path / "disks" / f"disk{n}")) as make:
        yield make


def ready(server) -> int:
    try:
        with urllib.request.urlopen(f"{server.endpoint}/health/ready", timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def serving_with_objects(servers, **kwargs):
    """A node on four disks serving a bucket of objects of every edge size (``kwargs``: for
    ``servers.start``): returns the disks, the server, its client and what was written."""
    disks = servers.disks(4)
    server = servers.start(disks, **kwargs)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    return disks, server, client, write_objects(client, EDGE_SIZES, prefix="before")


def written_and_stopped(servers, **kwargs):
    """The same, the node stopped: returns the disks, its port and what was written."""
    disks, server, _, before = serving_with_objects(servers, **kwargs)
    assert server.stop() == 0
    return disks, server.port, before


def failing_under_load(servers, tally, disk, slot: int, failure: str, seed: int):
    """A node whose disk ``slot`` (0-based) is ``disk``, under load for 3 s, then that disk
    failing (``eio``: shut down; ``read-only``: ext4 turned read-only). Returns the server,
    its client, the load's ledger, the load and the log mark at the failure."""
    disks = servers.disks(4)
    assert disks[slot] == disk.path
    server = servers.start(disks)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    ledger = Ledger()
    load = start_load(server.client, BUCKET, ledger, workers=3, max_ops=900, seed=seed)
    time.sleep(3)
    mark = len(server.log_text())
    disk.fail() if failure == "eio" else disk.go_read_only()
    tally.faults_injected += 1
    return server, client, ledger, load, mark


@pytest.mark.parametrize("failure", ["eio", "read-only"])
def test_registry_disk_failing_under_load_moves_the_registry(servers, tally, loop_disk, failure) -> None:
    server, client, ledger, load, mark = failing_under_load(servers, tally, loop_disk(1), 0, failure, seed=45)
    pid = server.proc.pid
    moved = server.wait_log(r"registry disk \S+ is failed: rebuilding the registry on (\S+)", timeout=60, start=mark)
    rebuilt = server.wait_log(r"registry was missing: rebuilt from disk metadata \((.*)\)", timeout=60, start=mark)
    tally.faults_detected += 1
    tally.note(f"disk1 failed ({failure}) under load: the registry moved to {moved.group(1)}, "
               f"rebuilt: {rebuilt.group(1)}")
    assert server.alive() and server.proc.pid == pid, "the node must restart in place, not exit"
    time.sleep(3)
    stats = load.finish()
    # Requests in flight when the disk failed may answer 503 (their outcome unknown: the ledger
    # accepts either); boto3's retries carry most of them over the restart.
    judge_load(tally, stats, "load across the registry disk's failure", errors_allowed=True)
    assert set(stats.write_errors) <= {"PUT ServiceUnavailable", "DELETE ServiceUnavailable",
                                       "PUT SlowDown", "DELETE SlowDown"}, stats.summary()
    assert ready(server) == 200
    after = verify_ledger(client, ledger, BUCKET)
    judge_load(tally, after, "every key read back over S3 after the registry moved")
    client.put_object(Bucket=BUCKET, Key="after-the-move", Body=b"still writable")
    assert client.get_object(Bucket=BUCKET, Key="after-the-move")["Body"].read() == b"still writable"
    tally.objects_written += ledger.acked_objects() + 1
    tally.repaired += 1
    bugs = server_bugs(server.log_text())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
    assert server.stop() == 0


@pytest.mark.parametrize("failure", ["eio", "read-only"])
def test_a_data_disk_failing_under_load(servers, tally, loop_disk, failure) -> None:
    server, client, ledger, load, mark = failing_under_load(servers, tally, loop_disk(3), 2, failure, seed=46)
    server.wait_log(r"disk \S+disk3 went offline", timeout=30, start=mark)
    tally.faults_detected += 1
    time.sleep(4)
    stats = load.finish()
    judge_load(tally, stats, "load across a data disk's failure")
    after = verify_ledger(client, ledger, BUCKET)
    judge_load(tally, after, "every key read back over S3 with the disk failed")
    tally.objects_written += ledger.acked_objects()
    bugs = server_bugs(server.log_text())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
    assert server.stop() == 0


def stopped_whole(server, tally) -> None:
    """The log shows no bug, the node stops cleanly, and the offline heal pass finds every
    shard in place."""
    bugs = server_bugs(server.log_text())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
    assert server.stop() == 0
    report = heal_pass(server.disk_paths)
    tally.note(f"offline heal pass: {report.objects} objects, {report.shards_bad} shards bad")
    assert report.shards_bad == 0, report.bad


def refilled_and_whole(server, tally, disk: str, mark: int, written: list, what: str) -> None:
    """``disk`` is refilled (the log from ``mark``), every object of ``written`` reads back
    exactly, and then ``stopped_whole``."""
    refilled = server.wait_log(rf"refill of \S+{disk} (finished: (\d+) shards rebuilt|failed)", timeout=120, start=mark)
    assert refilled.group(1) != "failed", server.log_text()[mark:][-3000:]
    tally.note(f"{what}: refilled, {refilled.group(2)} shards rebuilt")
    stats = read_all_ok(server.client(), written[0])
    for w in written[1:]:
        stats.merge(read_all_ok(server.client(), w))
    judge_load(tally, stats, f"every object read back ({what})")
    stopped_whole(server, tally)
    tally.objects_written += sum(len(w.keys) for w in written)
    tally.repaired += 1


def test_a_failed_data_disk_replaced_while_the_node_runs(servers, tally, loop_disk) -> None:
    """The operator's side: the dead disk is swapped for a new, empty one at the same mount
    point with the node running; the disk monitor formats it into its slot and refills it,
    and the offline check afterwards finds every shard in place."""
    data_disk = loop_disk(2)
    disks, server, client, before = serving_with_objects(servers)
    mark = len(server.log_text())
    data_disk.fail()
    tally.faults_injected += 1
    during = write_objects(client, EDGE_SIZES, prefix="during")  # the first of them meet the EIO
    server.wait_log(r"disk \S+disk2 went offline", timeout=30, start=mark)
    tally.faults_detected += 1
    data_disk.replace()
    refilled_and_whole(server, tally, "disk2", mark, [before, during],
                       "disk2 failed (EIO) and was replaced by an empty one while the node ran")


def test_a_hung_disk_is_taken_offline_and_the_node_keeps_answering(servers, tally, loop_disk) -> None:
    """A disk whose writes hang (its file system frozen, as a snapshot tool or a device stuck
    retrying does). Before, the event loop itself wrote small objects' records and blocked in
    that write: every request of the node, reads of other disks included, timed out until the
    disk thawed. Now no disk call runs on the loop, and a call that does not finish within
    ``--disk-timeout`` takes the disk offline: writes go on degraded after at most that long,
    and once thawed the disk is brought back and refilled."""
    data_disk = loop_disk(3)
    disks, server, client, before = serving_with_objects(servers, extra_env={"BUCKETS_DISK_TIMEOUT": "3"})
    mark = len(server.log_text())
    data_disk.freeze()
    tally.faults_injected += 1
    started = time.monotonic()
    # the first write after the freeze streams a shard file to it: its piece write hangs
    during = write_objects(client, list(reversed(EDGE_SIZES)), prefix="during")
    took = time.monotonic() - started
    hung = server.wait_log(r"disk \S+disk3 went offline: .*did not finish within 3s", timeout=30, start=mark)
    tally.faults_detected += 1
    stats = read_all_ok(client, before)
    stats.merge(read_all_ok(client, during))
    judge_load(tally, stats, "while the disk hung")
    tally.note(f"disk3 frozen: {len(during.keys)} PUTs took {took:.1f}s in all; {hung.group(0)[:120]}")
    assert took < 20, f"the writes waited {took:.0f}s on the hung disk (timeout 3s)"
    data_disk.thaw()
    server.wait_log(r"disk \S+disk3 is back online", timeout=60, start=mark)
    refilled_and_whole(server, tally, "disk3", mark, [before, during], "thawed: back online")


def test_a_hung_registry_disk_makes_the_node_not_ready_until_it_answers(servers, tally, loop_disk) -> None:
    """Disk 1, the registry's home, hangs (``fsfreeze``, as snapshot tools freeze a file system
    for seconds). Reads go on, from a cold cache (every lookup in LMDB) and while a write waits:
    LMDB's reader table, which every read transaction writes, is in memory, not on that disk
    (before, the first GET waited in a page fault of the event loop and the whole node stopped,
    health checks included, until the thaw). A commit cannot be abandoned (it may still land),
    so the writes wait for it, but the node says so (an error in the log, ``/health/ready``
    503); once the disk answers, the write waiting completes and the node is ready again."""
    registry_disk = loop_disk(1)
    disks, port, before = written_and_stopped(servers, extra_env={"BUCKETS_DISK_TIMEOUT": "2"})
    server = servers.start(disks, port=port, extra_env={"BUCKETS_DISK_TIMEOUT": "2"})
    client = server.client()
    assert ready(server) == 200
    mark = len(server.log_text())
    registry_disk.freeze()
    tally.faults_injected += 1
    client = server.client(Config(read_timeout=10, retries={"total_max_attempts": 1}))  # (a read waiting fails)
    judge_load(tally, read_all_ok(client, before), "reads from a cold cache while the registry's disk is frozen")
    listed = client.list_objects_v2(Bucket=BUCKET)
    assert sorted(o["Key"] for o in listed.get("Contents", [])) == sorted(before.keys)
    assert ready(server) == 200  # (nothing waits yet)
    waiting: dict[str, object] = {}

    def put() -> None:
        try:
            waiting["etag"] = server.client().put_object(Bucket=BUCKET, Key="while-hung", Body=b"waits")["ETag"]
        except Exception as exc:  # noqa: BLE001 - checked below
            waiting["error"] = exc

    writer = threading.Thread(target=put)
    writer.start()
    server.wait_log(r"a commit has not finished in 2s: its disk hangs", timeout=60, start=mark)
    tally.faults_detected += 1
    assert ready(server) == 503
    judge_load(tally, read_all_ok(client, before), "reads while a commit waits for the frozen disk")
    registry_disk.thaw()
    writer.join(90)
    assert not writer.is_alive() and "etag" in waiting, waiting
    server.wait_log(r"the commit that hung finished after", timeout=30, start=mark)
    assert client.get_object(Bucket=BUCKET, Key="while-hung")["Body"].read() == b"waits"
    judge_load(tally, read_all_ok(client, before), "reads after the registry's disk answered again")
    deadline = time.monotonic() + 30
    while ready(server) != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready(server) == 200
    tally.note("registry disk frozen: reads served, not ready while a write waited; after the thaw it completed")
    tally.repaired += 1
    tally.objects_written += len(before.keys) + 1
    bugs = server_bugs(server.log_text())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
    assert server.stop() == 0


def test_a_snapshot_freezes_every_disk_under_load(servers, tally, loop_disk) -> None:
    """A snapshot of the whole node: all four disks frozen (``fsfreeze``) for 8 s under a load of
    PUTs, GETs and DELETEs. Reads of what was written before go on throughout (from a cold
    cache: every lookup in the registry, whose disk is frozen too); writes past ``--disk-timeout``
    wait for the registry's commit or answer 503 (disks offline, no quorum), the node says it is
    not ready; after the thaw every disk that went offline comes back and is refilled, every
    acknowledged write reads back, and the offline heal pass finds every shard in place."""
    frozen = [loop_disk(n) for n in (1, 2, 3, 4)]
    disks, port, before = written_and_stopped(servers, extra_env={"BUCKETS_DISK_TIMEOUT": "2"})
    server = servers.start(disks, port=port, extra_env={"BUCKETS_DISK_TIMEOUT": "2"})
    client = server.client()
    ledger = Ledger()
    load = start_load(server.client, BUCKET, ledger, workers=3, max_ops=600, seed=48)  # (within 256 MB disks)
    time.sleep(3)
    mark = len(server.log_text())
    for disk in frozen:
        disk.freeze()
    tally.faults_injected += 1
    thawed_at = time.monotonic() + 8
    reader = server.client(Config(read_timeout=10, retries={"total_max_attempts": 1}))  # (a read waiting fails)
    judge_load(tally, read_all_ok(reader, before), "reads from a cold cache while every disk is frozen")
    server.wait_log(r"did not finish within 2s: the disk h", timeout=30, start=mark)
    tally.faults_detected += 1
    deadline = time.monotonic() + 20  # (until the writes waiting on the other disks time out too)
    while ready(server) != 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready(server) == 503
    judge_load(tally, read_all_ok(reader, before), "reads with every disk frozen, writes waiting or refused")
    time.sleep(max(0.0, thawed_at - time.monotonic()))
    for disk in frozen:
        disk.thaw()
    time.sleep(2)
    stats = load.finish()
    # Each disk a write timed out on is offline until the thaw, then refilled. (Not always all
    # four: with the registry's commit hung, the writes behind it may never reach the others.)
    went = sorted(set(re.findall(r"disk \S+disk(\d) went offline", server.log_text()[mark:])))
    assert went, "no disk went offline"
    for n in went:
        server.wait_log(rf"refill of \S+disk{n} finished", timeout=90, start=mark)
    judge_load(tally, stats, "the load across the snapshot", errors_allowed=True)
    assert {e.split(" ", 1)[1] for e in stats.write_errors} <= {"503 SlowDown", "SlowDown", "ServiceUnavailable"}, \
        stats.summary()
    assert ready(server) == 200
    judge_load(tally, verify_ledger(client, ledger, BUCKET), "every acknowledged write after the thaw")
    judge_load(tally, read_all_ok(client, before), "what was written before, after the thaw")
    tally.note(f"every disk frozen for 8s under load: {stats.summary()}")
    stopped_whole(server, tally)
    tally.objects_written += ledger.acked_objects() + len(before.keys)
    tally.repaired += 1


@pytest.mark.parametrize("slot", [1, 3])
def test_a_node_restarts_with_a_dead_disk(servers, tally, loop_disk, slot) -> None:
    """The node is stopped, a disk dies meanwhile (every I/O on it fails with EIO, as a disk that
    did not survive a reboot), and the node starts again: it must come up degraded and serve
    every object. Disk 1 holds the registry: the registry is rebuilt on another disk."""
    dead = loop_disk(slot)
    disks, port, before = written_and_stopped(servers)
    dead.fail()
    tally.faults_injected += 1
    server = servers.start(disks, port=port)
    client = server.client()
    assert ready(server) == 200
    tally.faults_detected += 1
    stats = read_all_ok(client, before)
    judge_load(tally, stats, f"every object after a restart with disk{slot} dead")
    client.put_object(Bucket=BUCKET, Key="after-restart", Body=b"writable")
    assert client.get_object(Bucket=BUCKET, Key="after-restart")["Body"].read() == b"writable"
    tally.note(f"disk{slot} dead across a restart: {len(before.keys)} objects read back, writable")
    tally.objects_written += len(before.keys) + 1
    bugs = server_bugs(server.log_text())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
    assert server.stop() == 0


@pytest.mark.parametrize("slot", [1, 3])
def test_a_node_starts_with_a_hung_disk(servers, tally, loop_disk, slot) -> None:
    """A disk whose writes hang (frozen) when the node starts: the node must not wait for it
    forever. It starts within about ``--disk-timeout`` with that disk offline (disk 1: the
    registry on another disk) and serves every object; once thawed the disk comes back."""
    hung = loop_disk(slot)
    disks, port, before = written_and_stopped(servers)
    hung.freeze()
    tally.faults_injected += 1
    started = time.monotonic()
    server = servers.start(disks, port=port, extra_env={"BUCKETS_DISK_TIMEOUT": "3"})
    took = time.monotonic() - started
    client = server.client()
    assert ready(server) == 200
    tally.faults_detected += 1
    stats = read_all_ok(client, before)
    client.put_object(Bucket=BUCKET, Key="after-start", Body=b"writable")
    assert client.get_object(Bucket=BUCKET, Key="after-start")["Body"].read() == b"writable"
    judge_load(tally, stats, f"every object after a start with disk{slot} hung")
    tally.note(f"disk{slot} frozen at start: ready after {took:.1f}s, {len(before.keys)} objects read back")
    mark = len(server.log_text())
    hung.thaw()
    server.wait_log(rf"disk \S+disk{slot} is back online", timeout=60, start=mark)
    tally.repaired += 1
    tally.objects_written += len(before.keys) + 1
    bugs = server_bugs(server.log_text())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
    assert server.stop() == 0


def test_a_disk_that_did_not_mount_is_not_formatted_on_the_system_disk(servers, tally, loop_disk) -> None:
    """Each of the node's four disks is its own file system; one did not mount at the next
    start (its mount point is an empty directory on the parent's file system). Formatting and
    refilling it there would fill the system disk: it must stay offline, saying why, while the
    node serves degraded, and come back once its file system is mounted again."""
    loops = [loop_disk(n) for n in (1, 2, 3, 4)]
    disks, port, before = written_and_stopped(servers)
    loops[2].unmount()
    tally.faults_injected += 1
    server = servers.start(disks, port=port)
    client = server.client()
    said = server.wait_log(r"disk \S+disk3 went offline: \S+ looks unmounted", timeout=30)
    tally.faults_detected += 1
    assert ready(server) == 200
    judge_load(tally, read_all_ok(client, before), "every object with disk3 unmounted")
    client.put_object(Bucket=BUCKET, Key="while-unmounted", Body=b"degraded")
    time.sleep(2)  # a disk monitor round or two: still not formatted there
    assert not (loops[2].path / ".buckets.sys" / "format.json").exists()
    assert sorted(p.name for p in loops[2].path.iterdir()) in ([], [".buckets.sys"])
    mark = len(server.log_text())
    loops[2].mount()
    server.wait_log(r"disk \S+disk3 is back online", timeout=60, start=mark)
    tally.note(f"disk3 not mounted at start: {said.group(0)[:100]}...; mounted again: back online")
    tally.repaired += 1
    tally.objects_written += len(before.keys) + 1
    assert client.get_object(Bucket=BUCKET, Key="while-unmounted")["Body"].read() == b"degraded"
    # the same while the node runs: the file system detached (lazily: the node holds files on it)
    mark = len(server.log_text())
    subprocess.run(["umount", "-l", str(loops[2].path)], check=True)
    server.wait_log(r"disk \S+disk3 went offline: \S+ looks unmounted", timeout=60, start=mark)
    time.sleep(2)
    assert not (loops[2].path / ".buckets.sys" / "format.json").exists()
    client.put_object(Bucket=BUCKET, Key="after-detach", Body=b"degraded again")
    assert client.get_object(Bucket=BUCKET, Key="after-detach")["Body"].read() == b"degraded again"
    bugs = server_bugs(server.log_text())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
    assert server.stop() == 0


def test_a_node_whose_disks_did_not_mount_does_not_start_empty(servers, tally, loop_disk, tmp_path) -> None:
    """None of the node's file systems mounted at boot: its disk paths are bare, empty mount
    points. Taken for a new deployment, the node would serve an empty store and write to the
    system disk; the data would be back, hidden, once the disks mount. /etc/fstab (here a file
    of the test's, ``BUCKETS_FSTAB``) says those paths are mount points: the start is refused,
    nothing is written there, and once they are mounted every object is back."""
    loops = [loop_disk(n) for n in (1, 2, 3, 4)]
    fstab = tmp_path / "fstab"
    fstab.write_text("".join(f"{d.device} {d.path} ext4 defaults,nofail 0 2\n" for d in loops))
    env = {"BUCKETS_FSTAB": str(fstab)}
    disks, port, before = written_and_stopped(servers, extra_env=env)
    for d in loops:
        d.unmount()
    tally.faults_injected += 1
    refused = servers.start(disks, port=port, extra_env=env, expect_failure=True)
    assert refused.proc.wait(timeout=30) != 0
    said = refused.log_text()
    assert "is not mounted: /etc/fstab mounts a file system at" in said and "Traceback" not in said, said[-2000:]
    for d in loops:
        assert not (d.path / ".buckets.sys" / "format.json").exists()
    tally.faults_detected += 1
    for d in loops:
        d.mount()
    server = servers.start(disks, port=port, extra_env=env)
    judge_load(tally, read_all_ok(server.client(), before), "every object once the disks are mounted again")
    tally.note(f"no disk mounted at start: refused ({said.strip().splitlines()[-1][:120]}...)")
    tally.repaired += 1
    tally.objects_written += len(before.keys)
    assert server.stop() == 0


def test_a_disk_replaced_while_the_node_was_stopped_is_formatted_and_refilled(servers, tally, loop_disk) -> None:
    """The other side of the unmounted-disk check: each disk its own file system, one swapped
    for a new, empty one (mounted) while the node was stopped. That one is a mount point, so it
    is a replacement: formatted into its slot at start and refilled."""
    loops = [loop_disk(n) for n in (1, 2, 3, 4)]
    disks, port, before = written_and_stopped(servers)
    loops[2].fail()
    loops[2].replace()
    tally.faults_injected += 1
    server = servers.start(disks, port=port)
    server.wait_log(r"disk \S+disk3 was empty: formatted into slot 2", timeout=30)
    tally.faults_detected += 1
    refilled_and_whole(server, tally, "disk3", 0, [before], "disk3 replaced while the node was stopped")
