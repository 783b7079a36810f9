"""An operator's mistake: a second server started on the disks a running server serves (a
service manager and a shell, an old container not yet gone, two nodes given one path).

Both would append to the same record logs, commit to the same registry and sweep each other's
files as orphans. The second must refuse to start, naming the first's process id, and the
first must go on serving untouched. Once the first has stopped, the second starts and finds
every object; on a ``kill -9`` of the first, the kernel drops its lock at once.
"""

from __future__ import annotations

from fault_campaign import BUCKET, EDGE_SIZES, write_objects
from fault_checks import read_all_ok
from test_faults_wipe import judge_load


def test_a_second_server_on_the_same_disks_is_refused(servers, tally) -> None:
    disks = servers.disks(4)
    first = servers.start(disks)
    client = first.client()
    client.create_bucket(Bucket=BUCKET)
    written = write_objects(client, EDGE_SIZES, prefix="first")
    second = servers.start(disks, expect_failure=True)
    tally.faults_injected += 1
    assert second.proc.wait(timeout=30) != 0
    said = second.log_text()
    assert f"is in use by another Buckets process (pid {first.proc.pid})" in said, said[-2000:]
    assert "Traceback" not in said
    tally.faults_detected += 1
    judge_load(tally, read_all_ok(client, written), "the first server, after the second was refused")
    first.kill()  # kill -9: the lock goes with the process
    third = servers.start(disks, port=first.port)
    judge_load(tally, read_all_ok(third.client(), written), "a server started after the first was killed")
    tally.objects_written += len(written.keys)
    tally.note(f"a second server on the same disks refused: {said.strip().splitlines()[-1][:160]}")
    assert third.stop() == 0
