"""The record log (``--small-log on``) under faults, against a real server (issue 15):

- bit rot inside records and records lost (their bytes overwritten, as a bad sector does), on
  1..m slots of random small objects: every read over S3 returns the right bytes, the reads'
  heals and the offline deep pass find exactly the damaged slots, and rewrite each as a new
  record (the entry then points at it);
- a torn tail at the end of every disk's log (a power cut mid-append): ignored at the start;
- ``kill -9`` rounds during a mixed load of small and large PUTs, overwrites and deletes, sync
  on: every acknowledged write and delete holds, all shards verify;
- the registry deleted: the rebuild from the logs gives back exactly the acknowledged objects.

Offline checks open the store as the other fault tests do (the log needs no setting to be
read: an entry that names records is read from them).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from pathlib import Path

import pytest
from fault_campaign import BUCKET, seed_from_env
from fault_disks import staging_entries
from fault_ledger import FaultTally
from fault_load import Ledger, LoadMix, LoadStats, content, judge_digests, start_load, verify_ledger
from fault_offline import heal_pass, verify
from fault_server import server_bugs

from buckets import Store
from buckets.engine import smalllog
from buckets.storage import records as rlog
from buckets.storage.format import LOG_DIR, REGISTRY_DIR

LOG = {"BUCKETS_SMALL_LOG": "on"}
MIX = LoadMix(put_new=0.45, overwrite=0.20, get=0.15, range_get=0.10, delete=0.10)


def _entries(disks: list[str]) -> dict[str, dict]:
    async def read() -> dict[str, dict]:
        store = await Store.open(disks, background=False, sync=False)
        try:
            return {key: entry for bucket, key, entry in store.registry.walk_objects() if bucket == BUCKET}
        finally:
            await store.close()

    return asyncio.run(read())


def _disk_roots(disks: list[str]) -> dict[str, str]:
    """disk id -> root, from each disk's format file."""
    import json

    out = {}
    for root in disks:
        with open(os.path.join(root, ".buckets.sys", "format.json")) as f:
            out[json.load(f)["disk_id"]] = root
    return out


def _segment(root: str, loc: list) -> str:
    return os.path.join(root, LOG_DIR, rlog.segment_name(loc[0]))


def _damage(root: str, loc: list, kind: str, rnd: random.Random) -> None:
    with open(_segment(root, loc), "r+b") as f:
        if kind == "flip":  # one bit of the payload (the record's checksum must catch it)
            pos = loc[1] + rlog.HEADER_SIZE + rnd.randrange(loc[2] - rlog.HEADER_SIZE)
            f.seek(pos)
            byte = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([byte ^ (1 << rnd.randrange(8))]))
        else:  # "lose": the record's bytes gone (zeroed), as an unreadable sector comes back
            f.seek(loc[1])
            f.write(b"\0" * loc[2])


# 10 disks: objects up to 16 KiB are 4+4 on a window of 8 slots (--small-set-limit), larger 6+4
@pytest.mark.parametrize("n_disks", [4, 10])
def test_records_damaged_or_lost_are_read_around_and_rewritten(servers, tally: FaultTally, n_disks: int) -> None:
    seed = seed_from_env(1515)
    rnd = random.Random(seed)
    tally.note(f"seed {seed} (BUCKETS_FAULT_SEED reproduces it), {n_disks} disks")
    disks = servers.disks(n_disks)
    server = servers.start(disks, extra_env=LOG)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    bodies = {}
    for i in range(60):
        key = f"small/{i:03d}"
        bodies[key] = content(key, 1, rnd.randrange(1, 120 * 1024))
        client.put_object(Bucket=BUCKET, Key=key, Body=bodies[key])
    for i in range(0, 60, 6):  # overwrites: the old records become garbage in the same segments
        key = f"small/{i:03d}"
        bodies[key] = content(key, 2, rnd.randrange(1, 60 * 1024))
        client.put_object(Bucket=BUCKET, Key=key, Body=bodies[key])
    tally.objects_written += 70
    assert server.stop() == 0
    paths = [str(d) for d in disks]
    entries = _entries(paths)
    roots = _disk_roots(paths)
    assert all(smalllog.uses_log(e) for e in entries.values()), "small objects were not written as records"
    if n_disks == 10:
        layouts = {(e["k"], e["m"]) for e in entries.values()}
        assert layouts == {(4, 4), (6, 4)}, layouts
    damaged: dict[str, list[int]] = {}
    for key in rnd.sample(sorted(entries), 24):
        entry = entries[key]
        slots = rnd.sample(range(entry["k"] + entry["m"]), rnd.randint(1, entry["m"]))
        for slot in slots:
            _damage(roots[entry["disks"][slot]], entry["lg"][slot], rnd.choice(("flip", "lose")), rnd)
        damaged[key] = sorted(slots)
    tally.faults_injected += sum(len(s) for s in damaged.values())

    server = servers.restart(server, extra_env=LOG)
    client = server.client()
    for key, body in sorted(bodies.items()):  # every read right, damaged or not (ranged too)
        got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert got == body, f"{key}: wrong bytes"
        if len(body) > 10:
            part = client.get_object(Bucket=BUCKET, Key=key, Range="bytes=3-9")["Body"].read()
            assert part == body[3:10]
    time.sleep(1.0)  # the heal worker takes what the reads reported
    bugs = server_bugs(server.log_text())
    assert server.stop() == 0
    report = heal_pass(paths)  # whatever the online heal did not get to
    after = _entries(paths)
    for key, slots in damaged.items():
        for slot in slots:
            assert after[key]["lg"][slot] != entries[key]["lg"][slot], f"{key} slot {slot} was not rewritten"
        tally.faults_detected += len(slots)
    for key in set(entries) - set(damaged):
        assert after[key]["lg"] == entries[key]["lg"], f"{key}: a slot nobody damaged was rewritten"
    final = verify(paths)
    assert not final.still_bad and not final.read_errors
    tally.repaired += sum(len(s) for s in damaged.values())
    tally.note(f"{len(damaged)} objects damaged on {tally.faults_injected} slots; offline pass found "
               f"{report.shards_bad} still bad after the reads' heals; all {final.objects} objects verify")
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])


