"""Integration fixtures: one real `buckets server` process per session, real clients.

The server runs as `python -m buckets server` on a free port over four disk
directories (2 data + 2 parity), with test root credentials and `BUCKETS_SYNC=off` for
speed. Its log is checked after every test: an unhandled error (a 500) fails the test
that caused it, because a 500 is a bug.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from s3server import ServerProcess, empty_and_delete, new_bucket_name, start_server, stop_server
from serverproc import no_new_tracebacks


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
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
    with no_new_tracebacks(srv.log_text):
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


