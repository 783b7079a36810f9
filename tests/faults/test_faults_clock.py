"""A node whose wall clock steps backwards between two writes of the same key.

It happens to real servers: a clock that ran ahead is corrected by NTP (or by hand) and jumps
back, often by minutes or hours, and the node restarts on the corrected time. An overwrite, a
delete, a new version after that step must still be the latest: the key's state is what the
last acknowledged write made it, not whatever carries the latest timestamp. Here the node's
first run is under libfaketime ten minutes ahead (S3 signatures allow 15 minutes of skew
between client and server), the second on the machine's clock.
"""

from __future__ import annotations

import glob

import pytest
from fault_campaign import BUCKET

FAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)

pytestmark = pytest.mark.skipif(FAKETIME is None, reason="libfaketime is not installed (make tools installs faketime)")


def test_writes_after_the_clock_steps_back_are_the_latest(servers, tally) -> None:
    disks = servers.disks(4)
    ahead = servers.start(disks, extra_env={"LD_PRELOAD": FAKETIME, "FAKETIME": "+600s"})
    s3 = ahead.client()
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    big = b"x" * 300_000
    for bucket in (BUCKET, "versioned"):
        s3.put_object(Bucket=bucket, Key="small", Body=b"before the step")
        s3.put_object(Bucket=bucket, Key="large", Body=big)
        s3.put_object(Bucket=bucket, Key="deleted-after", Body=b"here before the step")
    old_versions = {o["Key"]: o["VersionId"] for o in s3.list_object_versions(Bucket="versioned")["Versions"]}
    port = ahead.port
    assert ahead.stop() == 0
    tally.faults_injected += 1

    server = servers.start(disks, port=port)  # ten minutes earlier by its clock
    s3 = server.client()
    for bucket in (BUCKET, "versioned"):
        s3.put_object(Bucket=bucket, Key="small", Body=b"after the step")
        s3.put_object(Bucket=bucket, Key="large", Body=b"y" * 200_000)
        s3.delete_object(Bucket=bucket, Key="deleted-after")
        assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == b"after the step", bucket
        assert s3.get_object(Bucket=bucket, Key="large")["Body"].read() == b"y" * 200_000, bucket
        with pytest.raises(s3.exceptions.NoSuchKey):
            s3.get_object(Bucket=bucket, Key="deleted-after")
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert listed == ["large", "small"], (bucket, listed)
    versions = s3.list_object_versions(Bucket="versioned")
    latest = {o["Key"]: o["VersionId"] for o in versions["Versions"] if o["IsLatest"]}
    assert set(latest) == {"small", "large"}
    assert all(latest[k] != old_versions[k] for k in latest), (latest, old_versions)
    markers = [m for m in versions.get("DeleteMarkers", []) if m["IsLatest"]]
    assert [m["Key"] for m in markers] == ["deleted-after"]
    # the versions before the step are still there, and readable by id
    for key, vid in old_versions.items():
        body = s3.get_object(Bucket="versioned", Key=key, VersionId=vid)["Body"].read()
        assert body == {"small": b"before the step", "large": big, "deleted-after": b"here before the step"}[key]
    tally.faults_detected += 1
    tally.objects_written += 12
    tally.note("clock stepped back ten minutes across a restart: overwrites, deletes and new versions are the latest")
    assert server.stop() == 0
