"""docker/compose.yaml runs the cluster the cluster tests run: the same `buckets server`
command line (the same endpoint list on every node, `--address` naming the node itself),
built by the same function (clusterproc.Cluster.command), only with the compose hosts,
port and disk paths. No Docker engine is needed: the file is parsed and compared."""

from __future__ import annotations

from pathlib import Path

import yaml

from clusterproc import Cluster

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
DOCKERFILE = COMPOSE.parent / "Dockerfile"


def compose_cluster(nodes: int) -> Cluster:
    """A Cluster that names node i ``node{i}:9000`` with disks /data/d1..d4, as compose does
    (no process is started and no port is probed)."""
    cluster = Cluster.__new__(Cluster)
    cluster.n, cluster.disks, cluster.port, cluster.extra_args = nodes, 4, 9000, ()
    cluster.data_root, cluster.disk_prefix, cluster.scheme = "/data", "d", "http"
    cluster.host = lambda i: f"node{i}"  # type: ignore[method-assign]
    return cluster


def test_compose_nodes_run_the_cluster_tests_command_line():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    members = sorted(name for name, svc in services.items() if "profiles" not in svc)
    assert members == ["node1", "node2", "node3", "node4"]
    cluster = compose_cluster(len(members))
    for i, name in enumerate(members, start=1):
        expected = cluster.command(i)[1:]  # without the path of the buckets executable
        assert services[name]["command"] == expected, name
        assert services[name]["hostname"] == name
        mounts = {volume.split(":", 1)[1] for volume in services[name]["volumes"]}
        assert mounts == {f"/data/d{d}" for d in range(1, 5)}, name


def test_compose_grow_node_joins_through_the_first_node():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    grow = {name: svc for name, svc in services.items() if "grow" in svc.get("profiles", ())}
    assert list(grow) == ["node5"]
    command = grow["node5"]["command"]
    assert command == ["server", "--address", "node5:9000", "--join", "http://node1:9000",
                       "http://node5:9000/data/d{1...4}"]


def test_image_creates_the_disk_directories_compose_mounts():
    text = DOCKERFILE.read_text()
    assert "mkdir -p /data/d1 /data/d2 /data/d3 /data/d4" in text and "chown -R buckets /data" in text
