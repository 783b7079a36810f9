"""The peer RPC prefix of the real ``buckets server``: other nodes get in, nobody else does.

A node started with ``BUCKETS_CLUSTER_SECRET`` answers ``/_buckets/peer/v1/...`` only to
requests signed with that secret, inside the time window, never twice. Everything else
gets the same 403 with the same fixed body, whether or not the method exists, and the
S3 API on the same port is unaffected. The session server (no secret set) shows the
secret derived from the root credentials.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator

import pytest
from clusterserver import ClusterServer
from s3server import ROOT_PASSWORD, ROOT_USER, ServerProcess, new_bucket_name, start_server, stop_server
from serverproc import no_new_tracebacks

from buckets.cluster import rpcframe as wire
from buckets.cluster.rpcauth import SIGNATURE_HEADER, PeerSigner, cluster_secret
from buckets.cluster.rpcclient import PeerClient, close_shared_session
from buckets.cluster.rpcerrors import PeerAuthRefused, UnknownPeerMethod

SECRET = "integration-cluster-secret-0123456789"
EXISTING = ("node", "info")
UNKNOWN = ("nope", "nothing")
# Headers that differ between any two answers: the date and the request id.
VARYING = {"date", "x-amz-request-id", "x-amz-id-2"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("peer-node"), extra_env={"BUCKETS_CLUSTER_SECRET": SECRET})
    try:
        with no_new_tracebacks(srv.log_text):
            yield srv
    finally:
        stop_server(srv)


@pytest.fixture(autouse=True)
def no_node_bugs(request: pytest.FixtureRequest) -> Iterator[None]:
    if "node" not in request.fixturenames:
        yield
        return
    srv: ServerProcess = request.getfixturevalue("node")
    with no_new_tracebacks(srv.log_text):
        yield


def post(srv: ServerProcess, path: str, body: bytes, headers: dict[str, str], method: str = "POST"
         ) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as given (http.client adds nothing but what we ask for)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def framed(args: dict) -> tuple[bytes, bytes]:
    packed = wire.pack(args)
    return packed, wire.args_prefix(packed) + packed


def signed_request(secret: bytes, target: tuple[str, str], clock=time.time) -> tuple[str, bytes, dict[str, str]]:
    path = wire.path_for(*target)
    packed, body = framed({})
    return path, body, PeerSigner(secret, clock=clock).headers("POST", path, "", packed, "none")


def assert_same_refusal(a: tuple[int, dict[str, str], bytes], b: tuple[int, dict[str, str], bytes]) -> None:
    for status, headers, body in (a, b):
        assert status == 403 and body == wire.FORBIDDEN_BODY
    assert {k: v for k, v in a[1].items() if k not in VARYING} == {k: v for k, v in b[1].items() if k not in VARYING}


# --- refusals: identical for the method that exists and the one that does not --------------


def test_an_unsigned_request_is_refused_the_same_way_for_any_method(node: ServerProcess) -> None:
    answers = [post(node, wire.path_for(*target), framed({})[1], {}) for target in (EXISTING, UNKNOWN)]
    assert_same_refusal(*answers)
    gets = [post(node, wire.path_for(*target), b"", {}, method="GET") for target in (EXISTING, UNKNOWN)]
    assert_same_refusal(*gets)
    # Under the prefix but no method at all, or another protocol version: the same.
    assert_same_refusal(post(node, "/_buckets/peer/v1/", b"", {}), post(node, "/_buckets/peer/v2/node/info", b"", {}))


def test_a_request_signed_with_another_secret_is_refused(node: ServerProcess) -> None:
    other = b"not-this-clusters-secret-at-all"
    answers = [post(node, path, body, headers) for path, body, headers in
               (signed_request(other, EXISTING), signed_request(other, UNKNOWN))]
    assert_same_refusal(*answers)


def test_a_tampered_signature_is_refused(node: ServerProcess) -> None:
    answers = []
    for target in (EXISTING, UNKNOWN):
        path, body, headers = signed_request(SECRET.encode(), target)
        signature = headers[SIGNATURE_HEADER]
        headers[SIGNATURE_HEADER] = ("0" if signature[0] != "0" else "1") + signature[1:]
        answers.append(post(node, path, body, headers))
    assert_same_refusal(*answers)


@pytest.mark.parametrize("skew", [-120.0, 120.0, -3600.0])
def test_a_timestamp_outside_the_window_is_refused(node: ServerProcess, skew: float) -> None:
    def clock() -> float:
        return time.time() + skew

    answers = [post(node, path, body, headers) for path, body, headers in
               (signed_request(SECRET.encode(), EXISTING, clock), signed_request(SECRET.encode(), UNKNOWN, clock))]
    assert_same_refusal(*answers)


def test_a_replayed_request_is_refused(node: ServerProcess) -> None:
    path, body, headers = signed_request(SECRET.encode(), EXISTING)
    status, first_headers, first = post(node, path, body, headers)
    assert status == 200 and first_headers["content-type"] == wire.RESULT_TYPE
    assert wire.unpack(first)["address"] == f"127.0.0.1:{node.port}"
    replay_existing = post(node, path, body, headers)

    path, body, headers = signed_request(SECRET.encode(), UNKNOWN)
    status, _, answer = post(node, path, body, headers)
    assert status == wire.PEER_ERROR_STATUS and wire.unpack(answer)["type"] == "UnknownPeerMethod"
    replay_unknown = post(node, path, body, headers)
    assert_same_refusal(replay_existing, replay_unknown)


def test_the_refusal_is_logged_with_its_reason_for_the_operator(node: ServerProcess) -> None:
    def clock() -> float:
        return time.time() - 600

    path, body, headers = signed_request(SECRET.encode(), EXISTING, clock)
    assert post(node, path, body, headers)[0] == 403
    node.wait_log("outside the 60s window")


# --- what a peer with the secret gets ------------------------------------------------------


async def test_a_peer_with_the_secret_calls_the_node(node: ServerProcess) -> None:
    client = PeerClient(node.endpoint, SECRET.encode())
    try:
        info = await client.call(*EXISTING)
        assert info["address"] == f"127.0.0.1:{node.port}" and info["disks"] == 4 and info["deployment_id"]
        assert (await client.ping())["time"] > 0
        with pytest.raises(UnknownPeerMethod):
            await client.call(*UNKNOWN)
        assert client.status()["state"] == "online"
    finally:
        await client.close()
        await close_shared_session()


async def test_without_a_cluster_secret_the_node_uses_one_derived_from_the_root_credentials(
        server: ServerProcess) -> None:
    derived = PeerClient(server.endpoint, cluster_secret(None, ROOT_USER, ROOT_PASSWORD))
    explicit = PeerClient(server.endpoint, SECRET.encode())
    try:
        # One node's own 4 disks; a cluster node counts the cluster's (4 nodes x 4).
        assert (await derived.call(*EXISTING))["disks"] == (16 if isinstance(server, ClusterServer) else 4)
        with pytest.raises(PeerAuthRefused):
            await explicit.call(*EXISTING)
    finally:
        await close_shared_session()


def test_the_s3_api_on_the_same_port_still_works(node: ServerProcess) -> None:
    s3 = node.client()
    bucket = new_bucket_name("peer")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="_buckets/peer/v1/node/info", Body=b"just a key")
    assert s3.get_object(Bucket=bucket, Key="_buckets/peer/v1/node/info")["Body"].read() == b"just a key"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["_buckets/peer/v1/node/info"]
    s3.delete_object(Bucket=bucket, Key="_buckets/peer/v1/node/info")
    s3.delete_bucket(Bucket=bucket)
