"""TLS on the server port (`buckets server --certs-dir DIR`): real clients over HTTPS, each
verifying the server against a test CA, a certificate swap by SIGHUP under load, and the
errors an operator sees for a bad certificate directory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import SSLError

from localfiles import run
from s3server import (PYTHON, REGION, ROOT_PASSWORD, ROOT_USER, SERVER_SETTINGS, ServerProcess,
                      make_certificates, new_bucket_name, start_tls_server, stop_server)
from serverproc import BIN, free_port, server_env

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> ServerProcess:
    srv = start_tls_server(tmp_path_factory.mktemp("tls"))
    yield srv
    stop_server(srv)
    assert "Traceback" not in srv.log_text()


@pytest.fixture
def bucket(tls: ServerProcess):
    s3 = tls.client()
    name = new_bucket_name("tls")
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def served_serial(port: int, ca_file: str) -> int:
    """The serial number of the certificate a new TLS connection is served (verified)."""
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            der = sock.getpeercert(binary_form=True)
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


def test_boto3_default_config_verifies_the_server(tls: ServerProcess, bucket: str):
    """boto3 with default settings over HTTPS: aws-chunked bodies with CRC32 trailers, a
    multipart upload, ranged reads; and without the CA it refuses the certificate."""
    s3 = tls.client()  # verify=the test CA, nothing else changed
    body = os.urandom(6 * MIB + 17)
    s3.put_object(Bucket=bucket, Key="one", Body=body)
    assert s3.get_object(Bucket=bucket, Key="one")["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="one", Range="bytes=5-9")["Body"].read() == body[5:10]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="multi")["UploadId"]
    parts = [s3.upload_part(Bucket=bucket, Key="multi", UploadId=upload, PartNumber=n, Body=chunk)["ETag"]
             for n, chunk in ((1, body[:5 * MIB]), (2, body[5 * MIB:]))]
    s3.complete_multipart_upload(Bucket=bucket, Key="multi", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(parts, 1)]})
    assert s3.get_object(Bucket=bucket, Key="multi")["Body"].read() == body
    untrusting = boto3.client("s3", endpoint_url=tls.endpoint, region_name=REGION, aws_access_key_id=ROOT_USER,
                              aws_secret_access_key=ROOT_PASSWORD, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(SSLError):
        untrusting.list_buckets()


def test_plain_http_on_the_tls_port_gets_nothing(tls: ServerProcess):
    """The port speaks HTTPS only: a plain request is never served."""
    with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        try:
            while chunk := sock.recv(4096):
                reply += chunk
        except ConnectionResetError:
            pass
    assert b"ListAllMyBucketsResult" not in reply and not reply.startswith(b"HTTP/1.1 200")


def test_aws_cli_over_https(tls: ServerProcess, bucket: str, tmp_path: Path):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": ROOT_USER,
           "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD, "AWS_DEFAULT_REGION": REGION,
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    aws = [str(BIN / "aws"), "--endpoint-url", tls.endpoint, "--ca-bundle", tls.ca_file]
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(9 * MIB))  # over the cli's 8 MiB threshold: a multipart upload
    run([*aws, "s3", "cp", str(src), f"s3://{bucket}/cli/up.bin"], env)
    assert "up.bin" in run([*aws, "s3", "ls", f"s3://{bucket}/cli/"], env)
    run([*aws, "s3", "cp", f"s3://{bucket}/cli/up.bin", str(tmp_path / "down.bin")], env)
    assert (tmp_path / "down.bin").read_bytes() == src.read_bytes()


def test_s3cmd_over_https(tls: ServerProcess, bucket: str, tmp_path: Path):
    config = tmp_path / "s3cfg"
    config.write_text("\n".join([
        "[default]", f"access_key = {ROOT_USER}", f"secret_key = {ROOT_PASSWORD}",
        f"host_base = 127.0.0.1:{tls.port}", f"host_bucket = 127.0.0.1:{tls.port}", "use_https = True",
        "check_ssl_certificate = True", "check_ssl_hostname = True", f"ca_certs_file = {tls.ca_file}",
        f"bucket_location = {REGION}", "signature_v2 = False", ""]))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    s3cmd = [str(BIN / "s3cmd"), "-c", str(config)]
    src = tmp_path / "small.txt"
    src.write_bytes(b"hello over tls from s3cmd")
    run([*s3cmd, "put", str(src), f"s3://{bucket}/s3cmd/small.txt"], env)
    run([*s3cmd, "get", f"s3://{bucket}/s3cmd/small.txt", str(tmp_path / "small.down")], env)
    assert (tmp_path / "small.down").read_bytes() == src.read_bytes()


def test_rclone_over_https(tls: ServerProcess, bucket: str, tmp_path: Path):
    rclone = shutil.which("rclone")
    if rclone is None:
        pytest.skip("rclone is not installed (make test installs it)")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "RCLONE_CONFIG": str(tmp_path / "rclone.conf"), "RCLONE_CONFIG_B_TYPE": "s3",
           "RCLONE_CONFIG_B_PROVIDER": "Other", "RCLONE_CONFIG_B_ACCESS_KEY_ID": ROOT_USER,
           "RCLONE_CONFIG_B_SECRET_ACCESS_KEY": ROOT_PASSWORD, "RCLONE_CONFIG_B_ENDPOINT": tls.endpoint,
           "RCLONE_CONFIG_B_REGION": REGION, "RCLONE_CONFIG_B_FORCE_PATH_STYLE": "true"}
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}.bin": os.urandom(100_000 * (i + 1)) for i in range(3)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    ca = ["--ca-cert", tls.ca_file]
    run([rclone, *ca, "copy", str(src), f"b:{bucket}/rclone"], env)
    listed = run([rclone, *ca, "lsf", f"b:{bucket}/rclone"], env)
    assert sorted(listed.split()) == sorted(files)
    down = tmp_path / "down"
    run([rclone, *ca, "copy", f"b:{bucket}/rclone", str(down)], env)
    assert {p.name: p.read_bytes() for p in down.iterdir()} == files


@pytest.mark.slow  # many CLI process starts: make test-slow (make test keeps this CLI's other tests)
def test_buckets_admin_verifies_with_ca_file(tls: ServerProcess, tmp_path: Path):
    env = dict(os.environ, HOME=str(tmp_path))
    admin = lambda *args: subprocess.run([str(BIN / "buckets-admin"), *args], env=env, capture_output=True,
                                         text=True, timeout=60)
    assert admin("alias", "set", "plain", tls.endpoint, ROOT_USER, ROOT_PASSWORD).returncode == 0
    refused = admin("info", "plain")
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower(), refused.stderr
    assert admin("alias", "set", "ca", tls.endpoint, ROOT_USER, ROOT_PASSWORD, "--ca-file", tls.ca_file).returncode == 0
    info = admin("info", "ca", "--json")
    assert info.returncode == 0, info.stderr
    assert admin("alias", "set", "blind", tls.endpoint, ROOT_USER, ROOT_PASSWORD, "--insecure").returncode == 0
    blind = admin("info", "blind")
    assert blind.returncode == 0 and "not verified" in blind.stderr, blind.stderr


def test_sighup_swaps_the_certificate_under_load(tmp_path: Path):
    """New certificate files and SIGHUP: new connections get the new certificate, and no
    request of a steady load fails meanwhile (on connections opened before or after)."""
    srv = start_tls_server(tmp_path / "srv")
    try:
        certs = tmp_path / "srv" / "certs"
        # The next certificate comes from a new CA; clients trust both CAs from the start (as
        # after a CA rollover's first step), so a connection made after the swap verifies too.
        new_ca, new_cert, new_key = make_certificates(tmp_path / "next", name="Buckets second CA")
        bundle = tmp_path / "both-cas.pem"
        bundle.write_bytes(Path(srv.ca_file).read_bytes() + new_ca.read_bytes())
        srv.ca_file = str(bundle)
        before = served_serial(srv.port, srv.ca_file)
        s3 = srv.client()
        s3.create_bucket(Bucket="swap")
        failures: list[str] = []
        done = {"kept": 0, "fresh": 0}
        stop = threading.Event()

        def steady(kind: str, worker: int) -> None:
            client = srv.client(retries={"max_attempts": 1})  # a failure shows, never retried away
            n = 0
            while not stop.is_set():
                try:
                    if kind == "fresh":  # a new client: a new connection and handshake each time
                        client = srv.client(retries={"max_attempts": 1})
                    body = f"{kind}-{n}".encode() * 100
                    key = f"{kind}-{worker}/{n % 8}"  # each thread its own keys: no write races another's read
                    client.put_object(Bucket="swap", Key=key, Body=body)
                    assert client.get_object(Bucket="swap", Key=key)["Body"].read() == body
                    done[kind] += 1
                    n += 1
                except Exception as error:  # noqa: BLE001 - every failure is reported
                    failures.append(f"{kind}: {type(error).__name__}: {error}")

        threads = [threading.Thread(target=steady, args=(k, i)) for i, k in enumerate(("kept", "kept", "fresh"))]
        for t in threads:
            t.start()
        time.sleep(1.5)
        shutil.copy(new_key, certs / "private.key.new")
        shutil.copy(new_cert, certs / "public.crt.new")
        os.replace(certs / "private.key.new", certs / "private.key")
        os.replace(certs / "public.crt.new", certs / "public.crt")
        counts_at_swap = dict(done)
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while served_serial(srv.port, srv.ca_file) == before:
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.2)
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not failures, failures[:5]
        assert done["kept"] > counts_at_swap["kept"] and done["fresh"] > counts_at_swap["fresh"], (counts_at_swap, done)
        srv.wait_log("TLS certificate reloaded")

        # A broken pair on disk: refused, logged, the previous certificate still served.
        serving = served_serial(srv.port, srv.ca_file)
        (certs / "private.key").write_bytes(make_certificates(tmp_path / "third")[2].read_bytes())
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "certificate reload refused" not in srv.log_text():
            assert time.monotonic() < deadline, "the broken pair was not reported"
            time.sleep(0.2)
        assert served_serial(srv.port, srv.ca_file) == serving
        assert srv.client().get_object(Bucket="swap", Key="kept-0/0")["Body"].read()
    finally:
        stop_server(srv)
    assert "Traceback" not in srv.log_text()


@pytest.mark.parametrize("problem", ["missing", "unreadable-pair"])
def test_a_bad_certs_dir_stops_the_start_with_a_clear_error(tmp_path: Path, problem: str):
    certs = tmp_path / "certs"
    if problem == "missing":
        certs.mkdir()
        expected = "no certificate at"
    else:
        _, cert, _ = make_certificates(certs)
        (certs / "private.key").write_bytes(make_certificates(tmp_path / "other")[2].read_bytes())
        expected = "cannot be used together"
    port = free_port()
    proc = subprocess.run([PYTHON, "-m", "buckets", "server", "--address", f"127.0.0.1:{port}",
                           "--certs-dir", str(certs), str(tmp_path / "d1")],
                          env=server_env(SERVER_SETTINGS), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "d1").exists() or not any((tmp_path / "d1").iterdir())  # nothing was formatted


def test_the_certificate_on_disk_is_what_is_served(tls: ServerProcess):
    served = served_serial(tls.port, tls.ca_file)
    from cryptography import x509

    on_disk = x509.load_pem_x509_certificate((Path(tls.ca_file).parent / "public.crt").read_bytes())
    assert served == on_disk.serial_number


def test_minio_sdk_over_https_with_customer_keys(tls: ServerProcess, bucket: str):
    """MinIO's Python SDK over HTTPS (Content-MD5 and UNSIGNED-PAYLOAD instead of a signed
    body hash) with SSE-C, which it only allows over TLS: an object sealed under the caller's
    key, unreadable without it, copied to a new key under another."""
    minio = pytest.importorskip("minio")
    import io
    import urllib3
    from urllib.parse import urlsplit

    from minio.commonconfig import CopySource
    from minio.error import S3Error
    from minio.sse import SseCustomerKey
    from minioclient import read_object

    http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=tls.ca_file)
    mc = minio.Minio(urlsplit(tls.endpoint).netloc, access_key=ROOT_USER, secret_key=ROOT_PASSWORD, secure=True,
                     region=REGION, http_client=http)
    key, other = SseCustomerKey(b"k" * 32), SseCustomerKey(b"o" * 32)
    body = os.urandom(6 * MIB + 5)
    mc.put_object(bucket, "sealed.bin", io.BytesIO(body), len(body), sse=key, part_size=5 * MIB)
    assert read_object(mc, bucket, "sealed.bin", ssec=key) == body
    with pytest.raises(S3Error) as refused:
        mc.get_object(bucket, "sealed.bin")
    assert refused.value.code == "InvalidRequest"
    mc.copy_object(bucket, "resealed.bin", CopySource(bucket, "sealed.bin", ssec=key), sse=other)
    assert read_object(mc, bucket, "resealed.bin", ssec=other) == body
    assert mc.stat_object(bucket, "resealed.bin", ssec=other).size == len(body)
