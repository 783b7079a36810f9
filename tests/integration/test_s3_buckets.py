"""Service and bucket operations through boto3 against a real server process."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

import rawhttp
from s3server import empty_and_delete, error_of, new_bucket_name


def test_create_head_location_delete(s3):
    name = new_bucket_name()
    resp = s3.create_bucket(Bucket=name)
    assert resp["Location"] == f"/{name}"
    head = s3.head_bucket(Bucket=name)
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None  # us-east-1
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert name in names
    assert s3.delete_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=name)
    assert error_of(exc)[1] == 404
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_create_with_location_constraint(s3):
    """Without a strict region any constraint a client's configuration sends is accepted
    (MinIO's behaviour); the bucket then reports the server's region. The strict case is in
    test_s3_regions.py."""
    for region in ("us-east-1", "eu-west-1"):
        name = new_bucket_name()
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        try:
            assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None
        finally:
            empty_and_delete(s3, name)


def test_bucket_already_owned(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=bucket)
    assert error_of(exc) == ("BucketAlreadyOwnedByYou", 409)


@pytest.mark.parametrize("name", [
    "ab", "a" * 64, "UpperCase", "under_score", "-leading", "trailing-", "double..dot",
    "192.168.1.10", "xn--punycode", "dot.-dash",
])
def test_invalid_bucket_names(server, s3, name):
    # botocore refuses some of these names itself, so send a signed request by hand.
    resp = rawhttp.request(server, "PUT", f"/{name}")
    assert (resp.status, resp.code) == (400, "InvalidBucketName"), resp.text
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_delete_bucket_errors(s3, bucket):
    s3.put_object(Bucket=bucket, Key="keep", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert error_of(exc) == ("BucketNotEmpty", 409)
    assert s3.head_object(Bucket=bucket, Key="keep")["ContentLength"] == 1
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=new_bucket_name("missing"))
    assert error_of(exc) == ("NoSuchBucket", 404)


def test_list_buckets_pagination_and_prefix(server, s3):
    prefix = new_bucket_name("lb")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        s3.create_bucket(Bucket=name)
    try:
        resp = s3.list_buckets(Prefix=prefix)
        assert [b["Name"] for b in resp["Buckets"]] == names
        assert resp["Prefix"] == prefix
        seen, token = [], None
        while True:
            kwargs = {"Prefix": prefix, "MaxBuckets": 2}
            if token:
                kwargs["ContinuationToken"] = token
            page = s3.list_buckets(**kwargs)
            seen += [b["Name"] for b in page["Buckets"]]
            assert all(b["BucketRegion"] == "us-east-1" for b in page["Buckets"])
            token = page.get("ContinuationToken")
            if not token:
                break
        assert seen == names
        assert resp["Owner"]["ID"] and resp["Owner"]["DisplayName"]
        resp = rawhttp.request(server, "GET", "/", query="max-buckets=0")
        assert (resp.status, resp.code) == (400, "InvalidArgument")
    finally:
        for name in names:
            empty_and_delete(s3, name)


def test_get_bucket_versioning_is_unversioned(s3, bucket):
    resp = s3.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in resp


def test_unimplemented_subresource_is_501(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_website(Bucket=bucket)
    assert error_of(exc) == ("NotImplemented", 501)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_request_payment(Bucket=bucket, RequestPaymentConfiguration={"Payer": "Requester"})
    assert error_of(exc) == ("NotImplemented", 501)
