"""Bucket notifications to a webhook (`buckets server --notify-webhook NAME=URL`): the
configuration API, AWS's event records, and at-least-once delivery, including events made
while the receiver was down and across a server restart."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from s3server import ServerProcess, error_of, start_server, stop_server
from serverproc import free_port

ARN = "arn:buckets:sqs::hook:webhook"
MIB = 1024 * 1024


class Receiver:
    """A webhook on 127.0.0.1:port that records every event it is sent; it can go down and
    come back on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.events.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def seen(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(e["EventName"], e["Key"]) for e in self.events]

    def wait_for(self, wanted: set[tuple[str, str]], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not wanted <= set(self.seen()):
            assert time.monotonic() < deadline, f"never delivered: {sorted(wanted - set(self.seen()))}"
            time.sleep(0.1)


@pytest.fixture
def receiver():
    r = Receiver(free_port())
    r.start()
    yield r
    r.stop()


def requests_post(form: dict, filename: str, body: bytes) -> int:
    """POST a browser-style multipart/form-data upload built from boto3's presigned post."""
    import uuid

    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in form["fields"].items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: text/plain\r\n\r\n".encode() + body + f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(form["url"], data=b"".join(parts), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.status


def notified_server(base: Path, receiver: Receiver) -> ServerProcess:
    return start_server(base, extra_args=["--notify-webhook", f"hook=http://127.0.0.1:{receiver.port}/events"])


def configure(s3, bucket: str, **filters: str) -> None:
    config = {"Id": "all", "QueueArn": ARN, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
    if filters:
        config["Filter"] = {"Key": {"FilterRules": [{"Name": k, "Value": v} for k, v in filters.items()]}}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [config]})


