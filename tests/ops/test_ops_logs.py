"""Structured logs of a real server: one JSON access line per request, ids the client saw."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from botocore.exceptions import ClientError
from opsserver import ROOT_PASSWORD, ROOT_USER, Server


def access_lines(server: Server, request_id: str, timeout: float = 5.0) -> list[dict]:
    # The line is written after the last byte of the response, so give it a moment.
    deadline = time.monotonic() + timeout
    while True:
        lines = [entry for entry in server.json_lines()
                 if entry.get("logger") == "buckets.access" and entry.get("request_id") == request_id]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_every_log_line_is_json(server: Server) -> None:
    server.s3().list_buckets()
    lines = [line for line in server.log_text().splitlines() if line.startswith("{")]
    assert lines, server.log_text()
    first = server.json_lines()[0]
    assert {"time", "level", "logger", "message"} <= set(first)


def test_access_line_for_a_put_and_a_get(server: Server) -> None:
    s3 = server.s3()
    bucket = f"logs-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    put = s3.put_object(Bucket=bucket, Key="dir/file.txt", Body=b"a" * 4321)
    [line] = access_lines(server, put["ResponseMetadata"]["RequestId"])
    assert line["level"] == "info"
    assert line["api"] == "PutObject" and line["method"] == "PUT"
    assert line["bucket"] == bucket and line["key"] == "dir/file.txt"
    assert line["status"] == 200
    assert line["bytes_in"] >= 4321  # aws-chunked framing adds a little
    assert line["access_key"] == ROOT_USER
    assert 0 < line["duration_ms"] < 10_000

    got = s3.get_object(Bucket=bucket, Key="dir/file.txt")
    assert got["Body"].read() == b"a" * 4321
    [line] = access_lines(server, got["ResponseMetadata"]["RequestId"])
    assert line["api"] == "GetObject" and line["bytes_out"] >= 4321

    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="absent")
    [line] = access_lines(server, caught.value.response["ResponseMetadata"]["RequestId"])
    assert line["status"] == 404 and line["error_code"] == "NoSuchKey"

    s3.delete_object(Bucket=bucket, Key="dir/file.txt")
    s3.delete_bucket(Bucket=bucket)


def test_failed_login_logs_the_claimed_key_and_never_a_secret(server: Server) -> None:
    s3 = server.s3(ROOT_USER, "definitely-the-wrong-secret")
    with pytest.raises(ClientError) as caught:
        s3.list_buckets()
    response = caught.value.response
    assert response["Error"]["Code"] == "SignatureDoesNotMatch"
    [line] = access_lines(server, response["ResponseMetadata"]["RequestId"])
    assert line["status"] == 403 and line["error_code"] == "SignatureDoesNotMatch"
    assert line["claimed_access_key"] == ROOT_USER and "access_key" not in line
    text = server.log_text()
    assert ROOT_PASSWORD not in text
    assert "definitely-the-wrong-secret" not in text


def test_sigusr1_logs_what_each_task_waits_on_and_the_node_serves_on(server: Server) -> None:
    """``kill -USR1``: a dump of the event loop's tasks, a request hung on its client included."""
    s3 = server.s3()
    bucket = f"dump-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="big", Body=b"b" * (32 << 20))
    # A GET whose client reads nothing of the body: its handler waits for the socket to drain.
    hung = s3.get_object(Bucket=bucket, Key="big")["Body"]
    try:
        time.sleep(0.5)
        before = len(server.json_lines())
        server.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not (dumps := [e for e in server.json_lines()[before:] if e.get("logger") == "buckets.taskdump"]):
            assert time.monotonic() < deadline, "no task dump logged"
            time.sleep(0.05)
    finally:
        hung.close()
    [dump] = dumps
    assert dump["level"] == "warning"
    message = dump["message"]
    assert "pending tasks in" in message and "other threads" in message, message[:2000]
    # The hung request's chain, from aiohttp's connection task down through the GET handler.
    assert "web_protocol.py" in message and "handlers/object.py" in message and " get_object\n" in message, message
    s3.put_object(Bucket=bucket, Key="after", Body=b"still serving")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"still serving"
    s3.delete_object(Bucket=bucket, Key="after")
    s3.delete_object(Bucket=bucket, Key="big")
    s3.delete_bucket(Bucket=bucket)
