"""Checks shared by the degraded-mode tests: read everything back, and prove that a write
refused for lost quorum is a clean 503 SlowDown that left nothing behind."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from fault_campaign import BUCKET, Written
from fault_disks import files_of_key, staging_entries, upload_files
from fault_load import KiB, MiB, LoadStats, check_read, content

SMALL_SET = [1, 64 * KiB, 128 * KiB + 1, MiB, 2 * MiB + 5]


def read_all_ok(client, written: Written) -> LoadStats:
    stats = LoadStats()
    for key in written.keys:
        check_read(client, written.ledger, stats, BUCKET, key)
    return stats


def assert_quorum_lost(call) -> str:
    with pytest.raises(ClientError) as excinfo:
        call()
    response = excinfo.value.response
    status = response["ResponseMetadata"]["HTTPStatusCode"]
    code, message = response["Error"]["Code"], response["Error"].get("Message", "")
    assert (status, code) == (503, "SlowDown"), f"expected 503 SlowDown, got {status} {code}: {message}"
    assert "quorum" in message.lower(), f"the message must say the write quorum is lost: {message!r}"
    return message


def failed_writes_leave_nothing(client, disks, key_prefix: str) -> list[str]:
    """Try every kind of write; each must fail with quorum lost and leave no file behind."""
    messages = []
    small, large = f"{key_prefix}/small", f"{key_prefix}/large"
    messages.append(assert_quorum_lost(lambda: client.put_object(Bucket=BUCKET, Key=small, Body=b"s" * 1000)))
    messages.append(assert_quorum_lost(
        lambda: client.put_object(Bucket=BUCKET, Key=large, Body=content(large, 1, 3 * MiB))))
    messages.append(assert_quorum_lost(lambda: client.create_bucket(Bucket="never-made")))
    # A multipart upload's record goes on a write quorum of its disks (a registry rebuild's
    # source), so CreateMultipartUpload is refused as a PUT is, and leaves nothing either.
    before = set(upload_files(disks))
    messages.append(assert_quorum_lost(lambda: client.create_multipart_upload(Bucket=BUCKET, Key=f"{key_prefix}/mp")))
    assert set(upload_files(disks)) == before, "a refused CreateMultipartUpload left files behind"
    assert not [u for u in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
                if u["Key"].startswith(key_prefix)], "a refused CreateMultipartUpload is listed"
    for key in (small, large):
        assert files_of_key(disks, BUCKET, key) == [], f"a refused PUT of {key} left files behind"
        with pytest.raises(ClientError) as excinfo:
            client.head_object(Bucket=BUCKET, Key=key)
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=key_prefix).get("Contents", [])]
    assert listed == [], f"refused writes are listed: {listed}"
    assert "never-made" not in [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert staging_entries([d for d in disks if d.is_dir()]) == [], "staging not cleaned after refused writes"
    return messages
