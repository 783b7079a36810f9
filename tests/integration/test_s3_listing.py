"""ListObjects v1/v2 and ListObjectVersions through boto3, compared against a Python model."""

from __future__ import annotations

import pytest

import rawhttp

KEYS = sorted({
    "a/1.txt", "a/2.txt", "a/b/3.txt", "a/b/c/4.txt", "b/5.txt", "c.txt", "d/6.txt", "d/7.txt",
    "d/e/8.txt", "e", "f/", "f/9", "g/10", "g/11", "h", "i/j/k", "Z-upper", "é-accent", "日本/語",
    "~tilde", "space key", "plus+key",
}, key=lambda k: k.encode())


@pytest.fixture(scope="module")
def listing_bucket(s3):
    from s3server import empty_and_delete, new_bucket_name

    name = new_bucket_name("list")
    s3.create_bucket(Bucket=name)
    for key in KEYS:
        s3.put_object(Bucket=name, Key=key, Body=key.encode())
    yield name
    empty_and_delete(s3, name)


def model(prefix: str = "", delimiter: str = "") -> tuple[list[str], list[str]]:
    """What S3 returns for the whole listing: (keys, common prefixes), binary order."""
    keys, prefixes = [], []
    for key in KEYS:
        if not key.startswith(prefix):
            continue
        if delimiter:
            idx = key.find(delimiter, len(prefix))
            if idx >= 0:
                cp = key[: idx + len(delimiter)]
                if cp not in prefixes:
                    prefixes.append(cp)
                continue
        keys.append(key)
    return keys, prefixes


def test_v2_full_listing_binary_order(s3, listing_bucket):
    resp = s3.list_objects_v2(Bucket=listing_bucket)
    assert [o["Key"] for o in resp["Contents"]] == KEYS
    assert resp["KeyCount"] == len(KEYS) and resp["IsTruncated"] is False
    assert "Owner" not in resp["Contents"][0]
    owned = s3.list_objects_v2(Bucket=listing_bucket, FetchOwner=True, MaxKeys=1)
    assert owned["Contents"][0]["Owner"]["ID"]