def test_every_create_and_delete_is_delivered_as_an_aws_record(tmp_path: Path, receiver: Receiver):
    srv = notified_server(tmp_path, receiver)
    try:
        s3 = srv.client()
        s3.create_bucket(Bucket="events")
        configure(s3, "events")
        got = s3.get_bucket_notification_configuration(Bucket="events")["QueueConfigurations"]
        assert got == [{"Id": "all", "QueueArn": ARN, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]
        s3.put_object(Bucket="events", Key="a b.txt", Body=b"hello")
        s3.copy_object(Bucket="events", Key="copy", CopySource="events/a b.txt")
        upload = s3.create_multipart_upload(Bucket="events", Key="multi")["UploadId"]
        etag = s3.upload_part(Bucket="events", Key="multi", UploadId=upload, PartNumber=1, Body=b"m" * 10)["ETag"]
        s3.complete_multipart_upload(Bucket="events", Key="multi", UploadId=upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        form = s3.generate_presigned_post("events", "posted/${filename}")
        posted = requests_post(form, "form.txt", b"from a form")
        assert posted in (200, 204), posted
        s3.delete_object(Bucket="events", Key="copy")
        s3.delete_objects(Bucket="events", Delete={"Objects": [{"Key": "multi"}, {"Key": "a b.txt"}]})
        receiver.wait_for({("s3:ObjectCreated:Put", "events/a b.txt"), ("s3:ObjectCreated:Copy", "events/copy"),
                           ("s3:ObjectCreated:Post", "events/posted/form.txt"),
                           ("s3:ObjectCreated:CompleteMultipartUpload", "events/multi"),
                           ("s3:ObjectRemoved:Delete", "events/copy"), ("s3:ObjectRemoved:Delete", "events/multi"),
                           ("s3:ObjectRemoved:Delete", "events/a b.txt")})
        put = next(e["Records"][0] for e in receiver.events if e["EventName"] == "s3:ObjectCreated:Put")
        assert put["eventSource"] == "aws:s3" and put["eventName"] == "ObjectCreated:Put"
        assert put["s3"]["bucket"]["name"] == "events" and put["s3"]["bucket"]["arn"] == "arn:aws:s3:::events"
        assert put["s3"]["object"]["key"] == "a+b.txt"  # URL-encoded, as AWS sends keys
        assert put["s3"]["object"]["size"] == 5 and put["s3"]["object"]["eTag"] == "5d41402abc4b2a76b9719d911017c592"
        assert put["s3"]["configurationId"] == "all" and put["eventTime"].endswith("Z")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=10).read().decode()
        assert 'buckets_notify_events_sent_total{target="hook"} 7.0' in metrics
        assert "buckets_notify_queue_depth 0.0" in metrics
    finally:
        stop_server(srv)
    assert "Traceback" not in srv.log_text()


def test_a_versioned_bucket_names_versions_and_delete_markers(tmp_path: Path, receiver: Receiver):
    """As AWS: every record of a versioned bucket carries the versionId it made or removed; a
    DELETE without a version id writes a delete marker: ObjectRemoved:DeleteMarkerCreated with the
    marker's version id; a DELETE of one version (or of a marker) is ObjectRemoved:Delete with
    that version id; DeleteObjects the same, per key."""
    srv = notified_server(tmp_path, receiver)
    try:
        s3 = srv.client()
        s3.create_bucket(Bucket="vers")
        s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Enabled"})
        configure(s3, "vers")
        v1 = s3.put_object(Bucket="vers", Key="doc", Body=b"one")["VersionId"]
        v2 = s3.put_object(Bucket="vers", Key="doc", Body=b"two")["VersionId"]
        marker = s3.delete_object(Bucket="vers", Key="doc")
        assert marker["DeleteMarker"] is True
        s3.delete_object(Bucket="vers", Key="doc", VersionId=v1)
        vo = s3.put_object(Bucket="vers", Key="other", Body=b"x")["VersionId"]
        multi = s3.delete_objects(Bucket="vers", Delete={"Objects": [{"Key": "other"}, {"Key": "doc", "VersionId": v2}]})
        multi_marker = next(d for d in multi["Deleted"] if d["Key"] == "other")
        assert multi_marker["DeleteMarker"] is True
        receiver.wait_for({("s3:ObjectCreated:Put", "vers/doc"), ("s3:ObjectRemoved:DeleteMarkerCreated", "vers/doc"),
                           ("s3:ObjectRemoved:Delete", "vers/doc"), ("s3:ObjectRemoved:DeleteMarkerCreated", "vers/other")})
        deadline = time.monotonic() + 30
        while len(receiver.events) < 7:
            assert time.monotonic() < deadline, receiver.seen()
            time.sleep(0.1)
        records = [(e["Records"][0]["eventName"], e["Records"][0]["s3"]["object"]["key"],
                    e["Records"][0]["s3"]["object"].get("versionId")) for e in receiver.events]
        assert sorted(records) == sorted([
            ("ObjectCreated:Put", "doc", v1), ("ObjectCreated:Put", "doc", v2),
            ("ObjectRemoved:DeleteMarkerCreated", "doc", marker["VersionId"]),
            ("ObjectRemoved:Delete", "doc", v1),
            ("ObjectCreated:Put", "other", vo),
            ("ObjectRemoved:DeleteMarkerCreated", "other", multi_marker["DeleteMarkerVersionId"]),
            ("ObjectRemoved:Delete", "doc", v2),
        ]), records
    finally:
        stop_server(srv)
    assert "Traceback" not in srv.log_text()


def test_lifecycle_expiries_are_events(tmp_path: Path, receiver: Receiver):
    """The lifecycle worker's expiries notify as AWS's do: LifecycleExpiration:Delete for an
    object removed (and for a noncurrent version, with its versionId), DeleteMarkerCreated for
    a current version hidden under a delete marker; principal s3.amazonaws.com."""
    srv = start_server(tmp_path, extra_args=["--notify-webhook", f"hook=http://127.0.0.1:{receiver.port}/events"],
                       extra_env={"BUCKETS_LIFECYCLE_DAY_SECONDS": "1", "BUCKETS_LIFECYCLE_INTERVAL": "0.5"})
    try:
        s3 = srv.client()
        rule = {"ID": "soon", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1},
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}
        events = ["s3:LifecycleExpiration:*"]
        for bucket in ("plain", "kept"):
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
                "QueueConfigurations": [{"Id": "lc", "QueueArn": ARN, "Events": events}]})
        s3.put_bucket_versioning(Bucket="kept", VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket="plain", Key="old", Body=b"x")
        v1 = s3.put_object(Bucket="kept", Key="doc", Body=b"1")["VersionId"]
        for bucket in ("plain", "kept"):
            s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})
        receiver.wait_for({("s3:LifecycleExpiration:Delete", "plain/old"),
                           ("s3:LifecycleExpiration:DeleteMarkerCreated", "kept/doc"),
                           ("s3:LifecycleExpiration:Delete", "kept/doc")}, timeout=60)
        records = [e["Records"][0] for e in receiver.events]
        assert all(r["userIdentity"]["principalId"] == "s3.amazonaws.com" for r in records), records
        removed = [r["s3"]["object"].get("versionId") for r in records
                   if r["eventName"] == "LifecycleExpiration:Delete" and r["s3"]["bucket"]["name"] == "kept"]
        assert v1 in removed, records
        marker = next(r for r in records if r["eventName"] == "LifecycleExpiration:DeleteMarkerCreated")
        assert marker["s3"]["object"]["versionId"] not in (None, "", v1), marker  # the new marker's own id
        assert "versionId" not in next(r for r in records if r["s3"]["bucket"]["name"] == "plain")["s3"]["object"]
    finally:
        stop_server(srv)
    assert "Traceback" not in srv.log_text()


