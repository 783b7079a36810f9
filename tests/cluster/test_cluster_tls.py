"""A cluster whose nodes speak HTTPS (`buckets server --certs-dir DIR https://node{1...4}:PORT/...`):
clients verify every node, and the nodes' peer calls (shards, the index, the control plane's
joins) go over TLS verified against the certificate directory."""

from __future__ import annotations

import os
import shutil
import ssl
import urllib.error
import urllib.request

import pytest
from clusterproc import Cluster
from serverproc import make_certificates

# A 4-node https cluster takes a while to form on a loaded box: `make test-cluster` runs it
# (`make test` covers TLS on one node: tests/integration/test_tls.py).
pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("tlscluster")
    ca, _, _ = make_certificates(base / "certs", ips=tuple(f"127.0.0.{i}" for i in range(1, 9)))
    (base / "certs" / "CAs").mkdir()
    shutil.copy(ca, base / "certs" / "CAs" / "test-ca.crt")  # what the nodes verify each other with
    c = Cluster(base, nodes=4, disks=2, extra_args=("--certs-dir", str(base / "certs")), ca_file=str(ca))
    c.start()
    try:
        c.wait_healthy()
        yield c
    finally:
        c.stop_and_check_logs()


def test_every_node_serves_https_and_reads_what_another_wrote(tls_cluster: Cluster):
    c = tls_cluster
    c.client(1).create_bucket(Bucket="tls-cluster")
    body = os.urandom(3 * 1024 * 1024 + 5)  # erasure-coded across the nodes' disks: shards travel by peer RPC
    c.client(2).put_object(Bucket="tls-cluster", Key="big", Body=body)
    c.client(3).put_object(Bucket="tls-cluster", Key="small", Body=b"small over tls")
    for i in range(1, 5):
        s3 = c.client(i)
        assert s3.get_object(Bucket="tls-cluster", Key="big")["Body"].read() == body
        assert s3.get_object(Bucket="tls-cluster", Key="small")["Body"].read() == b"small over tls"
    listed = [o["Key"] for o in c.client(4).list_objects_v2(Bucket="tls-cluster")["Contents"]]
    assert listed == ["big", "small"]


def test_nodes_refuse_plain_http_and_unverified_clients(tls_cluster: Cluster):
    c = tls_cluster
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{c.host(1)}:{c.port}/health/live", timeout=5)
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"https://{c.host(1)}:{c.port}/health/live", timeout=5,
                               context=ssl.create_default_context())  # the system store does not know the test CA
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    for i in range(1, 5):  # the nodes verified each other with CAs/ from the first call on
        assert "CERTIFICATE_VERIFY_FAILED" not in c.log(i), c.log(i)[-3000:]
