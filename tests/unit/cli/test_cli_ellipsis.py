"""Ellipsis expansion and endpoint parsing for `buckets server` disk arguments."""

from __future__ import annotations

import os

import pytest

from buckets.cli.ellipsis import Endpoint, expand, expand_all, names_cluster, parse_endpoints


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("/data", ["/data"]),
        ("./data", ["./data"]),
        ("/data{1...4}", ["/data1", "/data2", "/data3", "/data4"]),
        ("/data{1...1}", ["/data1"]),
        ("/d{8...11}", ["/d8", "/d9", "/d10", "/d11"]),
        ("/data{01...03}", ["/data01", "/data02", "/data03"]),
        ("/data{001...003}", ["/data001", "/data002", "/data003"]),
        # MinIO pads to the first bound's width: {01...100} keeps 100 as is.
        ("/d{09...11}", ["/d09", "/d10", "/d11"]),
        ("/mnt/disk{a...d}", ["/mnt/disk" + c for c in "abcd"]),
        ("/mnt/DISK{A...C}", ["/mnt/DISKA", "/mnt/DISKB", "/mnt/DISKC"]),
        ("{1...3}/x", ["1/x", "2/x", "3/x"]),
        ("/data{1...2}/sub", ["/data1/sub", "/data2/sub"]),
        # Several groups: the leftmost varies fastest (MinIO order).
        ("/r{1...2}/d{1...3}", ["/r1/d1", "/r2/d1", "/r1/d2", "/r2/d2", "/r1/d3", "/r2/d3"]),
        ("/x{a...b}{1...2}", ["/xa1", "/xb1", "/xa2", "/xb2"]),
        (
            "http://node{1...2}:9000/data{1...2}",
            [
                "http://node1:9000/data1",
                "http://node2:9000/data1",
                "http://node1:9000/data2",
                "http://node2:9000/data2",
            ],
        ),
    ],
)
def test_expand(arg: str, expected: list[str]) -> None:
    assert expand(arg) == expected


def test_expand_counts_match_minio() -> None:
    assert len(expand("/d{1...64}")) == 64
    assert len(expand("/a{1...64}/b{65...128}")) == 4096
    assert len(expand("/d{01...036}")) == 36


def test_expand_all_keeps_argument_order() -> None:
    assert expand_all(["/b{1...2}", "/a", "/c{1...2}"]) == ["/b1", "/b2", "/a", "/c1", "/c2"]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("", "empty disk argument"),
        ("/data{}", "empty range"),
        ("/data{...}", "empty range"),
        ("/data{1..4}", "needs three dots"),
        ("/data{1....4}", "invalid range"),
        ("/data{4...1}", "descending"),
        ("/data{4...02}", "descending"),
        ("/data{d...a}", "descending"),
        ("/data{1...a}", "both ends must be numbers or both single letters"),
        ("/data{a...D}", "same case"),
        ("/data{aa...bb}", "invalid range"),
        ("/data{-1...1}", "invalid range"),
        ("/data{1...2O}", "invalid range"),
        ("/data{1...4", "unbalanced or nested braces"),
        ("/data1...4}", "unbalanced or nested braces"),
        ("/data{{1...4}}", "unbalanced or nested braces"),
        ("/data1...4", "ellipsis outside braces"),
        ("/d{1...4}{1..2.}", "invalid range"),
        ("/d{1...100000}", "the limit is 4096"),
        ("/a{1...100}/b{1...100}", "the limit is 4096"),
    ],
)
def test_expand_rejects(arg: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        expand(arg)


def test_error_message_names_the_argument() -> None:
    with pytest.raises(ValueError) as caught:
        expand("/mnt/disk{9...2}")
    assert "'/mnt/disk{9...2}'" in str(caught.value)
    assert "\n" not in str(caught.value)


# --- endpoints ------------------------------------------------------------------------------


def test_local_paths_become_absolute_local_endpoints(tmp_path) -> None:
    endpoints = parse_endpoints([f"{tmp_path}/d{{1...2}}"], server_port=9000)
    assert endpoints == [
        Endpoint(url=None, host=None, port=None, path=f"{tmp_path}/d1", is_local=True),
        Endpoint(url=None, host=None, port=None, path=f"{tmp_path}/d2", is_local=True),
    ]


def test_relative_path_is_made_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    [endpoint] = parse_endpoints(["./data"], server_port=9000)
    assert endpoint.path == os.path.join(str(tmp_path), "data")


def test_local_url_endpoints_are_accepted() -> None:
    endpoints = parse_endpoints(["http://localhost:9000/data{1...2}", "http://127.0.0.1:9000/data3"],
                                server_port=9000)
    assert [(e.host, e.port, e.path, e.is_local) for e in endpoints] == [
        ("localhost", 9000, "/data1", True),
        ("localhost", 9000, "/data2", True),
        ("127.0.0.1", 9000, "/data3", True),
    ]
    assert endpoints[0].url == "http://localhost:9000/data1"


def test_url_without_port_takes_the_server_port() -> None:
    [endpoint] = parse_endpoints(["https://LocalHost/data"], server_port=9100)
    assert (endpoint.host, endpoint.port, endpoint.url) == ("localhost", 9100, "https://localhost:9100/data")
    assert endpoint.is_local


def test_bound_address_host_counts_as_local() -> None:
    [endpoint] = parse_endpoints(["http://10.1.2.3:9000/data"], server_port=9000, address_host="10.1.2.3")
    assert endpoint.is_local


@pytest.mark.parametrize(
    "args",
    [
        ["http://node{1...4}:9000/data{1...4}"],
        ["http://localhost:9001/data1"],  # this host, but another server's port
        ["http://localhost:9000/d1", "http://node2:9000/d2"],
    ],
)
def test_other_nodes_name_a_cluster(args: list[str]) -> None:
    endpoints = parse_endpoints(args, server_port=9000)
    assert names_cluster(endpoints)
    assert [e.url for e in endpoints][0].startswith("http://")


def test_one_node_named_by_urls_is_not_a_cluster() -> None:
    endpoints = parse_endpoints(["http://localhost:9000/d{1...4}"], server_port=9000)
    assert not names_cluster(endpoints) and all(e.is_local for e in endpoints)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no disk paths given"),
        (["/data1", "http://localhost:9000/data2"], "local paths and URLs cannot be mixed"),
        (["/data{1...4}", "/data3"], "duplicate disk: '/data3'"),
        (["/data", "/data/"], "duplicate disk"),
        (["/data", "/x/../data"], "duplicate disk"),
        (["http://localhost:9000/d1", "http://127.0.0.1:9000/d1"], "duplicate disk"),
        (["http://localhost:9000/d1", "https://localhost:9000/d1"], "duplicate disk"),
        (["ftp://localhost:9000/d1"], "unsupported scheme"),
        (["http://:9000/d1"], "has no host"),
        (["http://localhost:99999/d1"], "invalid port"),
        (["http://localhost:0/d1"], "invalid port"),
        (["http://localhost:abc/d1"], "invalid port"),
        (["http://localhost:9000"], "absolute disk path"),
        (["http://localhost:9000/"], "absolute disk path"),
        (["http://user:pw@localhost:9000/d1"], "must not carry credentials"),
        (["http://localhost:9000/d1?x=1"], "query or fragment"),
    ],
)
def test_parse_endpoints_rejects(args: list[str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_endpoints(args, server_port=9000)
    assert message in str(caught.value)
