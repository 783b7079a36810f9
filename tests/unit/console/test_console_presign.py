"""Share links (buckets.console.presign): the same presigned GET URL botocore makes for the
same credentials, time, host and key (the server's verifier is tested against botocore's
URLs in the integration suite), and bounded expiries."""

from __future__ import annotations

import datetime
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from buckets.console.presign import presigned_get_url

MOMENT = datetime.datetime(2026, 11, 30, 12, 34, 56, tzinfo=datetime.timezone.utc)


def botocore_url(monkeypatch, endpoint: str, path: str, access_key: str, secret: str, expires: int) -> str:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: MOMENT.replace(tzinfo=None))
    request = AWSRequest(method="GET", url=endpoint + path)
    S3SigV4QueryAuth(Credentials(access_key, secret), "s3", "us-east-1", expires=expires).add_auth(request)
    return request.prepare().url


@pytest.mark.parametrize(("bucket", "key"), [
    ("photos", "cat.jpg"),
    ("photos", "2026/holiday photos/été #1 (copy)+%.jpg"),
    ("my.bucket-1", "a//b/./c~d"),
])
@pytest.mark.parametrize(("endpoint", "host"), [
    ("http://127.0.0.1:9000", "127.0.0.1:9000"),
    ("https://s3.example.com", "s3.example.com"),
])
def test_same_url_as_botocore(monkeypatch, bucket: str, key: str, endpoint: str, host: str) -> None:
    ours = presigned_get_url(endpoint=endpoint, host=host, bucket=bucket, key=key, access_key="alice",
                             secret="alice-secret-key", region="us-east-1", expires=3600, now=MOMENT)
    from urllib.parse import quote

    path = "/" + bucket + "/" + quote(key, safe="/~")
    theirs = botocore_url(monkeypatch, endpoint, path, "alice", "alice-secret-key", 3600)
    assert urlsplit(ours).path == urlsplit(theirs).path
    assert dict(parse_qsl(urlsplit(ours).query)) == dict(parse_qsl(urlsplit(theirs).query))


def test_the_url_names_the_user_and_lifetime_but_not_the_secret() -> None:
    url = presigned_get_url(endpoint="http://h:1", host="h:1", bucket="b", key="k", access_key="alice",
                            secret="alice-secret-key", region="eu-west-1", expires=60, now=MOMENT)
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["X-Amz-Credential"] == "alice/20261130/eu-west-1/s3/aws4_request"
    assert query["X-Amz-Expires"] == "60" and query["X-Amz-Date"] == "20261130T123456Z"
    assert "alice-secret-key" not in url


@pytest.mark.parametrize("expires", [0, -1, 604801])
def test_expiry_bounds(expires: int) -> None:
    with pytest.raises(ValueError):
        presigned_get_url(endpoint="http://h", host="h", bucket="b", key="k", access_key="a", secret="s",
                          region="us-east-1", expires=expires)
