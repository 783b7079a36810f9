"""Helpers of the operations suite: start/stop a real ``buckets server``, run the real CLIs.

A server is ``python -m buckets server`` on a free port over its own disk directories
(4 disks: 2 data + 2 parity), root credentials from the environment, sync off, the
periodic scanner off, JSON logs; it is stopped by pid. The CLIs run as the installed
console scripts in a subprocess, with ``BUCKETS_CLIENT_CONFIG`` pointing at a private
alias file, exactly as a user would run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from serverproc import BIN, PYTHON, free_port, server_env, spawn, stop, wait_listening

ROOT_USER = "ops-admin"
ROOT_PASSWORD = "ops-secret-password-123"
METRICS_TOKEN = "ops-metrics-token-0123456789abcdef"
REGION = "us-east-1"
@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log_path: Path
    disks: list[Path]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def json_lines(self) -> list[dict]:
        """Every JSON line the server has written whole: a line without its newline yet is still
        being written (the log's writer thread writes batches of lines while this reads; one
        run read half an access line and failed on it)."""
        text = self.log_text()
        out = []
        for line in text[:text.rfind("\n") + 1].splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def s3(self, access_key: str = ROOT_USER, secret_key: str = ROOT_PASSWORD):
        return boto3.client("s3", endpoint_url=self.url, region_name=REGION, aws_access_key_id=access_key,
                            aws_secret_access_key=secret_key,
                            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))

    def get(self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


def start_server(base: Path, *, disks: int = 4, extra_env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> Server:
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    disk_paths = [base / f"disk{i}" for i in range(1, disks + 1)]
    env = server_env({"BUCKETS_ROOT_USER": ROOT_USER, "BUCKETS_ROOT_PASSWORD": ROOT_PASSWORD, "BUCKETS_SYNC": "off",
                      "BUCKETS_LOG_FORMAT": "json", "BUCKETS_SCANNER_RATE": "0",
                      "BUCKETS_METRICS_TOKEN": METRICS_TOKEN}, extra_env)
    log_path = base / "server.log"
    command = [PYTHON, "-m", "buckets", "server", "--address", f"127.0.0.1:{port}", *(args or []),
               *map(str, disk_paths)]
    proc = spawn(command, env, log_path, base)
    server = Server(proc, port, log_path, disk_paths, env)
    if not wait_listening(proc, port, log_path):
        raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()}")
    return server


def stop_server(server: Server) -> None:
    stop(server.proc)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def ok(self) -> "CliResult":
        assert self.code == 0, f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        return self

    def json(self):
        return json.loads(self.out)

    def one_line_error(self) -> str:
        """The CLI's error convention: exit 1, one line on stderr, no traceback."""
        assert self.code == 1, f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        assert "Traceback" not in self.err
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, self.err
        return lines[-1]


class Cli:
    """Runs ``buckets-admin`` / ``buckets-client`` with a private alias file."""

    def __init__(self, config_file: Path) -> None:
        self.env = {name: value for name, value in os.environ.items()
                    if not name.startswith(("BUCKETS_", "AWS_"))}
        self.env["BUCKETS_CLIENT_CONFIG"] = str(config_file)
        self.config_file = config_file

    def _script(self, name: str) -> list[str]:
        script = BIN / name
        if script.exists():
            return [str(script)]
        module = {"buckets-admin": "admin", "buckets-client": "client"}[name]
        return [PYTHON, "-c", f"from buckets.cli.{module} import main; main()"]

    def run(self, name: str, *args: str, stdin: str | None = None, cwd: Path | None = None,
            timeout: float = 60) -> CliResult:
        completed = subprocess.run([*self._script(name), *args], input=stdin, capture_output=True, text=True,
                                   env=self.env, cwd=str(cwd) if cwd else None, timeout=timeout)
        return CliResult(completed.returncode, completed.stdout, completed.stderr)

    def admin(self, *args: str, **kwargs) -> CliResult:
        return self.run("buckets-admin", *args, **kwargs)

    def client(self, *args: str, **kwargs) -> CliResult:
        return self.run("buckets-client", *args, **kwargs)


