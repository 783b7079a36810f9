"""Integration fixtures: real `buckets server` processes, real clients.

The `server` fixture has two parameters, and every test that uses it runs against both:

* ``single``: one `python -m buckets server` on a free port over four disk directories
  (2 data + 2 parity);
* ``cluster4``: four nodes of four disks on 127.0.0.2-5, every request through a node chosen
  at random (per request for boto3, per connection for other clients: clusterserver.py).

Both run with test root credentials and `BUCKETS_SYNC=off` for speed. The logs are
checked after every test: an unhandled error (a 500) fails the test that caused it,
because a 500 is a bug.

``cluster4`` carries the ``cluster`` marker (``make test-cluster``), except in the modules
of CLUSTER_IN_DEFAULT_RUN, which run against the cluster in ``make test`` as well. To run
the whole suite against the cluster only: ``pytest -m 'not slow and not faults and not fuzz'
-k cluster4 tests/integration``. ``CLUSTER_SEED`` repeats a run's choice of nodes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from s3server import ServerProcess, empty_and_delete, new_bucket_name, start_cluster_server, start_server, stop_server
from serverproc import no_new_tracebacks, no_new_tracebacks_in

# The fast subset: objects, multipart and listing against the cluster in the default run, and
# object_store's conditional puts (delta-rs writers racing through the cluster's key locks).
CLUSTER_IN_DEFAULT_RUN = {"test_s3_objects", "test_s3_multipart", "test_s3_listing", "test_cluster_routing",
                          "test_client_object_store"}


def pytest_report_header(config: pytest.Config) -> str:
    from clusterserver import SEED

    return f"integration cluster4: CLUSTER_SEED={SEED}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server" not in metafunc.fixturenames:
        return
    fast = metafunc.module.__name__.rpartition(".")[2] in CLUSTER_IN_DEFAULT_RUN
    metafunc.parametrize("server", ["single", pytest.param("cluster4", marks=() if fast else pytest.mark.cluster)],
                         indirect=True, scope="session")


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if request.param == "cluster4":
        cluster = start_cluster_server(tmp_path_factory.mktemp("cluster4"))
        try:
            yield cluster
        finally:
            cluster.stop()
        # Between tests too (anti-entropy, heal, the control plane): a traceback is a bug.
        text = cluster.log_text()
        assert "Traceback" not in text and "unhandled error" not in text, f"a node logged a bug:\n{text[-6000:]}"
        return
    srv = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(autouse=True)
def no_server_bugs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if the server logged an unhandled exception while it ran."""
    if "server" not in request.fixturenames:
        yield
        return
    srv: ServerProcess = request.getfixturevalue("server")
    # One node: read only what its log gained during the test; the cluster's merged log is
    # read incrementally already.
    with no_new_tracebacks_in(srv.log_path) if isinstance(srv, ServerProcess) else no_new_tracebacks(srv.log_text):
        yield


@pytest.fixture(scope="session")
def s3(server: ServerProcess):
    """boto3 with its DEFAULT configuration (CRC32 checksums on, as current releases send)."""
    return server.client()


@pytest.fixture
def bucket(s3) -> Iterator[str]:
    name = new_bucket_name()
    s3.create_bucket(Bucket=name)
    yield name
    empty_and_delete(s3, name)


