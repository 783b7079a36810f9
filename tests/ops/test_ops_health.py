"""Health endpoints on a real server, at our paths and MinIO's, healthy and degraded."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from opsserver import Server, start_server, stop_server

HEALTH_PATHS = [f"{prefix}/health/{name}" for prefix in ("", "/minio") for name in ("live", "ready", "cluster")]


@pytest.mark.parametrize("path", HEALTH_PATHS)
def test_healthy_node_answers_200_without_credentials(server: Server, path: str) -> None:
    status, headers, body = server.get(path)
    assert status == 200, body
    assert json.loads(body)["status"] == "ok"
    assert headers.get("x-amz-request-id")
    head_status, _, head_body = server.get(path, method="HEAD")
    assert (head_status, head_body) == (200, b"")


def test_ready_reports_quorum_facts(server: Server) -> None:
    body = json.loads(server.get("/health/ready")[2])
    assert body == {"status": "ok", "registry_open": True, "disks_online": 4, "disks_total": 4,
                    "write_quorum": 3, "read_quorum": 2, "control_behind": False, "slow_link": False}
    _, headers, _ = server.get("/minio/health/cluster")
    assert headers["X-Minio-Write-Quorum"] == "3" and headers["X-Buckets-Write-Quorum"] == "3"


def test_probes_are_quiet_in_the_log(server: Server) -> None:
    before = len(server.log_text())
    for _ in range(3):
        server.get("/health/live")
    assert "/health/live" not in server.log_text()[before:]  # debug level only: probes would flood it


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError("condition not met in time")


def test_losing_write_quorum_makes_ready_503_and_live_stays_200(tmp_path) -> None:
    srv = start_server(tmp_path / "degraded", extra_env={"BUCKETS_LOG_FORMAT": "console"})
    try:
        s3 = srv.s3()
        s3.create_bucket(Bucket="before")
        # Two of four disks vanish (replaced by plain files, so they cannot be re-formatted):
        # 2 left < write quorum 3. The disk monitor notices within its 5 s interval.
        for disk in srv.disks[:2]:
            shutil.rmtree(disk)
            disk.write_text("not a directory")
        _wait_for(lambda: srv.get("/health/ready")[0] == 503)
        body = json.loads(srv.get("/health/ready")[2])
        assert body["status"] == "unavailable" and body["disks_online"] == 2 and body["write_quorum"] == 3
        assert srv.get("/minio/health/ready")[0] == 503
        assert srv.get("/health/cluster")[0] == 503
        assert srv.get("/minio/health/cluster")[0] == 503
        assert srv.get("/health/live")[0] == 200
        assert srv.get("/minio/health/live")[0] == 200
        metrics = srv.get("/metrics")[2].decode()
        assert 'buckets_disk_online{disk="' in metrics and "buckets_disks_online 2.0" in metrics

        # A write now fails with 503; the console access line names the request id the client saw.
        from botocore.exceptions import ClientError
        with pytest.raises(ClientError) as caught:
            s3.put_object(Bucket="before", Key="k", Body=b"data")
        response = caught.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 503
        request_id = response["ResponseMetadata"]["RequestId"]
        # boto3 retries SlowDown; the last attempt's access line may still be on its way to the log
        _wait_for(lambda: any(f"request_id={request_id}" in line for line in srv.log_text().splitlines()))
        lines = [line for line in srv.log_text().splitlines() if f"request_id={request_id}" in line]
        assert len(lines) == 1, srv.log_text()
        assert " WARNING " in lines[0] and "api=PutObject" in lines[0] and "status=503" in lines[0] and "error_code=SlowDown" in lines[0]
        assert "bucket=before" in lines[0] and "key=k" in lines[0]
    finally:
        stop_server(srv)
