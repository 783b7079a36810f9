"""Degraded mode: disks unavailable at start or lost while running.

A 4-disk node is 2 data + 2 parity, write quorum 3 (k + 1 because k == m). With one disk
gone, reads and writes continue; with two gone, reads continue and every write fails
with 503 SlowDown saying the write quorum is lost, leaving nothing behind on any disk;
with three gone the node refuses to start (fewer than k disks). A 5-disk node is 3 + 2,
write quorum 3, so there both of its m = 2 parity disks can be gone and writes continue.
A disk is made unavailable the way a dead mount is seen: its path is a regular file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from fault_campaign import BUCKET, EDGE_SIZES, found_bad, lost_keys, online_repairs, wait_quiet, write_objects
from fault_checks import SMALL_SET, failed_writes_leave_nothing, read_all_ok
from fault_disks import current_shards, disk_id, files_of_key, plug_back, unplug
from fault_offline import heal_pass, sweep_orphans, verify
from fault_server import server_bugs


def test_disks_unavailable_at_start(servers, tally) -> None:
    """1 disk gone: reads and writes; 2 gone: reads only, clean 503s; 3 gone: refuses to start."""
    disks = servers.disks(4)
    server = servers.start(disks)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    before = write_objects(client, EDGE_SIZES, prefix="before")
    server.stop()

    # one disk gone: everything works; new objects are written to 3 disks
    out1 = disks[2]
    unplug(out1)
    server = servers.restart(server)
    client = server.client()
    stats = read_all_ok(client, before)
    during = write_objects(client, SMALL_SET, prefix="one-out")
    stats.merge(read_all_ok(client, during))
    tally.note(f"1 of 4 disks gone at start: {len(during.keys)} PUTs acknowledged; reads: {stats.summary()}")
    assert not stats.wrong and not stats.lost and not stats.read_errors, stats.summary()
    server.stop()

    # two disks gone, one of them disk 1, home of the registry: reads continue (from a
    # registry rebuilt on another disk), writes are refused with a clear error
    out2 = disks[0]
    unplug(out2)
    server = servers.restart(server)
    client = server.client()
    moved = server.wait_log(r"registry was missing: rebuilt from disk metadata \((.*)\)", timeout=10)
    tally.note(f"registry disk gone: the registry was rebuilt on another disk ({moved.group(1)})")
    stats = read_all_ok(client, before)
    stats.merge(read_all_ok(client, during))
    assert not stats.wrong and not stats.lost and not stats.read_errors, stats.summary()
    messages = failed_writes_leave_nothing(client, disks, "two-out")
    tally.note(f"2 of 4 disks gone at start: reads {stats.summary()}; writes refused: {messages[1]!r}")
    # a DELETE needs the write quorum too: otherwise the absent disks would keep a majority of
    # its shards and a registry rebuild could bring the key back. Refused; the key stays.
    deleted = before.keys[0]
    with pytest.raises(ClientError) as refused_delete:
        client.delete_object(Bucket=BUCKET, Key=deleted)
    assert refused_delete.value.response["Error"]["Code"] == "SlowDown"
    assert "quorum" in refused_delete.value.response["Error"]["Message"]
    client.head_object(Bucket=BUCKET, Key=deleted)
    server.stop()

    # three disks gone: fewer than k = 2, the node must refuse to start with a clear message
    out3 = disks[3]
    unplug(out3)
    refused = servers.start(disks, expect_failure=True)
    assert refused.proc.returncode != 0
    assert "at least 2 are needed" in refused.log_text(), refused.log_text()[-2000:]
    tally.note("3 of 4 disks gone at start: refused: " + refused.log_text().strip().splitlines()[-1])

    for d in (out1, out2, out3):
        plug_back(d)
    server = servers.restart(server)
    client = server.client()
    client.delete_object(Bucket=BUCKET, Key=deleted)  # every disk is back: the delete goes through
    with pytest.raises(ClientError):
        client.head_object(Bucket=BUCKET, Key=deleted)
    before.ledger.acked_delete(deleted)
    stats = read_all_ok(client, before)
    stats.merge(read_all_ok(client, during))
    wait_quiet(server)  # let the heal worker finish what the reads queued
    assert server.stop() == 0
    tally.objects_written += len(before.keys) + len(during.keys)
    tally.wrong_bytes += len(stats.wrong)
    assert not stats.wrong and not stats.lost and not stats.read_errors, stats.summary()

    # the objects written while disk 3 was gone miss exactly their shard on it: the reads
    # above repaired those whose missing shard holds data, the heal pass the parity ones
    expected = set(during.keys)
    tally.faults_injected += len(expected)
    report = heal_pass(server.disk_paths)
    found = found_bad(server, report)
    tally.faults_detected += len(expected & set(found))
    swept = sweep_orphans(server.disk_paths)
    final = verify(server.disk_paths)
    lost = lost_keys(final, before, during, gone=(deleted,))
    tally.repaired += sum(1 for key in expected & set(found) if (BUCKET, key) not in final.still_bad)
    tally.objects_lost += len(lost)
    tally.note(f"after the disks came back: {len(online_repairs(server))} shards healed on-line after reads, "
               f"{report.shards_bad} by the heal pass; orphans swept {swept}")
    assert set(found) == expected, f"objects found bad {sorted(found)} != written while degraded"
    out1_id = disk_id(out1)
    assert all(_slot_disks(server.disk_paths, key, slots) == [out1_id] for key, slots in found.items()), found
    assert not lost and not final.still_bad and not final.read_errors
    assert (BUCKET, deleted) not in final.digests, "the key deleted while degraded came back"
    assert not files_of_key(disks, BUCKET, deleted), "the deleted key's shards were not swept"
    assert not server_bugs(server.log_text())


def _slot_disks(disk_paths, key: str, slots) -> list[str]:
    """Disk ids holding ``slots`` of an object, from any of its metadata files."""
    shards = current_shards([Path(p) for p in disk_paths], BUCKET, key)
    ids = shards[0].meta["disks"]
    return [ids[s] for s in sorted(slots)]


def test_m_disks_gone_when_k_is_not_m(servers, tally) -> None:
    """5 disks = 3 + 2, write quorum 3: with both parity disks' worth gone, writes continue
    (small objects 2+2 on 4 of the 5 disks, or 3+2 when their window lacks a quorum)."""
    disks = servers.disks(5)
    server = servers.start(disks)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    before = write_objects(client, SMALL_SET, prefix="before")
    server.stop()
    gone = [disks[1], disks[4]]
    for d in gone:
        unplug(d)
    server = servers.restart(server)
    client = server.client()
    during = write_objects(client, SMALL_SET, prefix="two-out")
    stats = read_all_ok(client, before)
    stats.merge(read_all_ok(client, during))
    tally.note(f"2 of 5 disks gone (3+2): {len(during.keys)} PUTs acknowledged, reads {stats.summary()}")
    assert not stats.wrong and not stats.lost and not stats.read_errors, stats.summary()
    server.stop()
    for d in gone:
        plug_back(d)
    report = heal_pass(server.disk_paths)
    final = verify(server.disk_paths)
    tally.objects_written += len(before.keys) + len(during.keys)
    tally.faults_injected += 2 * len(during.keys)
    tally.faults_detected += sum(len(v) for k, v in report.bad.items() if k[1] in during.keys)
    tally.repaired += sum(len(v) for k, v in report.repaired.items() if k[1] in during.keys)
    tally.wrong_bytes += len(stats.wrong)
    lost = lost_keys(final, before, during)
    tally.objects_lost += len(lost)
    assert {k for _, k in report.bad} == set(during.keys)
    # Each write lacks exactly its slots on the two disks that were gone: both for a 3+2
    # write, one for a small object written 2+2 on a window of 4 of the 5 slots that held
    # only one of them (a window holding both had 2 of 4 online, under its quorum of 3: those
    # went to the whole row, 3+2, instead)
    gone_ids = {disk_id(d) for d in gone}
    for (_, key), slots in report.bad.items():
        holders = current_shards([Path(p) for p in server.disk_paths], BUCKET, key)[0].meta["disks"]
        assert sorted(_slot_disks(server.disk_paths, key, slots)) == sorted(d for d in holders if d in gone_ids), key
    assert {len(v) for v in report.bad.values()} <= {1, 2}, report.bad
    assert not lost and not final.still_bad
