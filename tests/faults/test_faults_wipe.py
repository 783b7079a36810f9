"""A disk wiped (or pulled, or moved away) while a load of PUTs and GETs runs.

No request returns wrong data, no acknowledged object is lost, and the server notices
the wiped disk on its own (the disk monitor, every 5 s), re-formats it into its old slot
and refills it: afterwards every object has a verified shard on it again, with no help
from the offline heal pass. Wiping the disk that holds the registry and restarting also
loses nothing: the registry is rebuilt from the disks' metadata files.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from botocore.exceptions import ClientError
from fault_campaign import BUCKET, EDGE_SIZES, found_bad, lost_keys, wait_quiet, write_objects
from fault_checks import SMALL_SET, failed_writes_leave_nothing, read_all_ok
from fault_disks import meta_files, plug_back, unplug, wipe
from fault_ledger import FaultTally
from fault_load import Ledger, LoadMix, LoadStats, judge_digests, start_load, verify_ledger
from fault_offline import heal_pass, verify
from fault_server import ServerProcess, server_bugs

# no deletes: a registry rebuild may bring back a key deleted just before (a documented limit)
MIX = LoadMix(put_new=0.45, overwrite=0.15, get=0.28, range_get=0.12, delete=0.0)
# the disk monitor logs "went offline"; a request that meets the missing root first logs the error
OFFLINE = r"{}\b.*(went offline|disk root is missing)"
HEALED_SLOTS = re.compile(r"healed \S+: rebuilt shards \[([0-9, ]*)\]")


def healed_shards(log: str) -> int:
    return sum(len([s for s in m.split(",") if s.strip()]) for m in HEALED_SLOTS.findall(log))


def judge_load(tally: FaultTally, stats: LoadStats, what: str, *, errors_allowed: bool = False) -> None:
    """File and check what a load or read-back saw. With enough disks for the write quorum,
    not even an error is acceptable, let alone wrong or missing data."""
    tally.wrong_bytes += len(stats.wrong)
    tally.objects_lost += len(stats.lost)
    tally.note(f"{what}: {stats.summary()}")
    assert not stats.wrong, stats.wrong[:5]
    assert not stats.lost, stats.lost[:5]
    if not errors_allowed:
        assert not stats.read_errors and not stats.write_errors, stats.summary()


def wipe_under_load(servers, tally: FaultTally, victim: int, *, before: float, after: float,
                    seed: int) -> tuple[ServerProcess, Ledger, list]:
    disks = servers.disks(4)
    server = servers.start(disks)
    server.client().create_bucket(Bucket=BUCKET)
    ledger = Ledger()
    load = start_load(server.client, BUCKET, ledger, workers=3, mix=MIX, max_ops=1500, seed=seed)
    time.sleep(before)
    mark = len(server.log_text())
    destroyed = wipe(disks[victim], BUCKET)
    tally.faults_injected += 1
    tally.note(f"wiped {disks[victim].name} after {before}s of load: {destroyed} shards destroyed")
    time.sleep(after)
    stats = load.finish()
    judge_load(tally, stats, "load across the wipe")
    refilled = server.wait_log(rf"refill of {re.escape(str(disks[victim]))} (finished: (\d+) shards rebuilt|failed)",
                               timeout=120, start=mark)
    assert refilled.group(1) != "failed", "the refill died:\n" + server.log_text()[mark + refilled.start():][:3000]
    tally.faults_detected += 1
    tally.note(f"server re-formatted and refilled the disk: {refilled.group(2)} shards rebuilt by the refill, "
               f"{healed_shards(server.log_text()[mark:])} shards healed in all since the wipe")
    final_reads = verify_ledger(server.client(), ledger, BUCKET)
    judge_load(tally, final_reads, "every key read back over S3 after the refill")
    tally.objects_written += ledger.acked_objects()
    return server, ledger, disks


@pytest.mark.faults
def test_disk_wiped_under_load_is_refilled(servers, tally) -> None:
    victim = 2
    server, ledger, disks = wipe_under_load(servers, tally, victim=victim, before=5, after=12, seed=5)
    bugs = server_bugs(server.log_text())
    assert server.stop() == 0
    report = heal_pass(server.disk_paths)
    final = verify(server.disk_paths)
    tally.note(f"offline heal pass after the refill: {report.objects} objects, {report.shards_bad} shards bad "
               f"{sorted(report.bad.items())[:5]}; still bad after: {len(final.still_bad)}")
    judge_load(tally, judge_digests(ledger, final.digests, BUCKET), "every key read back offline")
    assert report.shards_bad == 0, f"the server left shards unrepaired: {report.bad}"
    tally.repaired += 1
    assert len(meta_files(disks[victim], BUCKET)) >= report.objects, "the wiped disk is missing shards"
    assert not final.still_bad
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])


@pytest.mark.faults
def test_registry_disk_wiped_under_load_then_restart(servers, tally) -> None:
    """Disk 1 holds the LMDB registry: wipe it, let it refill, restart: nothing is lost."""
    server, ledger, disks = wipe_under_load(servers, tally, victim=0, before=4, after=10, seed=6)
    assert server.stop() == 0
    server = servers.restart(server)
    rebuilt = server.wait_log(r"registry was missing: rebuilt from disk metadata \((.*)\)", timeout=30)
    tally.note(f"restart rebuilt the registry: {rebuilt.group(1)}")
    stats = verify_ledger(server.client(), ledger, BUCKET)
    judge_load(tally, stats, "every key read back over S3 after the registry rebuild")
    assert server.stop() == 0
    report = heal_pass(server.disk_paths)
    final = verify(server.disk_paths)
    tally.note(f"offline heal pass: {report.shards_bad} shards bad {sorted(report.bad.items())[:5]}")
    assert report.shards_bad == 0 and not final.still_bad, report.bad
    tally.repaired += 1


@pytest.mark.faults
def test_disks_lost_while_running(servers, tally) -> None:
    """Pull disks one by one while serving: 1 gone writes go on; 2 gone writes get 503; 3 gone
    reads fail cleanly (never wrong bytes); all back: nothing lost, everything repaired."""
    disks = servers.disks(4)
    server = servers.start(disks)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    before = write_objects(client, EDGE_SIZES, prefix="before")
    unplug(disks[3])
    immediately = write_objects(client, SMALL_SET, prefix="pulled-now")  # monitor has not noticed yet
    server.wait_log(OFFLINE.format("disk4"), timeout=15)
    noticed = write_objects(client, SMALL_SET, prefix="pulled-seen")
    stats = read_all_ok(client, before)
    for w in (immediately, noticed):
        stats.merge(read_all_ok(client, w))
    tally.note(f"1 disk pulled while running: writes and reads go on: {stats.summary()}")
    assert not stats.wrong and not stats.lost and not stats.read_errors
    unplug(disks[1])
    server.wait_log(OFFLINE.format("disk2"), timeout=15)
    messages = failed_writes_leave_nothing(client, disks, "two-pulled")
    stats = read_all_ok(client, before)
    tally.note(f"2 pulled: writes refused ({messages[0]!r}); reads {stats.summary()}")
    assert not stats.wrong and not stats.lost and not stats.read_errors
    unplug(disks[0])
    server.wait_log(OFFLINE.format("disk1"), timeout=15)
    # With 1 of 4 disks left, objects stored on disks can no longer be read: 503. Objects up
    # to the small-copy limit (1 KiB by default, at most 16 KiB here) may still be served from
    # the registry's checksummed copy of their bytes: then they must be exactly the
    # acknowledged bytes, never anything else.
    answers, from_copy = [], []
    for key in before.keys:
        try:
            body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except ClientError as exc:
            answers.append(f"{exc.response['ResponseMetadata']['HTTPStatusCode']} {exc.response['Error']['Code']}")
            continue
        verdict = before.ledger.judge(key, body)
        assert verdict.outcome == "ok", verdict.detail
        assert len(body) <= 16 * 1024, f"{key}: {len(body)} bytes read with 1 of 4 disks"
        from_copy.append(key)
    tally.note(f"3 pulled (registry disk too): reads answer {sorted(set(answers))}; "
               f"{len(from_copy)} small objects served from the registry copy, all exact")
    assert answers and all(e.startswith("503 ") for e in answers), answers
    mark = len(server.log_text())
    for d in (disks[0], disks[1], disks[3]):
        plug_back(d)
    server.wait_log(r"disk \S+disk1 is back online", timeout=15, start=mark)
    stats = read_all_ok(client, before)
    for w in (immediately, noticed):
        stats.merge(read_all_ok(client, w))
    judge_load(tally, stats, "all disks back: every object read over S3")
    wait_quiet(server)
    assert server.stop() == 0
    tally.faults_injected += 3
    report = heal_pass(server.disk_paths)
    found = found_bad(server, report)
    final = verify(server.disk_paths)
    lost = lost_keys(final, before, immediately, noticed)
    tally.objects_lost += len(lost)
    tally.objects_written += len(before.keys) + len(immediately.keys) + len(noticed.keys)
    degraded = set(immediately.keys) | set(noticed.keys)
    tally.note(f"objects written while disk4 was out: {len(degraded)}; found bad on-line or by the heal pass: "
               f"{len(degraded & set(found))}; others found bad: {sorted(set(found) - degraded)}")
    assert degraded <= set(found)
    tally.faults_detected += 3
    assert not lost and not final.still_bad
    tally.repaired += 3


@pytest.mark.faults
def test_disk_moved_away_while_running(servers, tally) -> None:
    """A disk directory renamed away (an unmounted disk) is a missing disk: the server must
    not re-create its path (that would write onto the parent filesystem), writes go on with
    3 of 4 disks, and when the directory is moved back the disk returns and the objects
    written meanwhile are repaired, by reads and the heal pass."""
    disks = servers.disks(4)
    server = servers.start(disks)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    before = write_objects(client, EDGE_SIZES, prefix="before")
    mark = len(server.log_text())
    moved = disks[1].with_name("disk2.moved")
    os.rename(disks[1], moved)
    tally.faults_injected += 1
    during = write_objects(client, EDGE_SIZES, prefix="during")
    time.sleep(6)  # one disk-monitor round
    recreated = disks[1].exists()
    stats = read_all_ok(client, before)
    stats.merge(read_all_ok(client, during))
    judge_load(tally, stats, "reads with the disk moved away")
    assert not recreated, f"the server re-created the moved-away disk: {sorted(os.listdir(disks[1]))}"
    assert len(meta_files(moved, BUCKET)) == len(before.keys), "the moved-away copy was written to"
    log = server.log_text()[mark:]
    tally.note(f"moved away: path re-created {recreated}; 'disk root is missing' logged "
               f"{log.count('disk root is missing')} times, 'went offline' {log.count('went offline')} times")
    tally.faults_detected += 1
    os.rename(moved, disks[1])
    server.wait_log(r"disk \S+disk2 is back online", timeout=15, start=mark)
    stats = read_all_ok(client, before)
    stats.merge(read_all_ok(client, during))
    judge_load(tally, stats, "reads after moving it back")
    wait_quiet(server)
    assert server.stop() == 0
    report = heal_pass(server.disk_paths)
    found = found_bad(server, report)
    final = verify(server.disk_paths)
    lost = lost_keys(final, before, during)
    tally.objects_written += len(before.keys) + len(during.keys)
    tally.objects_lost += len(lost)
    tally.note(f"objects written while away: {len(during.keys)}, found bad on-line or by the heal pass: "
               f"{len(set(during.keys) & set(found))}; others found bad: {sorted(set(found) - set(during.keys))}")
    assert set(found) == set(during.keys)
    assert not lost and not final.still_bad
    tally.repaired += 1
