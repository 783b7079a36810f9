"""GET /metrics on a real server: valid exposition format, and numbers that track what happened."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opsserver import METRICS_TOKEN, ROOT_PASSWORD, ROOT_USER, Server


def scrape(server: Server, headers: dict[str, str] | None = None) -> dict[str, list]:
    """{sample name: [(labels, value), ...]} parsed by prometheus-client's own parser."""
    status, response_headers, body = server.get("/metrics", headers=headers)
    assert status == 200, body
    assert response_headers["Content-Type"].startswith("text/plain")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    matches = [v for found, v in samples.get(name, []) if all(found.get(k) == x for k, x in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {samples.get(name)}"
    return matches[0]


def test_metrics_parse_and_describe_the_node(server: Server) -> None:
    samples = scrape(server)
    assert value(samples, "buckets_disks") == 4
    assert value(samples, "buckets_disks_online") == 4
    assert value(samples, "buckets_erasure_data_shards") == 2
    assert value(samples, "buckets_erasure_parity_shards") == 2
    assert value(samples, "buckets_write_quorum_disks") == 3
    for disk in server.disks:
        assert value(samples, "buckets_disk_online", endpoint=str(disk)) == 1
        assert value(samples, "buckets_disk_total_bytes", endpoint=str(disk)) > 0
        assert value(samples, "buckets_disk_free_bytes", endpoint=str(disk)) > 0
        total = value(samples, "buckets_disk_total_bytes", endpoint=str(disk))
        assert 0.0099 * total <= value(samples, "buckets_disk_reserve_bytes", endpoint=str(disk)) <= 0.05 * total
    for name in ("buckets_heal_shards_bad_total", "buckets_heal_shards_repaired_total",
                 "buckets_heal_shards_failed_total", "buckets_registry_cache_hits_total",
                 "buckets_registry_cache_misses_total", "buckets_registry_commits_total",
                 "buckets_registry_committed_ops_total", "buckets_registry_size_bytes",
                 "buckets_registry_digest_scans_total"):
        assert value(samples, name) >= 0
    assert value(samples, "process_resident_memory_bytes") > 10_000_000
    assert value(samples, "process_open_fds") > 4
    assert value(samples, "buckets_build_info", version=__import__("buckets").__version__) == 1


def test_requests_bytes_and_bucket_usage_are_counted(server: Server) -> None:
    s3 = server.s3()
    bucket = f"metrics-{uuid.uuid4().hex[:10]}"
    before = scrape(server)
    put_before = sum(v for labels, v in before.get("buckets_s3_requests_total", [])
                     if labels == {"api": "PutObject", "status_class": "2xx"})
    received_before = sum(v for labels, v in before.get("buckets_s3_received_bytes_total", [])
                          if labels["api"] == "PutObject")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a", Body=b"x" * 1000)
    s3.put_object(Bucket=bucket, Key="b", Body=b"y" * 2345)
    s3.put_object(Bucket=bucket, Key="a", Body=b"z" * 10)  # overwrite: usage must not double count
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="missing")
    assert s3.get_object(Bucket=bucket, Key="b")["Body"].read() == b"y" * 2345

    after = scrape(server)
    assert value(after, "buckets_bucket_objects", bucket=bucket) == 2
    assert value(after, "buckets_bucket_bytes", bucket=bucket) == 2345 + 10
    assert value(after, "buckets_s3_requests_total", api="PutObject", status_class="2xx") == put_before + 3
    assert value(after, "buckets_s3_requests_total", api="GetObject", status_class="4xx") >= 1
    assert value(after, "buckets_s3_received_bytes_total", api="PutObject") >= received_before + 3355
    assert value(after, "buckets_s3_sent_bytes_total", api="GetObject") >= 2345
    assert value(after, "buckets_s3_request_duration_seconds_count", api="PutObject") >= 3
    assert value(after, "buckets_s3_request_duration_seconds_bucket", api="PutObject", le="+Inf") >= 3

    s3.delete_object(Bucket=bucket, Key="a")
    s3.delete_object(Bucket=bucket, Key="b")
    s3.delete_bucket(Bucket=bucket)
    gone = scrape(server)
    assert not [labels for labels, _ in gone.get("buckets_bucket_objects", []) if labels["bucket"] == bucket]


def test_head_metrics_has_no_body(server: Server) -> None:
    status, headers, body = server.get("/metrics", method="HEAD")
    assert status == 200 and body == b""


def test_bearer_mode_switched_live(server: Server, aliased) -> None:
    aliased.admin("config", "set", "srv", "metrics_auth=bearer").ok()
    try:
        status, headers, _ = server.get("/metrics")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert server.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"})[0] == 403
        samples = scrape(server, {"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert value(samples, "buckets_disks") == 4
        assert server.get("/health/live")[0] == 200  # health never needs the token
    finally:
        aliased.admin("config", "set", "srv", "metrics_auth=public").ok()
    assert server.get("/metrics")[0] == 200


def test_a_bucket_named_metrics_still_works_over_s3(server: Server) -> None:
    """A signed S3 request for /metrics is S3's: only unsigned GETs get the exposition."""
    s3 = server.s3(ROOT_USER, ROOT_PASSWORD)
    s3.create_bucket(Bucket="metrics")
    try:
        s3.put_object(Bucket="metrics", Key="k", Body=b"v")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="metrics")["Contents"]] == ["k"]
        assert s3.list_objects(Bucket="metrics")["Contents"][0]["Key"] == "k"
    finally:
        s3.delete_object(Bucket="metrics", Key="k")
        s3.delete_bucket(Bucket="metrics")


def test_refill_progress_of_a_wiped_disk_is_in_metrics(tmp_path) -> None:
    """A disk wiped while the server runs is re-formatted and refilled; /metrics shows it."""
    import shutil
    import time

    from opsserver import start_server, stop_server

    srv = start_server(tmp_path / "refill")
    try:
        s3 = srv.s3()
        s3.create_bucket(Bucket="refill")
        for i in range(20):
            s3.put_object(Bucket="refill", Key=f"k{i}", Body=bytes([i]) * (200_000 + i))
        wiped = srv.disks[2]
        shutil.rmtree(wiped)
        wiped.mkdir()
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(srv)
            refill = [labels for labels, _ in samples.get("buckets_disk_refill_objects_total", [])]
            if refill and value(samples, "buckets_disk_healing", disk=refill[0]["disk"]) == 0:
                break
            assert time.monotonic() < deadline, "the wiped disk was not refilled in time"
            time.sleep(0.5)
        disk = refill[0]["disk"]
        assert refill[0]["endpoint"] == str(wiped)
        assert value(samples, "buckets_disk_refill_objects_total", disk=disk) == 20
        assert value(samples, "buckets_disk_refill_objects_done", disk=disk) == 20
        assert value(samples, "buckets_disk_refill_shards_rebuilt_total", disk=disk) == 20
        for i in range(20):
            assert s3.get_object(Bucket="refill", Key=f"k{i}")["Body"].read() == bytes([i]) * (200_000 + i)
    finally:
        stop_server(srv)
