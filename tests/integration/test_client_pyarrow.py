"""Apache Arrow's S3 filesystem (the AWS C++ SDK inside ``pyarrow``) and pandas on top of it,
as data-lake writers use them: Parquet datasets written and scanned, random reads of a
file's footer and columns, directory markers, copies, moves and recursive deletes.

A third S3 stack besides botocore and the Go clients: its own signer, its own multipart
writer (parts uploaded in the background while the table is still being written), and its own
range reads. What it left on the server is checked through boto3 as well.
"""

from __future__ import annotations

import io
import os
from urllib.parse import urlsplit

import pytest
from s3server import REGION, ROOT_PASSWORD, ROOT_USER, empty_and_delete, new_bucket_name

pa = pytest.importorskip("pyarrow")
pafs = pytest.importorskip("pyarrow.fs")
pq = pytest.importorskip("pyarrow.parquet")
ds = pytest.importorskip("pyarrow.dataset")
pd = pytest.importorskip("pandas")

MIB = 1024 * 1024


@pytest.fixture
def fs(server):
    parts = urlsplit(server.endpoint)
    return pafs.S3FileSystem(access_key=ROOT_USER, secret_key=ROOT_PASSWORD, endpoint_override=parts.netloc,
                             scheme=parts.scheme, region=REGION, allow_bucket_creation=True,
                             allow_bucket_deletion=True)


def table_of(rows: int, seed: int = 0) -> pa.Table:
    rng = pa.array(range(seed, seed + rows), type=pa.int64())
    return pa.table({"id": rng, "name": pa.array([f"name-{i:08d}" for i in range(seed, seed + rows)]),
                     "score": pa.array([(i * 7919 % 1000) / 10.0 for i in range(seed, seed + rows)])})


def test_parquet_dataset_write_scan_and_filter(fs, s3, bucket):
    """Three Parquet files (one big enough for a multipart upload), read back as a dataset
    with a filter and a column projection (range reads of footers and column chunks)."""
    tables = [table_of(1000, 0), table_of(2000, 1000), table_of(600_000, 3000)]
    for i, table in enumerate(tables):
        pq.write_table(table, f"{bucket}/lake/year=2026/part-{i}.parquet", filesystem=fs,
                       compression="none", row_group_size=100_000)
    big = s3.head_object(Bucket=bucket, Key="lake/year=2026/part-2.parquet")
    assert big["ContentLength"] > 10 * MIB

    dataset = ds.dataset(f"{bucket}/lake", filesystem=fs, format="parquet", partitioning="hive")
    assert dataset.count_rows() == sum(t.num_rows for t in tables)
    picked = dataset.to_table(columns=["id", "score"], filter=(ds.field("id") >= 299_990) & (ds.field("id") < 300_010))
    assert sorted(picked.column("id").to_pylist()) == list(range(299_990, 300_010))
    assert picked.column_names == ["id", "score"]

    whole = pq.read_table(f"{bucket}/lake/year=2026/part-1.parquet", filesystem=fs)
    assert whole.equals(tables[1])

    infos = fs.get_file_info(pafs.FileSelector(f"{bucket}/lake", recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    assert files == [f"{bucket}/lake/year=2026/part-{i}.parquet" for i in range(3)]
    assert any(i.path == f"{bucket}/lake/year=2026" and i.type == pafs.FileType.Directory for i in infos)


def test_random_reads_streams_copy_move_and_delete_dir(fs, s3, bucket):
    data = os.urandom(9 * MIB + 321)
    with fs.open_output_stream(f"{bucket}/raw/blob.bin") as out:
        for start in range(0, len(data), 1 << 20):
            out.write(data[start:start + (1 << 20)])
    assert s3.get_object(Bucket=bucket, Key="raw/blob.bin")["Body"].read() == data

    with fs.open_input_file(f"{bucket}/raw/blob.bin") as f:
        assert f.size() == len(data)
        assert f.read_at(100, 5 * MIB - 50) == data[5 * MIB - 50:5 * MIB + 50]
        f.seek(len(data) - 10)
        assert f.read() == data[-10:]

    fs.copy_file(f"{bucket}/raw/blob.bin", f"{bucket}/raw/copy.bin")
    fs.move(f"{bucket}/raw/copy.bin", f"{bucket}/moved/blob.bin")
    info = fs.get_file_info([f"{bucket}/raw/copy.bin", f"{bucket}/moved/blob.bin"])
    assert info[0].type == pafs.FileType.NotFound and info[1].size == len(data)
    with fs.open_input_stream(f"{bucket}/moved/blob.bin") as f:
        assert f.read() == data

    fs.create_dir(f"{bucket}/empty/dir")
    assert fs.get_file_info(f"{bucket}/empty/dir").type == pafs.FileType.Directory
    fs.delete_dir(f"{bucket}/raw")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert not any(k.startswith("raw/") for k in keys) and "moved/blob.bin" in keys


def test_pandas_round_trips(fs, s3, server):
    """pandas writing and reading Parquet and CSV through the filesystem; a bucket the
    filesystem creates and deletes itself."""
    name = new_bucket_name("pa")
    fs.create_dir(name)
    try:
        frame = pd.DataFrame({"city": ["Oslo", "Lima", "Pune", "Kobe"] * 2500,
                              "temp": [float(i % 40) for i in range(10_000)],
                              "day": pd.date_range("2026-01-01", periods=10_000, freq="h")})
        frame.to_parquet(f"{name}/weather.parquet", filesystem=fs)
        back = pd.read_parquet(f"{name}/weather.parquet", filesystem=fs)
        pd.testing.assert_frame_equal(back, frame)
        means = pd.read_parquet(f"{name}/weather.parquet", filesystem=fs, columns=["city", "temp"]) \
            .groupby("city")["temp"].mean()
        assert means.to_dict() == frame.groupby("city")["temp"].mean().to_dict()

        with fs.open_output_stream(f"{name}/weather.csv") as out:
            out.write(frame.to_csv(index=False).encode())
        with fs.open_input_stream(f"{name}/weather.csv") as f:
            again = pd.read_csv(io.BytesIO(f.read()), parse_dates=["day"])
        pd.testing.assert_frame_equal(again, frame, check_dtype=False)
        fs.delete_dir_contents(name)
        fs.delete_dir(name)
        assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    finally:
        try:
            empty_and_delete(s3, name)
        except Exception:  # noqa: BLE001 - deleted by the test already
            pass
