"""JavaScript clients against a real server, with their default settings.

* The AWS SDK for JavaScript v3 (``@aws-sdk/client-s3``, ``lib-storage``, the presigner):
  CRC32 checksums on every upload, aws-chunked bodies with a trailing checksum for streams,
  multipart uploads of four parts in flight, response checksums validated (``js/scenario.mjs``).
* MinIO's JavaScript client (``minio``): its own signer, streams of unknown length cut into
  parts, partial reads, copies, tags, batch deletes (``js/minio.mjs``).

Node.js runs each scenario (``make tools`` installs the packages); the test checks its
report, and what it left on the server, through boto3.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from s3server import REGION, ROOT_PASSWORD, ROOT_USER, new_bucket_name

JS = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "@aws-sdk" / "client-s3").is_dir(),
    reason="Node.js or the AWS SDK for JavaScript is not installed (make tools installs them)")


def run_scenario(server, script: str, bucket: str) -> dict:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "BUCKETS_ENDPOINT": server.endpoint, "BUCKETS_KEY": ROOT_USER, "BUCKETS_SECRET": ROOT_PASSWORD,
           "BUCKETS_REGION": REGION, "BUCKETS_BUCKET": bucket}
    proc = subprocess.run([NODE, str(JS / script)], capture_output=True, text=True, env=env, timeout=300, cwd=JS)
    assert proc.returncode == 0, f"the JavaScript scenario {script} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_javascript_sdk_scenario(server, s3):
    name = new_bucket_name("js")
    seen = run_scenario(server, "scenario.mjs", name)

    assert seen["listed_bucket"] is True
    assert seen["put_etag"] == '"' + hashlib.md5(b"hello from javascript").hexdigest() + '"'
    assert seen["put_crc32"]  # the SDK sent a CRC32, the server echoed it
    assert (seen["get_body"], seen["get_type"]) == ("hello from javascript", "text/plain")
    assert seen["get_crc32"] == seen["put_crc32"]
    assert seen["head_metadata"] == {"origin": "node"}
    assert seen["streamed_equal"] is True
    assert seen["range_equal"] is True and seen["range_header"] == f"bytes 1048570-1048579/{3 * 1024 * 1024 + 17}"
    assert seen["multipart_etag"].strip('"').endswith("-3")
    assert seen["multipart_md5_equal"] is True
    assert seen["keys"] == ["dir/big.bin", "dir/copy.txt", "hello.txt", *[f"many/{i}" for i in range(7)], "streamed.bin"]
    assert seen["prefixes"] == ["dir/", "many/"]
    assert seen["second_create"] == "PreconditionFailed 412"
    assert seen["presigned_body"] == "hello from javascript"
    assert seen["missing"] == "NoSuchKey 404"
    assert (seen["deleted"], seen["delete_errors"]) == (12, 0)  # the 11 listed and "once"
    assert seen["done"] is True
    assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


@pytest.mark.skipif(not (JS / "node_modules" / "minio").is_dir(), reason="minio-js is not installed (make tools)")
def test_the_minio_javascript_client_scenario(server, s3):
    name = new_bucket_name("mjs")
    seen = run_scenario(server, "minio.mjs", name)
    assert seen["exists"] is True
    assert seen["put"]["etag"] == hashlib.md5(b"hello from minio-js").hexdigest()
    assert seen["stat"] == {"size": 19, "type": "text/plain", "origin": "minio-js"}
    assert seen["small_back"] == "hello from minio-js"
    assert seen["big_etag"].endswith("-3"), seen["big_etag"]  # a 40 MiB stream in 16 MiB parts
    assert seen["big_equal"] is True and seen["partial_equal"] is True
    assert seen["listed"] == ["dir/big.bin", "dir/copy.txt", "small.txt"]
    assert sorted(seen["top"]) == ["dir/", "small.txt"]  # the client yields keys, then prefixes
    assert seen["presigned_body"] == "hello from minio-js"
    assert seen["tags"] == [{"Key": "kind", "Value": "test"}]
    assert seen["after_delete"] == []
    assert seen["missing"] == "NotFound"
    assert seen["done"] is True
    assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
