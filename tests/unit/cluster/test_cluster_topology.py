"""The cluster named on the command line: nodes grouped in order, this node found exactly once."""

from __future__ import annotations

import pytest

from buckets.cli.ellipsis import Endpoint
from buckets.cluster.topology import cluster_spec


def eps(*urls: str) -> list[Endpoint]:
    out = []
    for u in urls:
        scheme, rest = u.split("://")
        hostport, _, path = rest.partition("/")
        host, port = hostport.rsplit(":", 1)
        out.append(Endpoint(url=u, host=host, port=int(port), path="/" + path, is_local=False))
    return out


LIST = eps(*(f"http://127.0.0.{n}:9000/srv/n{n}/d{d}" for n in (1, 2, 3) for d in (1, 2)))


def test_nodes_grouped_in_first_appearance_order_and_self_found_by_address() -> None:
    spec = cluster_spec(LIST, "127.0.0.2", 9000)
    assert [n.url for n in spec.nodes] == ["http://127.0.0.1:9000", "http://127.0.0.2:9000", "http://127.0.0.3:9000"]
    assert spec.me.paths == ("/srv/n2/d1", "/srv/n2/d2")
    assert [p.url for p in spec.peers] == ["http://127.0.0.1:9000", "http://127.0.0.3:9000"]
    assert spec.disk_count == 6


def test_fingerprint_is_the_same_on_every_node_and_changes_with_the_list() -> None:
    a = cluster_spec(LIST, "127.0.0.1", 9000).fingerprint()
    b = cluster_spec(LIST, "127.0.0.3", 9000).fingerprint()
    assert a == b
    assert cluster_spec(LIST[:-1], "127.0.0.1", 9000).fingerprint() != a
    assert cluster_spec(list(reversed(LIST)), "127.0.0.1", 9000).fingerprint() != a


def test_no_match_and_ambiguous_match_are_refused_with_one_line() -> None:
    with pytest.raises(ValueError, match="no node in the endpoint list matches --address 127.0.0.9:9000"):
        cluster_spec(LIST, "127.0.0.9", 9000)
    with pytest.raises(ValueError, match="no node"):
        cluster_spec(LIST, "127.0.0.1", 9001)
    two_local = eps("http://localhost:9000/a", "http://127.0.0.1:9000/b")
    with pytest.raises(ValueError, match="matches several nodes"):
        cluster_spec(two_local, "", 9000, frozenset({"localhost", "127.0.0.1"}))
    spec = cluster_spec(LIST, "", 9000, frozenset({"127.0.0.3"}))
    assert spec.me.url == "http://127.0.0.3:9000"
