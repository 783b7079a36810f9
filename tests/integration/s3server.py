"""Helpers for the integration suite: start/stop a real server process, boto3 clients,
test bucket names, and S3 error extraction.

Kept out of conftest.py so test modules can import it by a name no other test directory
uses (`from s3server import ...`): several conftest.py files exist under tests/.
"""

from __future__ import annotations

import time

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from serverproc import PYTHON, free_port, make_certificates, server_env, spawn, stop, wait_listening

ROOT_USER = "integration-admin"
ROOT_PASSWORD = "integration-secret-123"
REGION = "us-east-1"
DOMAIN = "s3.buckets.test"  # virtual-host-style: <bucket>.s3.buckets.test
# Every server the suite starts (one node or a cluster's nodes) runs with these settings.
# The master key (SSE-S3, SSE-KMS) comes from the environment: every node of a cluster has the
# same, and no key file is created in the home directory of whoever runs the tests.
KMS_SECRET_KEY = "integration-master:" + "aW50ZWdyYXRpb24tbWFzdGVyLWtleS0zMi1ieXRlcyE="
SERVER_SETTINGS = {"BUCKETS_ROOT_USER": ROOT_USER, "BUCKETS_ROOT_PASSWORD": ROOT_PASSWORD, "BUCKETS_SYNC": "off",
                   "BUCKETS_LOG_FORMAT": "console", "BUCKETS_SCANNER_RATE": "0",
                   "BUCKETS_KMS_SECRET_KEY": KMS_SECRET_KEY}


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path
    data_dir: Path
    scheme: str = "http"
    ca_file: str | None = None  # https: the test CA that signed the server's certificate

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once it contains ``text`` (info lines reach it within 0.1 s of the event:
        the server writes them in batches); AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if text in log or time.monotonic() > deadline:
                assert text in log, f"{text!r} not logged within {timeout}s:\n{log[-3000:]}"
                return log
            time.sleep(0.05)

    def disk_dirs(self) -> list[Path]:
        """Every disk directory (``clusterserver.ClusterServer`` answers with every node's)."""
        return sorted(p for p in self.data_dir.iterdir() if p.is_dir())

    def client(self, **config: object):
        kwargs = dict(config)
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=kwargs.pop("region", REGION),
            aws_access_key_id=kwargs.pop("access_key", ROOT_USER),
            aws_secret_access_key=kwargs.pop("secret_key", ROOT_PASSWORD),
            verify=self.ca_file or False,
            config=Config(**kwargs) if kwargs else None)


def start_server(base: Path, *, disks: int = 4, extra_env: dict[str, str] | None = None,
                 command: list[str] | None = None, extra_args: list[str] | None = None) -> ServerProcess:
    port = free_port()
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    disk_paths = [str(data / f"disk{i}") for i in range(1, disks + 1)]
    log_path = base / "server.log"
    env = server_env(SERVER_SETTINGS, extra_env)
    if command is None:
        cmd = [PYTHON, "-m", "buckets", "server", "--address", f"127.0.0.1:{port}", "--domain", DOMAIN,
               *(extra_args or []), *disk_paths]
    else:  # a custom runner: "{PORT}" is replaced, the disk paths are appended
        cmd = [c.replace("{PORT}", str(port)) for c in command] + disk_paths
    proc = spawn(cmd, env, log_path, base)
    if not wait_listening(proc, port, log_path):
        raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
    return ServerProcess(proc, port, log_path, data)


def start_tls_server(base: Path, *, extra_env: dict[str, str] | None = None, disks: int = 4) -> ServerProcess:
    """`buckets server --certs-dir` with a test CA's certificate: HTTPS only. Clients verify it
    with ``server.ca_file`` (``client()`` does)."""
    certs = base / "certs"
    ca, _, _ = make_certificates(certs)
    srv = start_server(base, disks=disks, extra_env=extra_env, extra_args=["--certs-dir", str(certs)])
    srv.scheme = "https"
    srv.ca_file = str(ca)
    return srv


def stop_server(server: ServerProcess) -> None:
    stop(server.proc)


def start_cluster_server(base: Path):
    """A 4-node x 4-disk cluster on 127.0.0.2-5 behind 127.0.0.1:PORT, with the same settings
    as ``start_server`` (see ``clusterserver.py``: a random node per request)."""
    from clusterserver import ClusterServer

    srv = ClusterServer(base, settings=SERVER_SETTINGS, domain=DOMAIN, root_user=ROOT_USER,
                        root_password=ROOT_PASSWORD, region=REGION)
    try:
        srv.start()
    except BaseException:
        srv.stop()
        raise
    return srv


def crc64nvme_b64(data: bytes) -> str:
    """S3's default checksum of ``data`` as the headers and XML carry it."""
    import base64

    from awscrt import checksums

    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


def new_bucket_name(prefix: str = "it") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def empty_and_delete(client, name: str) -> None:
    try:
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    except Exception:  # noqa: BLE001 - best effort cleanup
        pass
    try:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])
        if client.get_bucket_versioning(Bucket=name).get("Status"):  # every version and marker too
            for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
                for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    try:
                        client.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
                    except Exception:  # noqa: BLE001 - a version under object lock stays
                        pass
        client.delete_bucket(Bucket=name)
    except client.exceptions.NoSuchBucket:
        pass


def error_of(excinfo: pytest.ExceptionInfo) -> tuple[str, int]:
    """(S3 error Code, HTTP status) of a botocore ClientError."""
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]
