"""A cluster of uneven nodes (4 + 2 + 1 disks) survives the loss of any node, the largest
included: its set is the widest in which no node holds more shards of an object than the
object can lose (3+2 on 5 of the 7 disks), not every disk (4+3 would put 4 shards on the
4-disk node). In `make test`: about 10 s."""

from __future__ import annotations

import os
from collections import Counter

import diskview
import pytest
from botocore.exceptions import ClientError
from clusterproc import Cluster

SIZES = {"empty": 0, "tiny": 100, "small": 5000, "inline": 70_000, "block": 3_000_000}


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("uneven"), nodes=3, disks=(4, 2, 1))
    c.start()
    try:
        yield c
    finally:
        c.stop_and_check_logs()


def _shards_per_node(c: Cluster, bucket: str, key: str) -> Counter:
    held = [root.parent.name for root in c.disk_roots() for _ in diskview.writes_of(root, bucket, key)]
    return Counter(held)


def test_uneven_nodes_survive_the_loss_of_the_largest(uneven: Cluster) -> None:
    c = uneven
    c.wait_healthy()
    for i in range(1, 4):  # every node prints the layout it formed with, and what it survives
        log = c.log(i)
        assert "Layout:      3+2, each object on 5 of the 7 disks" in log, log[-3000:]
        assert "Tolerates:   1 node failure(s) for reads and writes" in log, log[-3000:]
    health = c.health(2)
    assert health["layout"] == {"k": 3, "m": 2, "set_size": 5, "disks": 7} and health["tolerates"] == 1, health
    s3 = {i: c.client(i, retries={"max_attempts": 8, "mode": "standard"}) for i in range(1, 4)}
    s3[1].create_bucket(Bucket="uneven")
    bodies = {key: os.urandom(size) for key, size in SIZES.items()}
    for key, body in bodies.items():
        s3[1].put_object(Bucket="uneven", Key=key, Body=body)
    for key in bodies:  # 5 shards of every object (small ones too: 2+2 fits no window here)
        per_node = _shards_per_node(c, "uneven", key)
        assert sum(per_node.values()) == 5 and max(per_node.values()) <= 2, (key, per_node)

    c.kill(1)  # the node with 4 of the 7 disks
    for i in (2, 3):
        for key, body in bodies.items():
            assert s3[i].get_object(Bucket="uneven", Key=key)["Body"].read() == body, (i, key)
    later = {f"later/{key}": os.urandom(size) for key, size in SIZES.items()}
    for key, body in later.items():
        s3[2].put_object(Bucket="uneven", Key=key, Body=body)
    for key, body in later.items():
        assert s3[3].get_object(Bucket="uneven", Key=key)["Body"].read() == body, key
    s3[3].delete_object(Bucket="uneven", Key="tiny")
    listed = [o["Key"] for o in s3[2].list_objects_v2(Bucket="uneven")["Contents"]]
    assert listed == sorted(set(bodies) - {"tiny"} | set(later))

    c.start(1)  # back: it serves what was written while it was away
    for key, body in later.items():
        assert s3[1].get_object(Bucket="uneven", Key=key)["Body"].read() == body, key
    with pytest.raises(ClientError) as caught:
        s3[1].head_object(Bucket="uneven", Key="tiny")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_a_change_that_lowers_what_the_cluster_survives_is_refused_unless_accepted(uneven: Cluster) -> None:
    """Removing a disk of the 2-disk node leaves 4 + 1 + 1: 3 of an object's 5 shards on the
    first node, so the cluster would survive no node's loss. Refused (409, nothing changes),
    then done when the operator accepts it."""
    from buckets.admin.client import AdminCallError, AdminClient
    from clusterproc import ROOT_PASSWORD, ROOT_USER

    c = uneven
    c.wait_healthy()
    admin = AdminClient(c.url(3), ROOT_USER, ROOT_PASSWORD, timeout=60)
    before = admin.call("GET", "cluster/nodes")
    disk = f"{c.data_root}/{c.disk_prefix.format(node=2)}2"
    with pytest.raises(AdminCallError) as refused:
        admin.call("POST", "cluster/remove-disk", {"endpoint": c.url(2), "path": disk})
    assert refused.value.status == 409 and refused.value.code == "ToleranceWouldFall", refused.value
    assert "tolerates 0 node failure(s), not 1" in str(refused.value), refused.value
    assert "--accept-lower-tolerance" in str(refused.value), refused.value
    with pytest.raises(AdminCallError) as bad:
        admin.call("POST", "cluster/remove-disk", {"endpoint": c.url(2), "path": disk,
                                                   "accept_lower_tolerance": "yes"})
    assert bad.value.status == 400, bad.value
    assert admin.call("GET", "cluster/nodes") == before  # nothing changed: same generation, no disk draining
    assert c.health(1)["tolerates"] == 1

    done = admin.call("POST", "cluster/remove-disk", {"endpoint": c.url(2), "path": disk,
                                                      "accept_lower_tolerance": True})
    assert done["tolerates"] == {"before": 1, "after": 0} and done["generation"] == before["generation"] + 1, done
    assert done["disk"]["draining"] is True, done
