"""The HTTP fuzzer (httpfuzz.py) against a real ``buckets server`` process.

* ``test_http_fuzz_smoke`` runs in ``make test``: 300 exchanges from a fixed seed over one
  connection at a time, so every run sends the same requests.
* ``test_http_fuzz`` is ``make test-fuzz`` (marker ``fuzz``, excluded from the default
  run): ``FUZZ_SECONDS`` (default 600) of generated requests from ``FUZZ_WORKERS``
  (default 4) concurrent connections, seeded by ``FUZZ_SEED`` (random unless given; the
  seed is printed so a run can be repeated). It prints the number of requests by status
  class and every class of finding with one example request.

* ``test_http_fuzz_cluster_smoke`` (``make test``) and ``test_http_fuzz_cluster`` (``make
  test-fuzz``, ``FUZZ_SECONDS`` more) do the same against a 4-node cluster, each worker
  talking to its own node: what one node stores, the others read, copy, list and delete,
  through the replicated index and the peers' disks.

All fail on any finding: a 5xx (other than 501 NotImplemented), a traceback in any
server's log, a request without an answer within ``FUZZ_TIMEOUT`` seconds (default 30),
or a server process exiting.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpfuzz import Campaign, FuzzCluster, FuzzServer, Report, start_cluster, start_server, stop_server
from serverproc import no_new_tracebacks

SMOKE_SEED = 8
SMOKE_REQUESTS = 300
FUZZ_SECONDS = float(os.environ.get("FUZZ_SECONDS", "600"))


@pytest.fixture
def fuzz_server(tmp_path: Path) -> Iterator[FuzzServer]:
    server = start_server(tmp_path)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def fuzz_cluster(tmp_path: Path) -> Iterator[FuzzCluster]:
    cluster = start_cluster(tmp_path)
    try:
        yield cluster
    finally:
        stop_server(cluster)


def _timeout() -> float:
    return float(os.environ.get("FUZZ_TIMEOUT", "30"))


def _check(report: Report) -> None:
    assert not report.crashed and not report.findings, report.summary()


def _smoke(server: FuzzServer | FuzzCluster, workers: int) -> None:
    with no_new_tracebacks(server.log_text):
        report = Campaign(server, SMOKE_SEED, workers=workers, timeout=_timeout()).run(requests=SMOKE_REQUESTS)
        _check(report)
    assert report.sent >= SMOKE_REQUESTS
    # Not only refusals: signed requests got through to handlers that store and answer.
    assert report.by_code["200 (empty)"] + report.by_code["200 (plain text)"] > 0, report.summary()
    assert report.by_class["4xx"] > 0, report.summary()


def test_http_fuzz_smoke(fuzz_server: FuzzServer) -> None:
    _smoke(fuzz_server, workers=1)


def test_http_fuzz_cluster_smoke(fuzz_cluster: FuzzCluster) -> None:
    """The smoke's requests from four workers, one per node (their order across workers
    varies from run to run; each worker's requests do not)."""
    _smoke(fuzz_cluster, workers=len(fuzz_cluster.hosts))


def _timed(server: FuzzServer | FuzzCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    seconds = FUZZ_SECONDS
    workers = int(os.environ.get("FUZZ_WORKERS", "4"))
    seed = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))

    def say(line: str) -> None:
        with capsys.disabled():
            print(line, flush=True)

    logs = ", ".join(str(path) for path in server.log_paths)
    say(f"\nfuzz: FUZZ_SEED={seed} FUZZ_SECONDS={seconds:g} FUZZ_WORKERS={workers} "
        f"{len(server.hosts)} node(s), log {logs}")
    with no_new_tracebacks(server.log_text):
        report = Campaign(server, seed, workers=workers, timeout=_timeout()).run(seconds=seconds, progress=say)
        summary = report.summary()
        say(summary)
        (tmp_path / "fuzz-report.txt").write_text(summary + "\n")
        if os.environ.get("FUZZ_REPORT"):
            Path(os.environ["FUZZ_REPORT"]).write_text(f"FUZZ_SEED={seed}\n{summary}\n")
            if report.findings or report.crashed:  # the servers' logs beside it (pytest drops old tmp dirs)
                kept = Path(os.environ["FUZZ_REPORT"] + ".logs")
                kept.mkdir(exist_ok=True)
                for log in server.log_paths:
                    shutil.copy(log, kept / Path(log).name)
        _check(report)


@pytest.mark.fuzz
@pytest.mark.timeout(FUZZ_SECONDS + 600)  # the run itself, then the last answers, the log scan, the server's stop
def test_http_fuzz(fuzz_server: FuzzServer, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _timed(fuzz_server, capsys, tmp_path)


@pytest.mark.fuzz
@pytest.mark.timeout(FUZZ_SECONDS + 600)
def test_http_fuzz_cluster(fuzz_cluster: FuzzCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _timed(fuzz_cluster, capsys, tmp_path)