def test_filters_pick_the_keys(tmp_path: Path, receiver: Receiver):
    srv = notified_server(tmp_path, receiver)
    try:
        s3 = srv.client()
        s3.create_bucket(Bucket="filtered")
        configure(s3, "filtered", prefix="images/", suffix=".jpg")
        for key in ("images/cat.jpg", "images/cat.png", "docs/cat.jpg", "images/dog.jpg"):
            s3.put_object(Bucket="filtered", Key=key, Body=b"x")
        receiver.wait_for({("s3:ObjectCreated:Put", "filtered/images/cat.jpg"),
                           ("s3:ObjectCreated:Put", "filtered/images/dog.jpg")})
        time.sleep(1)
        assert sorted(k for _, k in receiver.seen()) == ["filtered/images/cat.jpg", "filtered/images/dog.jpg"]
    finally:
        stop_server(srv)


def test_events_wait_for_a_receiver_that_is_down_and_survive_a_restart(tmp_path: Path, receiver: Receiver):
    srv = notified_server(tmp_path, receiver)
    try:
        s3 = srv.client()
        s3.create_bucket(Bucket="durable")
        configure(s3, "durable")
        receiver.stop()  # down: writes still succeed, their events wait
        for i in range(5):
            s3.put_object(Bucket="durable", Key=f"while-down/{i}", Body=b"d")
        # A failed delivery, logged, before the restart (the restarted server writes a new log,
        # and may not try again before the receiver is back: asserting it there failed once).
        deadline = time.monotonic() + 30
        while "webhook hook failed" not in (tmp_path / "server.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "webhook hook failed" in (tmp_path / "server.log").read_text()
    finally:
        stop_server(srv)  # and the server restarts before the receiver is back
    srv = notified_server(tmp_path, receiver)
    try:
        s3 = srv.client()
        s3.delete_object(Bucket="durable", Key="while-down/0")
        receiver.start()
        receiver.wait_for({("s3:ObjectCreated:Put", f"durable/while-down/{i}") for i in range(5)}
                          | {("s3:ObjectRemoved:Delete", "durable/while-down/0")})
    finally:
        stop_server(srv)
    assert "Traceback" not in srv.log_text()


def test_configuration_errors_change_nothing(tmp_path: Path, receiver: Receiver):
    srv = notified_server(tmp_path, receiver)
    try:
        s3 = srv.client()
        s3.create_bucket(Bucket="checked")
        configure(s3, "checked", prefix="keep/")
        bad = [
            {"QueueConfigurations": [{"QueueArn": "arn:buckets:sqs::nobody:webhook", "Events": ["s3:ObjectCreated:*"]}]},
            {"QueueConfigurations": [{"QueueArn": ARN, "Events": ["s3:ObjectExploded:*"]}]},
            {"QueueConfigurations": [{"Id": "x", "QueueArn": ARN, "Events": ["s3:ObjectCreated:*"]},
                                     {"Id": "y", "QueueArn": ARN, "Events": ["s3:ObjectCreated:Put"]}]},
            # no EventBridge here: refused rather than accepted and never delivered
            {"QueueConfigurations": [{"QueueArn": ARN, "Events": ["s3:ObjectCreated:*"]}],
             "EventBridgeConfiguration": {}},
        ]
        for config in bad:
            with pytest.raises(ClientError) as caught:
                s3.put_bucket_notification_configuration(Bucket="checked", NotificationConfiguration=config)
            assert error_of(caught) == ("InvalidArgument", 400), config
        got = s3.get_bucket_notification_configuration(Bucket="checked")["QueueConfigurations"]
        assert got[0]["Filter"]["Key"]["FilterRules"] == [{"Name": "Prefix", "Value": "keep/"}]
        s3.put_bucket_notification_configuration(Bucket="checked", NotificationConfiguration={})
        assert "QueueConfigurations" not in s3.get_bucket_notification_configuration(Bucket="checked")
    finally:
        stop_server(srv)