@pytest.mark.parametrize("prefix,delimiter,page", [
    ("", "/", 3), ("", "/", 1), ("a/", "/", 2), ("", "", 4), ("d", "/", 1), ("", "e", 2), ("a/b/", "", 1),
])
def test_v2_pagination_with_delimiter(s3, listing_bucket, prefix, delimiter, page):
    keys, prefixes = [], []
    token = None
    pages = 0
    while True:
        kwargs = {"Bucket": listing_bucket, "Prefix": prefix, "Delimiter": delimiter, "MaxKeys": page}
        if token:
            kwargs["ContinuationToken"] = token
        resp = s3.list_objects_v2(**kwargs)
        pages += 1
        got_keys = [o["Key"] for o in resp.get("Contents", [])]
        got_prefixes = [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
        assert resp["KeyCount"] == len(got_keys) + len(got_prefixes) <= page
        keys += got_keys
        prefixes += got_prefixes
        if not resp["IsTruncated"]:
            assert "NextContinuationToken" not in resp
            break
        token = resp["NextContinuationToken"]
        assert pages < 100
    assert (keys, prefixes) == model(prefix, delimiter)


@pytest.mark.parametrize("delimiter", ["/", ""])
def test_v1_pagination_and_next_marker(s3, listing_bucket, delimiter):
    keys, prefixes, marker = [], [], ""
    for _ in range(100):
        resp = s3.list_objects(Bucket=listing_bucket, Delimiter=delimiter, MaxKeys=3, Marker=marker)
        keys += [o["Key"] for o in resp.get("Contents", [])]
        prefixes += [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
        assert all("Owner" in o for o in resp.get("Contents", []))
        if not resp["IsTruncated"]:
            break
        if delimiter:
            marker = resp["NextMarker"]  # S3 sends NextMarker only with a delimiter
        else:
            assert "NextMarker" not in resp
            marker = resp["Contents"][-1]["Key"]
    assert (keys, prefixes) == model("", delimiter)


def test_paginators(s3, listing_bucket):
    for op in ("list_objects", "list_objects_v2"):
        pages = s3.get_paginator(op).paginate(Bucket=listing_bucket, Delimiter="/",
                                              PaginationConfig={"PageSize": 2})
        keys, prefixes = [], []
        for page in pages:
            keys += [o["Key"] for o in page.get("Contents", [])]
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert (keys, prefixes) == model("", "/"), op


def test_start_after_and_prefix(s3, listing_bucket):
    resp = s3.list_objects_v2(Bucket=listing_bucket, StartAfter="d/6.txt")
    assert [o["Key"] for o in resp["Contents"]] == [k for k in KEYS if k.encode() > b"d/6.txt"]
    assert resp["StartAfter"] == "d/6.txt"
    resp = s3.list_objects_v2(Bucket=listing_bucket, Prefix="g/")
    assert [o["Key"] for o in resp["Contents"]] == ["g/10", "g/11"]
    resp = s3.list_objects_v2(Bucket=listing_bucket, Prefix="nothing-here")
    assert resp["KeyCount"] == 0 and "Contents" not in resp


def test_max_keys_zero_and_cap(server, s3, listing_bucket):
    resp = s3.list_objects_v2(Bucket=listing_bucket, MaxKeys=0)
    assert resp["KeyCount"] == 0 and resp["IsTruncated"] is False and resp["MaxKeys"] == 0
    resp = s3.list_objects(Bucket=listing_bucket, MaxKeys=0)
    assert "Contents" not in resp and resp["IsTruncated"] is False
    resp = s3.list_objects_v2(Bucket=listing_bucket, MaxKeys=5000)
    assert resp["MaxKeys"] == 1000 and resp["KeyCount"] == len(KEYS)
    bad = rawhttp.request(server, "GET", f"/{listing_bucket}", query="list-type=2&max-keys=-1")
    assert (bad.status, bad.code) == (400, "InvalidArgument")
    bad = rawhttp.request(server, "GET", f"/{listing_bucket}", query="max-keys=abc")
    assert (bad.status, bad.code) == (400, "InvalidArgument")


def test_encoding_type_url(server, listing_bucket):
    resp = rawhttp.request(server, "GET", f"/{listing_bucket}", query="list-type=2&encoding-type=url&prefix=")
    assert resp.status == 200
    assert "<Key>space%20key</Key>" in resp.text
    assert "<Key>plus%2Bkey</Key>" in resp.text
    assert "<Key>%C3%A9-accent</Key>" in resp.text
    assert "<EncodingType>url</EncodingType>" in resp.text
    plain = rawhttp.request(server, "GET", f"/{listing_bucket}", query="list-type=2")
    assert "<Key>space key</Key>" in plain.text and "<Key>é-accent</Key>" in plain.text
    bad = rawhttp.request(server, "GET", f"/{listing_bucket}", query="list-type=2&encoding-type=base64")
    assert (bad.status, bad.code) == (400, "InvalidArgument")


def test_bad_continuation_token(server, listing_bucket):
    bad = rawhttp.request(server, "GET", f"/{listing_bucket}", query="list-type=2&continuation-token=garbage!!")
    assert (bad.status, bad.code) == (400, "InvalidArgument")


def test_list_object_versions_unversioned(s3, listing_bucket):
    resp = s3.list_object_versions(Bucket=listing_bucket)
    versions = resp["Versions"]
    assert [v["Key"] for v in versions] == KEYS
    assert all(v["VersionId"] == "null" and v["IsLatest"] for v in versions)
    assert "DeleteMarkers" not in resp
    keys, prefixes = [], []
    for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=listing_bucket, Delimiter="/", PaginationConfig={"PageSize": 2}):
        keys += [v["Key"] for v in page.get("Versions", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert (keys, prefixes) == model("", "/")


def test_listing_missing_bucket(s3):
    from botocore.exceptions import ClientError

    from s3server import error_of, new_bucket_name

    for call in (s3.list_objects, s3.list_objects_v2, s3.list_object_versions):
        with pytest.raises(ClientError) as exc:
            call(Bucket=new_bucket_name("missing"))
        assert error_of(exc) == ("NoSuchBucket", 404)