def test_a_torn_log_tail_and_a_lost_registry(servers, tally: FaultTally) -> None:
    disks = servers.disks(4)
    server = servers.start(disks, extra_env=LOG)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    live = {}
    for i in range(40):
        key = f"k{i:02d}"
        live[key] = content(key, 1, 100 + i * 97)
        client.put_object(Bucket=BUCKET, Key=key, Body=live[key])
    for i in range(0, 40, 4):
        client.delete_object(Bucket=BUCKET, Key=f"k{i:02d}")
        del live[f"k{i:02d}"]
    for i in range(1, 40, 4):
        key = f"k{i:02d}"
        live[key] = content(key, 2, 5000 + i)
        client.put_object(Bucket=BUCKET, Key=key, Body=live[key])
    tally.objects_written += 50
    assert server.stop() == 0
    paths = [str(d) for d in disks]
    for root in paths:  # a power cut mid-append on every disk: half a record at each log's end
        seg = max(Path(root, LOG_DIR).glob("*.seg"))
        with open(seg, "ab") as f:
            f.write(rlog.frame(b"\x81\xa4kill\xc3" * 40)[:37])
        shutil.rmtree(os.path.join(root, REGISTRY_DIR), ignore_errors=True)
    tally.faults_injected += 5
    server = servers.restart(server, extra_env=LOG)
    assert "rebuilt from disk metadata" in server.log_text()
    client = server.client()
    listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))
    assert listed == sorted(live), "the rebuild did not give back exactly the acknowledged objects"
    for key, body in live.items():
        assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    tally.faults_detected += 5
    client.put_object(Bucket=BUCKET, Key="after", Body=b"after the torn tail")
    assert client.get_object(Bucket=BUCKET, Key="after")["Body"].read() == b"after the torn tail"
    bugs = server_bugs(server.log_text())
    assert server.stop() == 0
    final = verify(paths)
    assert not final.still_bad and not final.read_errors
    tally.repaired += 5
    tally.note(f"torn tails on 4 disks and the registry lost: {len(live)} objects rebuilt, all verify")
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])


def _crash_rounds(servers, tally: FaultTally, rounds: int, seed: int, n_disks: int = 4) -> None:
    seed = seed_from_env(seed)
    rnd = random.Random(seed)
    tally.note(f"seed {seed}, {rounds} rounds, {n_disks} disks, BUCKETS_SYNC=on, BUCKETS_SMALL_LOG=on")
    disks = servers.disks(n_disks)
    server = servers.start(disks, sync=True, extra_env=LOG)
    server.client().create_bucket(Bucket=BUCKET)
    ledger = Ledger()
    totals = LoadStats()
    for r in range(rounds):
        load = start_load(server.client, BUCKET, ledger, workers=3, mix=MIX, max_ops=400, seed=seed * 100 + r)
        time.sleep(rnd.uniform(0.8, 2.5))
        server.kill()
        tally.faults_injected += 1
        load.stop.set()
        server = servers.restart(server, extra_env=LOG)
        stats = load.finish()
        totals.merge(stats)
        assert staging_entries(disks) == []
        tally.faults_detected += 1
        reads = verify_ledger(server.client(), ledger, BUCKET)
        totals.merge(reads)
        tally.note(f"round {r}: load {stats.summary()}; read-back {reads.summary()}")
        tally.wrong_bytes += len(stats.wrong) + len(reads.wrong)
        tally.objects_lost += len(stats.lost) + len(reads.lost)
        assert not stats.wrong and not reads.wrong, (stats.wrong + reads.wrong)[:5]
        assert not stats.lost and not reads.lost, (stats.lost + reads.lost)[:5]
        tally.repaired += 1
    bugs = server_bugs(server.log_text())
    assert server.stop() == 0
    tally.objects_written += totals.puts_acked
    paths = [str(d) for d in disks]
    final = verify(paths)
    offline = judge_digests(ledger, final.digests, BUCKET)
    tally.objects_lost += len(offline.lost)
    tally.wrong_bytes += len(offline.wrong)
    assert not final.still_bad, f"objects with bad shards after crashes: {final.still_bad}"
    assert not offline.lost and not offline.wrong, (offline.lost + offline.wrong)[:10]
    assert any(smalllog.uses_log(e) for e in _entries(paths).values())
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])


@pytest.mark.parametrize("n_disks", [4, 10])  # 10: small objects on narrow 4+4 windows
def test_kill_9_once_with_the_log_loses_nothing(servers, tally: FaultTally, n_disks: int) -> None:
    _crash_rounds(servers, tally, rounds=1, seed=41, n_disks=n_disks)


@pytest.mark.faults
@pytest.mark.parametrize("n_disks", [4, 10])
def test_kill_9_rounds_with_the_log_lose_nothing(servers, tally: FaultTally, n_disks: int) -> None:
    _crash_rounds(servers, tally, rounds=6, seed=43, n_disks=n_disks)
