"""The AWS SDK for JavaScript v3 (``@aws-sdk/client-s3``, ``lib-storage``, the presigner)
against a real server, with the SDK's default settings: CRC32 checksums on every upload,
aws-chunked bodies with a trailing checksum for streams, multipart uploads of four parts in
flight, response checksums validated. The scenario is ``js/scenario.mjs`` (Node.js; ``make
tools`` installs its packages); this test runs it and checks its report, and what it left
on the server, through boto3.
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


def test_the_javascript_sdk_scenario(server, s3):
    name = new_bucket_name("js")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "BUCKETS_ENDPOINT": server.endpoint, "BUCKETS_KEY": ROOT_USER, "BUCKETS_SECRET": ROOT_PASSWORD,
           "BUCKETS_REGION": REGION, "BUCKETS_BUCKET": name}
    proc = subprocess.run([NODE, str(JS / "scenario.mjs")], capture_output=True, text=True, env=env, timeout=300,
                          cwd=JS)
    assert proc.returncode == 0, f"the JavaScript scenario failed:\n{proc.stdout}\n{proc.stderr}"
    seen = json.loads(proc.stdout.strip().splitlines()[-1])

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
