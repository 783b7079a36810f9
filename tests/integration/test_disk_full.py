"""A store whose disks fill up: new data is refused with ``507 StorageFull`` (not a 503 that
SDKs retry) once the disks reach their free-space reserve (``--disk-reserve``), and what frees
space still works: reads, listings, DeleteObject, DeleteObjects, aborting an upload. Space a
deletion freed takes writes again (once its data is gone, just after the answer); a restart
of a full node serves as before.

Real filesystems that fill: each disk is a 24 MiB tmpfs (needs root and mount; skipped
where that is not allowed). Before the reserve, a disk filled to its last block refused the
delete markers too: nothing could be freed through S3. In `make test`: about 5 s."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from buckets.admin.client import AdminClient
from s3server import ROOT_PASSWORD, ROOT_USER, error_of, start_server, stop_server
from smalldisks import put_once_freed
from smalldisks import small_disks as mounted_disks

MiB = 1 << 20
DISKS = 4


@pytest.fixture
def small_disks(tmp_path: Path):
    with mounted_disks([tmp_path / "data" / f"disk{i}" for i in range(1, DISKS + 1)], 24):
        yield tmp_path


def _fill(s3, bucket: str, prefix: str, size: int, limit: int) -> tuple[list[str], ClientError]:
    """PUT ``size``-byte objects until one is refused: the keys stored and the refusal."""
    stored = []
    for i in range(limit):
        key = f"{prefix}/{i:04d}"
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(size))
        except ClientError as refused:
            return stored, refused
        stored.append(key)
    raise AssertionError(f"{limit} objects of {size} bytes went into 4 x 24 MiB disks")


def _staged(data: Path) -> list[str]:
    return [str(p) for disk in data.iterdir() for p in (disk / ".buckets.sys" / "tmp").rglob("*") if p.is_file()]


def test_a_full_store_refuses_new_data_with_507_and_still_deletes(small_disks: Path) -> None:
    srv = start_server(small_disks)
    try:
        s3 = srv.client()  # boto3's defaults: it retries 503s, not a 507
        s3.create_bucket(Bucket="full")
        s3.put_object(Bucket="full", Key="kept-small", Body=b"k" * 3000)  # a record in each disk's log
        upload = s3.create_multipart_upload(Bucket="full", Key="multi")["UploadId"]  # begun with room
        big, refused = _fill(s3, "full", "big", MiB, 200)
        assert len(big) >= 20, len(big)
        assert error_of_client(refused) == ("StorageFull", 507), refused.response
        message = refused.response["Error"]["Message"]
        assert "storage is full" in message and str(small_disks) not in message  # no server paths
        refused_key = f"big/{len(big):04d}"
        log = srv.wait_log(f"PUT /full/{refused_key} 507")
        assert log.count(f"PUT /full/{refused_key} 507") == 1  # asked once: not retried
        with pytest.raises(ClientError) as gone:
            s3.head_object(Bucket="full", Key=refused_key)
        assert error_of(gone)[1] == 404  # nothing of the refused PUT stands
        assert _staged(small_disks / "data") == []
        # Small objects (records in the disks' logs) fill what a large one's pieces left (if any), then stop.
        small, refused = _fill(s3, "full", "small", 2000, 2000)
        assert error_of_client(refused) == ("StorageFull", 507), refused.response
        # The operator sees why in `buckets-admin info`: the disks that refused (at least two of
        # four, or the quorum of 3 would have held) are "full", every disk near its reserve.
        info = AdminClient(srv.endpoint, ROOT_USER, ROOT_PASSWORD).call("GET", "info")
        assert sum(d["state"] == "full" for d in info["disks"]) >= 2, info["disks"]
        assert all(d["free"] < d["reserve"] + 2 * MiB for d in info["disks"]), info["disks"]
        # A new multipart upload is refused at its start: its record is new data, kept out of
        # the reserve (its parts would be refused anyway). The one begun before: its part is refused.
        with pytest.raises(ClientError) as created:
            s3.create_multipart_upload(Bucket="full", Key="multi-new")
        assert error_of(created) == ("StorageFull", 507)
        assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="full").get("Uploads", [])] == [upload]
        with pytest.raises(ClientError) as part:
            s3.upload_part(Bucket="full", Key="multi", UploadId=upload, PartNumber=1, Body=os.urandom(MiB))
        assert error_of(part) == ("StorageFull", 507)

        # A metadata change is not new data: a small object's records are written again, in the reserve.
        s3.put_object_tagging(Bucket="full", Key="kept-small", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
        assert s3.get_object_tagging(Bucket="full", Key="kept-small")["TagSet"] == [{"Key": "k", "Value": "v"}]
        assert s3.get_object(Bucket="full", Key="kept-small")["Body"].read() == b"k" * 3000

        # Everything stored reads back, and the listing is whole.
        assert len(s3.get_object(Bucket="full", Key=big[0])["Body"].read()) == MiB
        listed = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="full")
                  for o in page.get("Contents", [])]
        assert listed == sorted(big + small + ["kept-small"])

        # What frees space works on a full store, and the space is taken again once freed.
        s3.abort_multipart_upload(Bucket="full", Key="multi", UploadId=upload)
        s3.delete_object(Bucket="full", Key=big[0])
        deleted = s3.delete_objects(Bucket="full", Delete={"Objects": [{"Key": k} for k in big[1:8] + small]})
        assert "Errors" not in deleted, deleted["Errors"][:3]
        for key in (big[0], big[7], *small[:1]):
            with pytest.raises(ClientError) as gone:
                s3.head_object(Bucket="full", Key=key)
            assert error_of(gone)[1] == 404
        # A write right after the deletions' answers finds their space: while a store refuses
        # writes for space, a deletion answers once its data is gone (engine/space.py).
        s3.put_object(Bucket="full", Key="after-delete", Body=b"z" * MiB)
        assert s3.get_object(Bucket="full", Key="after-delete")["Body"].read() == b"z" * MiB
        _, refused = _fill(s3, "full", "again", MiB, 200)  # full again
        assert error_of_client(refused) == ("StorageFull", 507)
    finally:
        stop_server(srv)

    # A full node starts and serves: reads, a deletion, and a write into the space it freed.
    srv = start_server(small_disks)
    try:
        s3 = srv.client()
        assert len(s3.get_object(Bucket="full", Key=big[-1])["Body"].read()) == MiB
        for key in big[-4:]:  # 2 MiB a disk: above the registry disk's reserve and its margin
            s3.delete_object(Bucket="full", Key=key)
        put_once_freed(s3, "full", "after-restart", b"r" * 1000)
        assert s3.get_object(Bucket="full", Key="after-restart")["Body"].read() == b"r" * 1000
    finally:
        stop_server(srv)


def test_the_registrys_disk_at_its_reserve_stops_new_objects(tmp_path: Path) -> None:
    """The registry's disk smaller than the others: once it is at its reserve, new objects are
    refused although the other disks could take their shards (a write degraded to 3 of 4 disks
    would grow the registry into the space its disk keeps for deletions), and deletions go on."""
    data = tmp_path / "data"
    with mounted_disks([data / f"disk{i}" for i in range(1, DISKS + 1)], [12, 32, 32, 32]):
        srv = start_server(tmp_path)
        try:
            s3 = srv.client()
            s3.create_bucket(Bucket="lopsided")
            if not (data / "disk1" / ".buckets.sys" / "registry").is_dir():
                pytest.skip("the registry went to another disk")
            stored, refused = _fill(s3, "lopsided", "obj", 256 << 10, 400)
            assert error_of_client(refused) == ("StorageFull", 507), refused.response
            free = {d.name: os.statvfs(d).f_bavail * os.statvfs(d).f_frsize for d in sorted(data.iterdir())}
            assert free["disk2"] > 8 * MiB and free["disk1"] < 2 * MiB, free  # the small one is what stopped it
            s3.delete_objects(Bucket="lopsided", Delete={"Objects": [{"Key": k} for k in stored[:20]]})
            listed = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lopsided")
                      for o in page.get("Contents", [])]
            assert listed == stored[20:]
            assert len(s3.get_object(Bucket="lopsided", Key=stored[-1])["Body"].read()) == 256 << 10
        finally:
            stop_server(srv)


def error_of_client(error: ClientError) -> tuple[str, int]:
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


def _fill_to_the_last_block(disk: Path) -> Path:
    """What another program does to a file system it shares with the store: a file that takes
    every free block."""
    filler = disk / "someone-elses-file"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 64 << 10, 4096):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


def _ballasts(data: Path) -> list[int]:
    return [(d / ".buckets.sys" / "ballast").stat().st_size if (d / ".buckets.sys" / "ballast").exists() else 0
            for d in sorted(data.iterdir())]


def test_disks_filled_by_another_program_still_delete(small_disks: Path) -> None:
    """The reserve holds back only the store's own data: another program can fill the file
    systems to their last block, and then a deletion's records had no room (DeleteObjects
    answered "Write quorum lost: 0 of 4 disks stored the delete marker" for every key). Each disk keeps a ballast (a quarter of its
    reserve) that the first write finding no space releases; the deletions go into that space,
    and the ballast comes back once the file system has room again."""
    data = small_disks / "data"
    srv = start_server(small_disks)
    try:
        s3 = srv.client()
        s3.create_bucket(Bucket="shared")
        keys = [f"obj/{i}" for i in range(6)]
        for i, key in enumerate(keys):
            s3.put_object(Bucket="shared", Key=key, Body=os.urandom(MiB if i % 2 else 3000))
        many = [f"many/{i:03d}" for i in range(400)]  # their deletion's records take new blocks
        for key in many:
            s3.put_object(Bucket="shared", Key=key, Body=b"m" * 2000)
        deadline = time.monotonic() + 15
        while 0 in _ballasts(data) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(300_000 < b <= 16 * MiB for b in _ballasts(data)), _ballasts(data)  # 24 MiB x 5% / 4
        fillers = [_fill_to_the_last_block(d) for d in sorted(data.iterdir())]
        assert all(os.statvfs(d).f_bavail < 8 for d in data.iterdir())
        s3.delete_object(Bucket="shared", Key=keys[0])
        deleted = s3.delete_objects(Bucket="shared", Delete={"Objects": [{"Key": k} for k in keys[1:4] + many]})
        assert "Errors" not in deleted, deleted["Errors"][:3]
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket="shared").get("Contents", [])]
        assert listed == keys[4:]
        assert len(s3.get_object(Bucket="shared", Key=keys[5])["Body"].read()) == MiB
        assert "released its" in srv.wait_log("released its")
        with pytest.raises(ClientError) as refused:  # new data has no room, and says so
            s3.put_object(Bucket="shared", Key="new", Body=os.urandom(MiB))
        assert error_of(refused) == ("StorageFull", 507)
        for filler in fillers:
            filler.unlink()
        deadline = time.monotonic() + 15  # the disk monitor makes the ballasts again
        while 0 in _ballasts(data) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert 0 not in _ballasts(data), _ballasts(data)
        put_once_freed(s3, "shared", "new", b"n" * MiB)
    finally:
        stop_server(srv)
