"""Cluster fixtures: real multi-node clusters of `buckets server` processes on 127.0.0.1-8.

Each module starts its own cluster and stops it by process id; logs are checked for tracebacks (a 500 in any node is a bug).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clusterproc import Cluster


@pytest.fixture(scope="module")
def cluster4(tmp_path_factory) -> Iterator[Cluster]:
    """One 4 x 4 cluster per test module (forming one takes a while on a loaded 2-core box)."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), nodes=4, disks=4)
    c.start()
    try:
        yield c
    finally:
        c.stop_and_check_logs()
