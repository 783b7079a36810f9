"""Server memory stays bounded on a 3 GiB object: `aws s3 cp` up (multipart, the cli's
defaults: 8 MiB parts, 10 concurrent) and back down, while the server's RSS is sampled.

The design promises that memory is bounded by blocks in flight, never by object size: a
3 GiB object through a real client must keep the server process under 200 MB the whole
time. Run it with `make test-rss` (or `pytest -m slow -s tests/slow/test_rss_large_upload.py`);
it prints the figures. Needs about 10 GiB free under the temp directory (the source file
plus the erasure-coded copy on the four disks); everything is deleted afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from serverproc import free_port

GIB = 1024**3
MIB = 1024**2
OBJECT_SIZE = 3 * GIB
RSS_LIMIT = 200 * 1000 * 1000  # "200 MB"
SAMPLE_EVERY = 0.2  # seconds
ROOT_USER = "rss-admin"
ROOT_PASSWORD = "rss-secret-12345"
REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable
AWS = str(Path(PYTHON).parent / "aws")

pytestmark = pytest.mark.slow


@dataclass
class RssSampler:
    """Samples one process's resident set size every `SAMPLE_EVERY` seconds in a thread."""

    pid: int
    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, rss bytes)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "RssSampler":
        process = psutil.Process(self.pid)

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.samples.append((time.monotonic(), process.memory_info().rss))
                except psutil.NoSuchProcess:
                    return
                self._stop.wait(SAMPLE_EVERY)

        self._thread = threading.Thread(target=run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def peak_between(self, start: float, end: float) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)


def write_source(path: Path, size: int) -> str:
    """A `size`-byte file of non-repeating data, written 8 MiB at a time; returns its MD5.

    A random 1 MiB seed with each MiB's index stamped in front keeps every block distinct
    (a part or block served from the wrong place changes the MD5) without spending minutes
    of CPU on os.urandom for 3 GiB.
    """
    seed = bytearray(os.urandom(MIB))
    md5 = hashlib.md5()
    with open(path, "wb") as out:
        for index in range(size // MIB):
            seed[:8] = index.to_bytes(8, "big")
            out.write(seed)
            md5.update(seed)
    return md5.hexdigest()


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@pytest.mark.timeout(3600)
def test_rss_stays_under_200mb_for_3gib_through_aws_cli(tmp_path: Path) -> None:
    usage = shutil.disk_usage(tmp_path)
    if usage.free < 10 * GIB:
        pytest.skip(f"needs 10 GiB free under {tmp_path}, has {usage.free / GIB:.1f} GiB")
    port = free_port()
    disks = [str(tmp_path / "data" / f"disk{i}") for i in range(1, 5)]
    log_path = tmp_path / "server.log"
    env = dict(os.environ, BUCKETS_ROOT_USER=ROOT_USER, BUCKETS_ROOT_PASSWORD=ROOT_PASSWORD,
               BUCKETS_SYNC="off", BUCKETS_LOG_FORMAT="console", BUCKETS_SCANNER_RATE="0")
    source = tmp_path / "source.bin"
    server: subprocess.Popen | None = None
    sampler: RssSampler | None = None
    try:
        expected_md5 = write_source(source, OBJECT_SIZE)
        with open(log_path, "wb") as log_file:
            server = subprocess.Popen(
                [PYTHON, "-m", "buckets", "server", "--address", f"127.0.0.1:{port}", *disks],
                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise AssertionError(f"server exited with {server.returncode}:\n{log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"server did not listen:\n{log_path.read_text()}") from None
                time.sleep(0.1)

        sampler = RssSampler(server.pid).start()
        # The aws cli as a user runs it: its own defaults for multipart (8 MiB threshold
        # and parts, 10 concurrent requests); only the endpoint and credentials are ours.
        aws_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
                   "AWS_ACCESS_KEY_ID": ROOT_USER, "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD,
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
                   "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials")}
        aws = [AWS, "--endpoint-url", f"http://127.0.0.1:{port}"]
        bucket = f"rss-{uuid.uuid4().hex[:10]}"
        subprocess.run([*aws, "s3", "mb", f"s3://{bucket}"], env=aws_env, check=True, capture_output=True)
        time.sleep(1.0)  # a few idle samples: the baseline
        idle = time.monotonic()
        baseline = sampler.peak_between(0, idle)

        up_start = time.monotonic()
        upload = subprocess.run([*aws, "s3", "cp", "--only-show-errors", str(source), f"s3://{bucket}/big.bin"],
                                env=aws_env, capture_output=True, text=True)
        up_end = time.monotonic()
        assert upload.returncode == 0, f"upload failed:\n{upload.stdout}\n{upload.stderr}"
        source.unlink()  # the download is hashed on the fly; no second 3 GiB file

        head = subprocess.run([*aws, "s3api", "head-object", "--bucket", bucket, "--key", "big.bin"],
                              env=aws_env, check=True, capture_output=True, text=True).stdout
        assert f'"ContentLength": {OBJECT_SIZE}' in head, head
        assert '-384\\"' in head, head  # 3 GiB / 8 MiB: the cli's default part size

        down_start = time.monotonic()
        download = subprocess.Popen([*aws, "s3", "cp", "--only-show-errors", f"s3://{bucket}/big.bin", "-"],
                                    env=aws_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        md5, received = hashlib.md5(), 0
        assert download.stdout is not None
        while chunk := download.stdout.read(4 * MIB):
            md5.update(chunk)
            received += len(chunk)
        stderr = download.stderr.read().decode(errors="replace") if download.stderr else ""
        assert download.wait(timeout=60) == 0, f"download failed:\n{stderr}"
        down_end = time.monotonic()
        time.sleep(2 * SAMPLE_EVERY)
        sampler.stop()

        assert received == OBJECT_SIZE
        assert md5.hexdigest() == expected_md5
        subprocess.run([*aws, "s3", "rb", "--force", f"s3://{bucket}"], env=aws_env, check=True,
                       capture_output=True)

        peak_up = sampler.peak_between(up_start, up_end)
        peak_down = sampler.peak_between(down_start, down_end)
        peak = max(rss for _, rss in sampler.samples)
        report = [
            f"server RSS over {len(sampler.samples)} samples every {SAMPLE_EVERY}s "
            f"(3 GiB object, aws cli defaults):",
            f"  idle before upload   {mb(baseline)}",
            f"  peak during upload   {mb(peak_up)}   ({(up_end - up_start):.0f} s, "
            f"{OBJECT_SIZE / MIB / (up_end - up_start):.0f} MiB/s)",
            f"  peak during download {mb(peak_down)}   ({(down_end - down_start):.0f} s, "
            f"{OBJECT_SIZE / MIB / (down_end - down_start):.0f} MiB/s)",
            f"  peak overall         {mb(peak)}   (limit {mb(RSS_LIMIT)})",
        ]
        print("\n" + "\n".join(report))
        assert peak_up > 0 and peak_down > 0, "the sampler saw neither transfer"
        assert peak < RSS_LIMIT, "\n".join(report)
    finally:
        if sampler is not None:
            sampler.stop()
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        # pytest keeps recent tmp_paths: do not leave gigabytes behind in them.
        source.unlink(missing_ok=True)
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
