"""``kill -9`` of the server during a mixed load (PUT, overwrite, GET, ranged GET, DELETE),
then a restart over the same disks on the same port, round after round, with sync on.

Every acknowledged object reads back intact (a request cut by the crash may have landed
or not: either outcome is accepted, nothing else), acknowledged deletes stay deleted,
the crash's staging litter is gone after the restart, and at the end every object's
shards all verify. The clients are boto3 with default retries, so a request cut by the
crash may be retried against the restarted server, as it would be in production.
"""

from __future__ import annotations

import random
import time

import pytest
from fault_campaign import BUCKET, seed_from_env
from fault_disks import staging_entries
from fault_ledger import FaultTally
from fault_load import Ledger, LoadMix, LoadStats, judge_digests, start_load, verify_ledger
from fault_offline import heal_pass, sweep_orphans, verify
from fault_server import server_bugs

MIX = LoadMix(put_new=0.40, overwrite=0.20, get=0.20, range_get=0.10, delete=0.10)


def crash_rounds(servers, tally: FaultTally, rounds: int, seed: int) -> None:
    seed = seed_from_env(seed)
    rnd = random.Random(seed)
    tally.note(f"seed {seed}, {rounds} rounds, BUCKETS_SYNC=on")
    disks = servers.disks(4)
    server = servers.start(disks, sync=True)
    server.client().create_bucket(Bucket=BUCKET)
    ledger = Ledger()
    make_client = server.client  # same endpoint across restarts: the port is kept
    totals = LoadStats()
    litter_seen = 0
    for r in range(rounds):
        load = start_load(make_client, BUCKET, ledger, workers=3, mix=MIX, max_ops=400, seed=seed * 100 + r)
        time.sleep(rnd.uniform(0.8, 2.5))
        server.kill()
        tally.faults_injected += 1
        litter = staging_entries(disks)
        litter_seen += len(litter)
        load.stop.set()  # the workers finish the request in flight (retried or failed), no more
        server = servers.restart(server)
        stats = load.finish()
        totals.merge(stats)
        left = staging_entries(disks)  # quiet now: anything here survived the restart
        assert left == [], f"round {r}: staging not cleaned at restart: {left[:5]}"
        tally.faults_detected += 1  # the restart found the crash's litter and recovered
        reads = verify_ledger(server.client(), ledger, BUCKET)
        totals.merge(reads)
        tally.note(f"round {r}: {len(litter)} staging entries at the crash, 0 after restart; "
                   f"load {stats.summary()}; read-back {reads.summary()}")
        tally.wrong_bytes += len(stats.wrong) + len(reads.wrong)
        tally.objects_lost += len(stats.lost) + len(reads.lost)
        assert not stats.wrong and not reads.wrong, (stats.wrong + reads.wrong)[:5]
        assert not stats.lost and not reads.lost, (stats.lost + reads.lost)[:5]
        tally.repaired += 1
    bugs = server_bugs(server.log_text())
    assert server.stop() == 0
    tally.objects_written += totals.puts_acked

    final = verify(server.disk_paths, staging=lambda: staging_entries(disks))
    swept = sweep_orphans(server.disk_paths)
    after_sweep = verify(server.disk_paths)
    offline = judge_digests(ledger, after_sweep.digests, BUCKET)
    lost, wrong = offline.lost, offline.wrong
    tally.objects_lost += len(lost)
    tally.wrong_bytes += len(wrong)
    tally.note(f"{litter_seen} staging entries left by {rounds} crashes, all gone at restart; offline: "
               f"{final.objects} objects, {len(final.still_bad)} with bad shards; orphan writes swept "
               f"{swept['orphans_removed']}; after the sweep {after_sweep.objects} objects, {len(lost)} lost")
    assert final.staging_after_open == []
    assert not final.still_bad, f"objects with bad shards after crashes: {final.still_bad}"
    assert not lost and not wrong, (lost + wrong)[:10]
    assert after_sweep.objects == final.objects and not after_sweep.still_bad
    report = heal_pass(server.disk_paths)
    assert report.shards_bad == 0
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])


def test_kill_9_once_loses_nothing(servers, tally) -> None:
    """Fast: one crash in the middle of the mixed load."""
    crash_rounds(servers, tally, rounds=1, seed=31)


@pytest.mark.faults
def test_kill_9_rounds_lose_nothing(servers, tally) -> None:
    crash_rounds(servers, tally, rounds=6, seed=37)
