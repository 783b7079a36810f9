"""A second topology change while a migration runs is queued, then applied once it is done
(``membership.run_queued``; architecture/cluster.md, "A second change is queued").

Marked ``cluster`` (make test-cluster): a one-node URL cluster grows to 2, then node 3 is added
with a slow throttle and node 4 is asked for while node 3's migration runs. The CLI says it is
queued, waits for its turn and follows its migration; the queue is empty afterwards, every
node is active and every object reads back through every node. The queue's rules (checked
first, asked twice queued once, applied in order, not while a migration runs) are unit-tested
in tests/unit/cluster/test_membership_rules.py, which runs in make test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from growkit import GrowCluster, read_all, write_seed


@pytest.mark.cluster
def test_add_node_while_a_migration_runs_is_queued_then_applied(tmp_path: Path) -> None:
    cluster = GrowCluster(tmp_path)
    try:
        s3 = cluster.begin("queue")
        expected = write_seed(s3, "queue", 21, 1)
        cluster.join(2)
        cluster.wait_migration_done(1, 2)
        cluster.start(3)
        cluster.start(4)
        cluster.wait_log(3, "waiting to be added")
        cluster.wait_log(4, "waiting to be added")
        cluster.admin(2, "cluster", "migration-throttle", "--bytes-per-s", "2000000", "--objects", "1")
        cluster.admin(2, "cluster", "add-node", cluster.disks(3), "--no-wait")
        queued = cluster.admin(1, "cluster", "add-node", cluster.disks(4)).stdout
        print(f"add-node while a migration ran:\n{queued}")
        assert "is queued (position 1)" in queued and "Migration done" in queued, queued
        listing = cluster.nodes(1)
        assert [n["state"] for n in listing["nodes"]] == ["active"] * 4 and listing["queued"] == []
        assert listing["generation"] == 4
        read_all(cluster, [1, 2, 3, 4], "queue", expected)
    finally:
        cluster.stop_all()
    bugs = cluster.bugs()
    assert not bugs, bugs
