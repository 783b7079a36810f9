"""Fixtures for the operations suite (helpers live in ``opsserver``).

One server per session serves most tests; tests that break a server (take disks away)
start their own with ``opsserver.start_server``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opsserver import ROOT_PASSWORD, ROOT_USER, Cli, Server, start_server, stop_server
from serverproc import no_new_tracebacks_in

from buckets.cli.aliases import Alias, AliasStore


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("ops-server"))
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(autouse=True)
def no_server_bugs(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test fails if the shared server logged a traceback while it ran (a 500 is a bug)."""
    if "server" not in request.fixturenames:
        yield
        return
    srv: Server = request.getfixturevalue("server")
    with no_new_tracebacks_in(srv.log_path):
        yield


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "cli-home" / "config.json")


@pytest.fixture
def aliased(cli: Cli, server: Server) -> Cli:
    """A CLI with alias ``srv`` -> the shared server, root credentials.

    Written by the CLI's own alias store in this process (what ``buckets-admin alias set srv
    URL KEY SECRET`` does, without a second start of the CLI per test); ``alias set`` itself is
    run as a command in test_ops_admin_cli.py."""
    AliasStore(cli.config_file).set(Alias("srv", server.url, ROOT_USER, ROOT_PASSWORD))
    return cli
