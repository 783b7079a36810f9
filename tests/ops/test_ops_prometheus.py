"""A real Prometheus (Debian's ``prometheus`` package) scrapes /metrics and can query it.

Skipped when the ``prometheus`` binary is not installed (``apt-get install prometheus``);
``make prometheus-check`` runs just this test after installing it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from opsserver import Server, free_port

PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus binary is not installed (apt-get install prometheus)")


def _api(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def test_real_prometheus_scrapes_and_queries(server: Server, tmp_path: Path) -> None:
    server.s3().list_buckets()  # at least one S3 request in the counters
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: buckets\n"
        "    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 45
        target: dict = {}
        disks = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            time.sleep(1)
            try:
                targets = _api(port, "/api/v1/targets")["data"]["activeTargets"]
                target = targets[0] if targets else {}
                if target.get("health") != "up":
                    continue
                query = urllib.parse.quote("buckets_disks_online")
                result = _api(port, f"/api/v1/query?query={query}")["data"]["result"]
                if result:
                    disks = float(result[0]["value"][1])
                    break
            except OSError:
                continue  # Prometheus still starting
        assert target.get("health") == "up", f"scrape failed: {target.get('lastError')}"
        assert target.get("lastError") == ""
        assert disks == 4.0
        query = urllib.parse.quote('sum(buckets_s3_requests_total{api="ListBuckets"})')
        result = _api(port, f"/api/v1/query?query={query}")["data"]["result"]
        assert result and float(result[0]["value"][1]) >= 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
