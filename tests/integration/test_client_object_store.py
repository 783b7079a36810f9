"""Rust's ``object_store`` (the S3 client of DataFusion, Polars and delta-rs), through its
Python bindings ``obstore``, through Polars and through delta-rs (``deltalake``), as data
engineers use them.

A fourth S3 stack besides botocore, the Go and the C++ ones: reqwest for HTTP, its own
SigV4 signer, multipart writes of its own part size, conditional puts (``If-None-Match:
*`` and ``If-Match``: how delta-rs and friends commit without a lock service), ranged and
suffix reads, listings with and without a delimiter. What it left on the server is checked
through boto3 as well.
"""

from __future__ import annotations

import hashlib
import io
import os
from urllib.parse import urlsplit

import pytest
from s3server import REGION, ROOT_PASSWORD, ROOT_USER

obstore = pytest.importorskip("obstore")
pl = pytest.importorskip("polars")
from obstore.store import S3Store  # noqa: E402

MIB = 1024 * 1024


def options(server) -> dict[str, str]:
    return {"aws_access_key_id": ROOT_USER, "aws_secret_access_key": ROOT_PASSWORD, "aws_region": REGION,
            "aws_endpoint": server.endpoint, "aws_allow_http": "true", "aws_virtual_hosted_style_request": "false"}


@pytest.fixture
def store(server, bucket):
    parts = urlsplit(server.endpoint)
    return S3Store(bucket, endpoint=server.endpoint, region=REGION, access_key_id=ROOT_USER,
                   secret_access_key=ROOT_PASSWORD, client_options={"allow_http": parts.scheme == "http"},
                   virtual_hosted_style_request=False)


def test_puts_gets_ranges_and_listings(store, s3, bucket):
    obstore.put(store, "a/one.txt", b"first object")
    big = os.urandom(23 * MIB + 7)
    obstore.put(store, "a/big.bin", io.BytesIO(big), chunk_size=5 * MIB)  # a multipart upload
    head = s3.head_object(Bucket=bucket, Key="a/big.bin")
    assert head["ContentLength"] == len(big)

    assert obstore.get(store, "a/one.txt").bytes().to_bytes() == b"first object"
    got = obstore.get(store, "a/big.bin")
    assert hashlib.md5(got.bytes().to_bytes()).digest() == hashlib.md5(big).digest()
    assert obstore.get_range(store, "a/big.bin", start=10 * MIB - 3, end=10 * MIB + 3).to_bytes() == \
        big[10 * MIB - 3:10 * MIB + 3]
    ranges = obstore.get_ranges(store, "a/big.bin", starts=[0, 5 * MIB, 20 * MIB], ends=[10, 5 * MIB + 10, 20 * MIB + 10])
    assert [r.to_bytes() for r in ranges] == [big[0:10], big[5 * MIB:5 * MIB + 10], big[20 * MIB:20 * MIB + 10]]
    meta = obstore.head(store, "a/big.bin")
    assert meta["size"] == len(big)

    for i in range(5):
        obstore.put(store, f"a/sub/{i}.txt", f"item {i}".encode())
    listed = sorted(m["path"] for batch in obstore.list(store, prefix="a/") for m in batch)
    assert listed == ["a/big.bin", "a/one.txt", *[f"a/sub/{i}.txt" for i in range(5)]]
    delimited = obstore.list_with_delimiter(store, prefix="a/")
    assert delimited["common_prefixes"] == ["a/sub"]
    assert sorted(m["path"] for m in delimited["objects"]) == ["a/big.bin", "a/one.txt"]

    obstore.copy(store, "a/one.txt", "b/copy.txt")
    obstore.rename(store, "b/copy.txt", "b/renamed.txt")
    assert obstore.get(store, "b/renamed.txt").bytes().to_bytes() == b"first object"
    obstore.delete(store, [f"a/sub/{i}.txt" for i in range(5)])
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == \
        ["a/big.bin", "a/one.txt", "b/renamed.txt"]


def test_conditional_puts_commit_without_a_lock(store, s3, bucket):
    """``mode="create"`` is ``If-None-Match: *`` (a second writer of the same log entry
    loses), and an update conditioned on the ETag read loses to an update in between:
    the primitives delta-rs, Iceberg and SlateDB build their commits on."""
    obstore.put(store, "log/00001.json", b'{"commit": 1}', mode="create")
    with pytest.raises(Exception) as lost:
        obstore.put(store, "log/00001.json", b'{"commit": "other"}', mode="create")
    assert "AlreadyExists" in type(lost.value).__name__ or "already exists" in str(lost.value).lower(), lost.value
    assert obstore.get(store, "log/00001.json").bytes().to_bytes() == b'{"commit": 1}'

    first = obstore.put(store, "state", b"v1")
    second = obstore.put(store, "state", b"v2", mode={"e_tag": first["e_tag"]})
    with pytest.raises(Exception) as stale:
        obstore.put(store, "state", b"v3", mode={"e_tag": first["e_tag"]})
    assert "Precondition" in type(stale.value).__name__ or "precondition" in str(stale.value).lower(), stale.value
    assert obstore.get(store, "state").bytes().to_bytes() == b"v2"
    assert second["e_tag"] != first["e_tag"]


def test_polars_writes_and_scans_parquet(server, s3, bucket):
    frame = pl.DataFrame({"id": list(range(50_000)), "name": [f"n{i}" for i in range(50_000)],
                          "score": [i % 97 / 3 for i in range(50_000)]})
    frame.write_parquet(f"s3://{bucket}/polars/data.parquet", storage_options=options(server))
    assert s3.head_object(Bucket=bucket, Key="polars/data.parquet")["ContentLength"] > 0
    back = pl.read_parquet(f"s3://{bucket}/polars/data.parquet", storage_options=options(server))
    assert back.equals(frame)
    picked = (pl.scan_parquet(f"s3://{bucket}/polars/*.parquet", storage_options=options(server))
              .filter(pl.col("id") % 10_000 == 0).select("id", "score").collect())
    assert picked["id"].to_list() == [0, 10_000, 20_000, 30_000, 40_000]


def test_delta_lake_commits_from_racing_writers(server, s3, bucket):
    """delta-rs (``deltalake``) commits each table version as a conditional put of its log
    entry (``AWS_CONDITIONAL_PUT=etag``: no lock service, no unsafe rename). Four writers
    appending at once all get in, each in its own version, none lost or doubled."""
    deltalake = pytest.importorskip("deltalake")
    pa = pytest.importorskip("pyarrow")
    import threading

    opts = {"AWS_ACCESS_KEY_ID": ROOT_USER, "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD, "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": server.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_CONDITIONAL_PUT": "etag"}
    uri = f"s3://{bucket}/tables/events"
    rows = pa.table({"id": list(range(100)), "writer": ["first"] * 100})
    deltalake.write_deltalake(uri, rows, storage_options=opts)
    errors: list[str] = []

    def append(n: int) -> None:
        try:
            deltalake.write_deltalake(uri, pa.table({"id": list(range(100)), "writer": [f"w{n}"] * 100}),
                                      mode="append", storage_options=opts)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    writers = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    assert errors == []
    table = deltalake.DeltaTable(uri, storage_options=opts)
    assert table.version() == 4
    counts = table.to_pyarrow_table().group_by("writer").aggregate([("id", "count")]).to_pylist()
    assert sorted((c["writer"], c["id_count"]) for c in counts) == \
        [("first", 100)] + [(f"w{n}", 100) for n in range(4)]
    log = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="tables/events/_delta_log/")["Contents"])
    assert log == [f"tables/events/_delta_log/{v:020d}.json" for v in range(5)]
