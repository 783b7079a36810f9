"""`python -m buckets server` as a real process: banner, SIGTERM exit 0, port in use."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serverproc import free_port


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


ENGINE_AND_APP = _module_exists("buckets.engine.store") and _module_exists("buckets.s3.app")
needs_engine_and_app = pytest.mark.skipif(
    not ENGINE_AND_APP,
    reason="buckets.engine.store and buckets.s3.app are not in this tree yet: "
           "the server cannot open a store or serve S3 without them")


def clean_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("BUCKETS_")}


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"server did not listen on port {port} within {timeout}s")


@pytest.fixture
def start_server(tmp_path: Path):
    processes: list[subprocess.Popen] = []

    def start(*args: str) -> tuple[subprocess.Popen, Path]:
        log_path = tmp_path / f"server-{len(processes)}.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen([sys.executable, "-m", "buckets", "server", *args],
                                       stdout=log_file, stderr=subprocess.STDOUT, env=clean_environment())
        processes.append(process)
        return process, log_path

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()  # by pid: only the processes this test started
            process.wait(timeout=10)


@needs_engine_and_app
def test_server_starts_prints_banner_and_stops_on_sigterm(tmp_path: Path, start_server) -> None:
    port = free_port()
    disks = tmp_path / "disk{1...4}"
    process, log_path = start_server("--address", f"127.0.0.1:{port}", str(disks))
    wait_for_port(port, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    output = log_path.read_text()
    assert f"S3 endpoint: http://127.0.0.1:{port}" in output
    assert f"Disks (4): {tmp_path}/disk1 {tmp_path}/disk2 {tmp_path}/disk3 {tmp_path}/disk4" in output
    assert "2 data + 2 parity" in output  # design.md default for 4 disks
    assert "RootUser:    bucketsadmin" in output
    assert "WARNING: the root credentials are the published defaults" in output
    assert "Traceback" not in output


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path, start_server) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        process, log_path = start_server("--address", f"127.0.0.1:{port}", str(tmp_path / "data"))
        assert process.wait(timeout=60) == 1
    output = log_path.read_text()
    assert output.strip() == (f"buckets: error: cannot listen on 127.0.0.1:{port}: address already in use "
                              "(another server is running there; pick one with --address)")
    assert not (tmp_path / "data").exists()  # refused before touching the disks


@needs_engine_and_app
def test_a_cluster_node_stops_on_sigterm_while_it_waits_for_its_peers(tmp_path: Path, start_server) -> None:
    """A node of a two-node cluster whose peer never starts waits for it; SIGTERM then stops
    it at once, exit 0 (the wait is cancelled until it ends: on Python 3.11 a cancel can be
    swallowed by ``asyncio.wait_for``), and it served nothing."""
    port = free_port()
    nodes = [f"http://127.0.0.{i}:{port}{tmp_path}/n{i}/d{{1...4}}" for i in (1, 2)]
    process, log_path = start_server("--address", f"127.0.0.1:{port}", *nodes)
    deadline = time.monotonic() + 60
    while "waiting for its peers" not in log_path.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    output = log_path.read_text()
    assert "stopped before the cluster formed" in output and "serving on" not in output
    assert "Traceback" not in output
