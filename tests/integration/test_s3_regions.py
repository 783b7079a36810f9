"""Clients configured for any region, and a server whose operator made the region strict.

Users keep whatever default region their tools have (AWS_DEFAULT_REGION=eu-west-1, s3cmd's
`US`, rclone's `other-v2-signature`). Unless the operator asks for a strict region, the
server accepts any region in the SigV4 credential scope and any LocationConstraint, as
MinIO does without a configured region; it still reports its own region everywhere it
answers one (GetBucketLocation, HeadBucket, ListBuckets).
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

import rawhttp
from s3server import ServerProcess, empty_and_delete, error_of, new_bucket_name, start_tls_server, stop_server


def test_boto3_in_another_region(server, s3):
    eu = server.client(region="eu-west-1")
    name = new_bucket_name("eu")
    try:
        eu.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        eu.put_object(Bucket=name, Key="k", Body=b"from eu-west-1")
        assert eu.get_object(Bucket=name, Key="k")["Body"].read() == b"from eu-west-1"
        assert [o["Key"] for o in eu.list_objects_v2(Bucket=name)["Contents"]] == ["k"]
        upload_id = eu.create_multipart_upload(Bucket=name, Key="mp")["UploadId"]
        part = eu.upload_part(Bucket=name, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"part")
        eu.complete_multipart_upload(Bucket=name, Key="mp", UploadId=upload_id,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        presigner = server.client(region="eu-west-1", signature_version="s3v4")
        url = presigner.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "k"}, ExpiresIn=60)
        assert "eu-west-1" in url  # SigV4 query auth carries the client's region too
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read() == b"from eu-west-1"
        # The server still answers with its own region.
        assert eu.get_bucket_location(Bucket=name)["LocationConstraint"] is None  # us-east-1
        head = eu.head_bucket(Bucket=name)
        assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"
        # A wrong secret is still refused whatever the region.
        with pytest.raises(ClientError) as exc:
            server.client(region="eu-west-1", secret_key="wrong-secret").list_buckets()
        assert error_of(exc) == ("SignatureDoesNotMatch", 403)
    finally:
        empty_and_delete(s3, name)


def test_odd_region_names_in_the_scope(server, s3, bucket):
    """What other clients put in the scope: rclone's `other-v2-signature`, s3cmd's `US`."""
    for region in ("other-v2-signature", "US", "ap-south-1"):
        resp = rawhttp.request(server, "GET", f"/{bucket}", query="list-type=2", region=region)
        assert resp.status == 200, (region, resp.text)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    srv = start_tls_server(tmp_path_factory.mktemp("strict"), disks=2,
                           extra_env={"BUCKETS_REGION": "eu-central-1", "BUCKETS_REGION_STRICT": "on"})
    yield srv
    stop_server(srv)


def test_strict_region_refuses_others(strict_server: ServerProcess):
    good = strict_server.client(region="eu-central-1")
    name = new_bucket_name("strict")
    with pytest.raises(ClientError) as exc:
        good.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert error_of(exc) == ("IllegalLocationConstraintException", 400)
    good.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    try:
        assert good.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-central-1"
        # Signed for another region: refused, naming the region the server expects (botocore
        # would follow that hint and retry, so the request is sent by hand).
        resp = rawhttp.request(strict_server, "GET", f"/{name}", region="us-east-1")
        assert (resp.status, resp.code) == (400, "AuthorizationHeaderMalformed"), resp.text
        assert "<Region>eu-central-1</Region>" in resp.text
        assert rawhttp.request(strict_server, "GET", f"/{name}", region="eu-central-1").status == 200
        good.put_object(Bucket=name, Key="k", Body=b"strict")
        elsewhere = strict_server.client(region="us-west-2", signature_version="s3v4")
        url = elsewhere.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "k"}, ExpiresIn=60)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10, context=ssl._create_unverified_context())
        body = refused.value.read().decode()
        assert refused.value.code == 400 and "<Code>AuthorizationQueryParametersError</Code>" in body, body
    finally:
        empty_and_delete(good, name)
