"""A real ``buckets server`` process for fault tests: start, SIGTERM, SIGKILL, restart.

Same approach as ``tests/integration/conftest.py`` (``python -m buckets server`` on a free
127.0.0.1 port, test root credentials, console logs to a file), but the disk paths are
the test's own so it can damage them, and a server can be restarted on the same port over
the same disks, as an operator would after a crash. ``sync`` is off unless asked for:
the kill -9 test needs it on, everything else only needs a process crash to be survivable.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from serverproc import PYTHON, free_port, server_env, spawn, stop, wait_listening

ROOT_USER = "faults-admin"
ROOT_PASSWORD = "faults-secret-123"
REGION = "us-east-1"
def make_disks(base: Path, n: int = 4) -> list[Path]:
    """``n`` disk directory paths under ``base`` (not created: the server formats them)."""
    base.mkdir(parents=True, exist_ok=True)
    return [base / f"disk{i}" for i in range(1, n + 1)]


@dataclass
class ServerProcess:
    """One running server. ``restart()`` returns a new one on the same port and disks."""

    proc: subprocess.Popen
    port: int
    disks: list[Path]
    log_path: Path
    sync: bool
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def disk_paths(self) -> list[str]:
        return [str(d) for d in self.disks]

    def client(self, config=None):
        """boto3 with its DEFAULT configuration (flexible checksums, default retries), or
        ``config`` (a ``botocore.config.Config``: a test that must not wait out retries)."""
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, config=config,
                            aws_access_key_id=ROOT_USER, aws_secret_access_key=ROOT_PASSWORD)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown. Returns the exit code."""
        return stop(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL: the crash. Nothing in the process gets to run."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self, **kw) -> "ServerProcess":
        if self.alive():
            raise RuntimeError("restart() of a server that is still running")
        return start_server(self.disks, self.log_path.parent, sync=self.sync, port=self.port,
                            log_name=_next_log_name(self.log_path), **kw)

    def wait_log(self, pattern: str, timeout: float, start: int = 0) -> re.Match:
        """Wait until the log (from character ``start``) matches ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = rx.search(self.log_text()[start:])
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"server log never matched {pattern!r} within {timeout}s; "
                                     f"tail:\n{self.log_text()[-3000:]}")
            if not self.alive():
                raise AssertionError(f"server died while waiting for {pattern!r}:\n{self.log_text()[-3000:]}")
            time.sleep(0.2)


def _next_log_name(path: Path) -> str:
    stem, _, n = path.stem.partition(".")
    return f"{stem}.{int(n or 0) + 1}.log"


def start_server(disks: list[Path], base: Path, *, sync: bool = False, port: int | None = None,
                 log_name: str = "server.log", extra_env: dict[str, str] | None = None,
                 expect_failure: bool = False, timeout: float = 30.0) -> ServerProcess:
    """Start ``buckets server`` over ``disks``; wait until it listens (or exits, if expected)."""
    port = port or free_port()
    log_path = base / log_name
    env = server_env({"BUCKETS_ROOT_USER": ROOT_USER, "BUCKETS_ROOT_PASSWORD": ROOT_PASSWORD,
                      "BUCKETS_SYNC": "on" if sync else "off", "BUCKETS_LOG_FORMAT": "console"}, extra_env)
    cmd = [PYTHON, "-m", "buckets", "server", "--address", f"127.0.0.1:{port}", *map(str, disks)]
    proc = spawn(cmd, env, log_path, base)
    server = ServerProcess(proc, port, list(disks), log_path, sync, env)
    listening = wait_listening(proc, port, log_path, timeout)
    if listening and expect_failure:
        server.stop()
        raise AssertionError(f"server started although it should have refused:\n{server.log_text()}")
    if not listening and not expect_failure:
        raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()}")
    return server


def server_bugs(log: str) -> list[str]:
    """Log lines that betray a bug: a traceback or an unhandled (500) error."""
    lines = log.splitlines()
    return [ln for ln in lines if "Traceback" in ln or "unhandled error" in ln]
