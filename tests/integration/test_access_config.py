"""The configuration APIs of access control through boto3 (and ``buckets-admin``), against a
real server: bucket policies, ACLs, ownership controls, the public access block,
``x-amz-expected-bucket-owner``, bucket-name ownership, ListBuckets per user, settings
surviving a restart, and the admin CLI's policy commands. Bad input gets its S3 error and
changes nothing: each refusal is followed by a look at what is stored.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import rawhttp
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from s3server import (REGION, ROOT_PASSWORD, ROOT_USER, ServerProcess, error_of, new_bucket_name, start_server,
                      stop_server)
from serverproc import BIN, no_new_tracebacks

from buckets.admin.client import AdminCallError, AdminClient
from buckets.iam.identity import account_id, canonical_id

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
OWNER, OWNER_SECRET = "cfg-owner", "cfg-owner-secret"
OTHER, OTHER_SECRET = "cfg-other", "cfg-other-secret"
READER, READER_SECRET = "cfg-reader", "cfg-reader-secret"
WRITER, WRITER_SECRET = "cfg-writer", "cfg-writer-secret"


# --------------------------------------------------------------------------------------------
# The server, its users (added with buckets-admin), clients

@dataclass
class Admin:
    """``buckets-admin`` as a user runs it, with a private alias file."""

    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "buckets-admin"), *args], env=self.env, capture_output=True, text=True,
                              timeout=60)

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"buckets-admin {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
        return done.stdout

    def json(self, *args: str) -> dict:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str) -> str:
        """The CLI's error convention: exit 1, one line on stderr, no traceback."""
        done = self.run(*args)
        assert done.returncode == 1, f"buckets-admin {' '.join(args)}: exit {done.returncode}\n{done.stdout}"
        assert "Traceback" not in done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, done.stderr
        return lines[0]


@dataclass
class Env:
    srv: ServerProcess
    admin: Admin  # the CLI, for the commands under test
    api: AdminClient  # the same admin API in-process, to set up and look
    root: object
    owner: object
    other: object
    reader: object
    writer: object
    anon: object

    def client(self, access_key: str, secret_key: str):
        return self.srv.client(access_key=access_key, secret_key=secret_key)


def make_admin(srv: ServerProcess, directory: Path) -> Admin:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETS_", "AWS_"))}
    env["BUCKETS_CLIENT_CONFIG"] = str(directory / "buckets-client.json")
    admin = Admin(env)
    admin.ok("alias", "set", "t", srv.endpoint, ROOT_USER, ROOT_PASSWORD)
    return admin


def anonymous(srv: ServerProcess):
    return boto3.client("s3", endpoint_url=srv.endpoint, region_name=REGION, config=Config(signature_version=UNSIGNED))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("access-config")
    srv = start_server(base)
    try:
        api = AdminClient(srv.endpoint, ROOT_USER, ROOT_PASSWORD)
        for key, secret, policy in ((OWNER, OWNER_SECRET, "readwrite"), (OTHER, OTHER_SECRET, "readwrite"),
                                    (READER, READER_SECRET, "readonly"), (WRITER, WRITER_SECRET, "writeonly")):
            api.call("PUT", f"users/{key}", {"secret_key": secret, "policy": policy})
        yield Env(srv, make_admin(srv, base), api, srv.client(), srv.client(access_key=OWNER, secret_key=OWNER_SECRET),
                  srv.client(access_key=OTHER, secret_key=OTHER_SECRET),
                  srv.client(access_key=READER, secret_key=READER_SECRET),
                  srv.client(access_key=WRITER, secret_key=WRITER_SECRET), anonymous(srv))
    finally:
        stop_server(srv)


@pytest.fixture(autouse=True)
def no_server_bugs(request: pytest.FixtureRequest) -> Iterator[None]:
    """A traceback in the server's log (a 500) fails the test that caused it."""
    if "env" not in request.fixturenames:
        yield
        return
    srv = request.getfixturevalue("env").srv
    with no_new_tracebacks(srv.log_text):
        yield


@pytest.fixture
def bucket(env: Env) -> str:
    """A bucket owned by the OWNER user (left behind: the server is the module's)."""
    name = new_bucket_name("cfg")
    env.owner.create_bucket(Bucket=name)
    env.owner.put_object(Bucket=name, Key="obj", Body=b"object body")
    return name


def error(fn, *args, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as excinfo:
        fn(*args, **kwargs)
    return error_of(excinfo)


def denied(fn, *args, **kwargs) -> None:
    code, status = error(fn, *args, **kwargs)
    assert status == 403 and code in ("AccessDenied", "403"), (code, status)


def policy_doc(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def public_read(bucket: str) -> str:
    return policy_doc({"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{bucket}/*"})


def user_arn(user: str) -> str:
    return f"arn:aws:iam::{account_id(user)}:user/{user}"


def grant_users(bucket: str, *users: str, actions=("s3:GetObject",), objects: bool = True) -> str:
    return policy_doc({"Effect": "Allow", "Principal": {"AWS": [user_arn(u) for u in users]},
                       "Action": list(actions), "Resource": f"arn:aws:s3:::{bucket}{'/*' if objects else ''}"})


def grants_of(response: dict) -> set[tuple[str, str]]:
    """{(grantee ID or group URI, permission)} of a Get*Acl answer."""
    return {(g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"]) for g in response["Grants"]}


def owner_only(user: str) -> set[tuple[str, str]]:
    return {(canonical_id(user), "FULL_CONTROL")}


# --------------------------------------------------------------------------------------------
# Bucket policies

def test_bucket_policy_put_get_delete(env: Env, bucket: str):
    code, status = error(env.owner.get_bucket_policy, Bucket=bucket)
    assert (code, status) == ("NoSuchBucketPolicy", 404)
    text = public_read(bucket)
    env.owner.put_bucket_policy(Bucket=bucket, Policy=text)
    assert env.owner.get_bucket_policy(Bucket=bucket)["Policy"] == text  # given back as stored
    assert env.anon.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    spaced = json.dumps(json.loads(public_read(bucket)), indent=4)
    env.owner.put_bucket_policy(Bucket=bucket, Policy=spaced)
    assert env.owner.get_bucket_policy(Bucket=bucket)["Policy"] == spaced
    env.owner.delete_bucket_policy(Bucket=bucket)
    assert error(env.owner.get_bucket_policy, Bucket=bucket) == ("NoSuchBucketPolicy", 404)
    denied(env.anon.get_object, Bucket=bucket, Key="obj")
    env.owner.delete_bucket_policy(Bucket=bucket)  # deleting what is not there is not an error


MALFORMED = [
    ("not-json", "{this is not json"),
    ("first-byte", '["Statement"]'),
    ("empty-statement", '{"Version": "2012-10-17", "Statement": []}'),
    ("missing-principal", json.dumps({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                      "Resource": "arn:aws:s3:::BUCKET/*"}]})),
    ("other-bucket", json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                 "Resource": "arn:aws:s3:::someone-elses-bucket/*"}]})),
    ("action-resource-mismatch", json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*",
                                                             "Action": "s3:ListBucket",
                                                             "Resource": "arn:aws:s3:::BUCKET/*"}]})),
    ("bad-action", json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:Fly",
                                               "Resource": "arn:aws:s3:::BUCKET/*"}]})),
    ("bad-condition", json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                  "Resource": "arn:aws:s3:::BUCKET/*",
                                                  "Condition": {"IpAddress": {"aws:SourceIp": "1.2.3.400"}}}]})),
    ("too-large", json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                              "Resource": [f"arn:aws:s3:::BUCKET/{i:05d}{'x' * 90}"
                                                           for i in range(220)]}]})),
    ("far-too-large", "{" + " " * 60_000 + "}"),
]


def test_a_conditional_delete_on_an_etag_needs_the_right_to_read(env: Env, bucket: str):
    """As S3: DeleteObject with If-Match and an ETag tells the caller about the object, so it
    needs s3:GetObject as well; If-Match: * (it exists) does not."""
    env.owner.put_bucket_policy(Bucket=bucket, Policy=grant_users(bucket, OTHER, actions=("s3:DeleteObject",)))
    etag = env.owner.head_object(Bucket=bucket, Key="obj")["ETag"]
    denied(env.other.delete_object, Bucket=bucket, Key="obj", IfMatch=etag)
    resp = env.other.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "obj", "ETag": etag}]})
    assert [(e["Key"], e["Code"]) for e in resp["Errors"]] == [("obj", "AccessDenied")]
    assert env.owner.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    env.other.delete_object(Bucket=bucket, Key="obj", IfMatch="*")
    assert env.owner.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.parametrize("text", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_policy_changes_nothing(env: Env, bucket: str, text: str):
    old = public_read(bucket)
    env.owner.put_bucket_policy(Bucket=bucket, Policy=old)
    code, status = error(env.owner.put_bucket_policy, Bucket=bucket, Policy=text.replace("BUCKET", bucket))
    assert (code, status) == ("MalformedPolicy", 400)
    assert env.owner.get_bucket_policy(Bucket=bucket)["Policy"] == old


def test_malformed_policy_says_why(env: Env, bucket: str):
    doc = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
                                     "Resource": f"arn:aws:s3:::{bucket}/*"}]})
    with pytest.raises(ClientError) as excinfo:
        env.owner.put_bucket_policy(Bucket=bucket, Policy=doc)
    assert excinfo.value.response["Error"]["Message"] == "Action does not apply to any resource(s) in statement"
    assert error(env.owner.get_bucket_policy, Bucket=bucket) == ("NoSuchBucketPolicy", 404)


def test_policy_status(env: Env, bucket: str):
    assert error(env.owner.get_bucket_policy_status, Bucket=bucket) == ("NoSuchBucketPolicy", 404)
    env.owner.put_bucket_policy(Bucket=bucket, Policy=public_read(bucket))
    assert env.owner.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"] == {"IsPublic": True}
    env.owner.put_bucket_policy(Bucket=bucket, Policy=grant_users(bucket, OTHER))
    assert env.owner.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"] == {"IsPublic": False}
    narrowed = json.loads(public_read(bucket))
    narrowed["Statement"][0]["Condition"] = {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
    env.owner.put_bucket_policy(Bucket=bucket, Policy=json.dumps(narrowed))
    assert env.owner.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"] == {"IsPublic": False}


def test_policy_configuration_of_a_missing_bucket(env: Env):
    missing = new_bucket_name("cfg-missing")
    for call, kwargs in ((env.root.get_bucket_policy, {}), (env.root.delete_bucket_policy, {}),
                         (env.root.put_bucket_policy, {"Policy": public_read(missing)}),
                         (env.root.get_bucket_policy_status, {})):
        assert error(call, Bucket=missing, **kwargs) == ("NoSuchBucket", 404), call


def test_policy_grants_and_conditions_take_effect(env: Env, bucket: str):
    """A policy granting OTHER reads under its own prefix only, with a condition on s3:prefix for
    listing: each allowed request works and each outside it is denied."""
    env.owner.put_object(Bucket=bucket, Key=f"home/{OTHER}/a", Body=b"a")
    env.owner.put_object(Bucket=bucket, Key="home/someone/b", Body=b"b")
    env.owner.put_bucket_policy(Bucket=bucket, Policy=policy_doc(
        {"Effect": "Allow", "Principal": {"AWS": user_arn(OTHER)}, "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/home/${{aws:username}}/*"},
        {"Effect": "Allow", "Principal": {"AWS": user_arn(OTHER)}, "Action": "s3:ListBucket",
         "Resource": f"arn:aws:s3:::{bucket}", "Condition": {"StringLike": {"s3:prefix": "home/${aws:username}/*"}}}))
    assert env.other.get_object(Bucket=bucket, Key=f"home/{OTHER}/a")["Body"].read() == b"a"
    denied(env.other.get_object, Bucket=bucket, Key="home/someone/b")
    listed = env.other.list_objects_v2(Bucket=bucket, Prefix=f"home/{OTHER}/")
    assert [o["Key"] for o in listed["Contents"]] == [f"home/{OTHER}/a"]
    denied(env.other.list_objects_v2, Bucket=bucket, Prefix="home/")
    denied(env.other.list_objects_v2, Bucket=bucket)
    denied(env.reader.get_object, Bucket=bucket, Key=f"home/{OTHER}/a")  # the policy names OTHER alone


def test_policy_conditions_on_real_requests(env: Env, bucket: str):
    """Condition keys the server fills in from the request: the source address (127.0.0.1
    here), the canned ACL header, max-keys, the user name."""
    arn_objects, arn_bucket = f"arn:aws:s3:::{bucket}/*", f"arn:aws:s3:::{bucket}"
    env.owner.put_bucket_policy(Bucket=bucket, Policy=policy_doc(
        {"Sid": "LocalReads", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": arn_objects,
         "Condition": {"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1/128"]}}},
        {"Sid": "SmallLists", "Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket", "Resource": arn_bucket,
         "Condition": {"NumericLessThanEquals": {"s3:max-keys": "10"}}},
        {"Sid": "OtherWrites", "Effect": "Allow", "Principal": {"AWS": user_arn(OTHER)}, "Action": "s3:PutObject",
         "Resource": arn_objects},
        {"Sid": "OnlyHandedOver", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": arn_objects,
         "Condition": {"StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control",
                                           "aws:username": OWNER}}}))
    assert env.anon.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    assert env.anon.list_objects_v2(Bucket=bucket, MaxKeys=5)["KeyCount"] == 1
    denied(env.anon.list_objects_v2, Bucket=bucket, MaxKeys=11)
    denied(env.anon.list_objects_v2, Bucket=bucket)  # no max-keys: the key is absent
    denied(env.other.put_object, Bucket=bucket, Key="plain", Body=b"p")
    env.other.put_object(Bucket=bucket, Key="handed", Body=b"h", ACL="bucket-owner-full-control")
    env.owner.put_object(Bucket=bucket, Key="owners", Body=b"o")  # the Deny spares the owner by name
    assert error(env.root.head_object, Bucket=bucket, Key="plain")[1] == 404
    env.owner.put_bucket_policy(Bucket=bucket, Policy=policy_doc(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": arn_objects,
         "Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}))
    denied(env.anon.get_object, Bucket=bucket, Key="obj")


# --------------------------------------------------------------------------------------------
# Bucket ACLs

def test_bucket_acl_default_and_canned(env: Env, bucket: str):
    acl = env.owner.get_bucket_acl(Bucket=bucket)
    assert acl["Owner"] == {"ID": canonical_id(OWNER), "DisplayName": OWNER}
    assert grants_of(acl) == owner_only(OWNER)
    env.owner.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert grants_of(env.owner.get_bucket_acl(Bucket=bucket)) == owner_only(OWNER) | {(ALL_USERS, "READ")}
    assert [o["Key"] for o in env.anon.list_objects_v2(Bucket=bucket)["Contents"]] == ["obj"]
    env.owner.put_bucket_acl(Bucket=bucket, ACL="authenticated-read")
    assert grants_of(env.owner.get_bucket_acl(Bucket=bucket)) == owner_only(OWNER) | {(AUTHENTICATED, "READ")}
    denied(env.anon.list_objects_v2, Bucket=bucket)
    assert env.other.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    env.owner.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    env.anon.put_object(Bucket=bucket, Key="from-anonymous", Body=b"x")
    env.owner.put_bucket_acl(Bucket=bucket, ACL="private")
    assert grants_of(env.owner.get_bucket_acl(Bucket=bucket)) == owner_only(OWNER)
    denied(env.anon.put_object, Bucket=bucket, Key="from-anonymous-2", Body=b"x")
    denied(env.other.list_objects_v2, Bucket=bucket)


def test_bucket_acl_grant_headers(env: Env, bucket: str):
    env.owner.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{canonical_id(OTHER)}"',
                             GrantWrite=f'id="{canonical_id(OTHER)}"',
                             GrantFullControl=f'id="{canonical_id(OWNER)}"')
    acl = env.owner.get_bucket_acl(Bucket=bucket)
    assert grants_of(acl) == owner_only(OWNER) | {(canonical_id(OTHER), "READ"), (canonical_id(OTHER), "WRITE")}
    names = {g["Grantee"].get("ID"): g["Grantee"].get("DisplayName") for g in acl["Grants"]}
    assert names[canonical_id(OTHER)] == OTHER
    assert env.other.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    env.other.put_object(Bucket=bucket, Key="by-other", Body=b"o")
    denied(env.other.get_bucket_acl, Bucket=bucket)  # READ is not READ_ACP
    denied(env.reader.put_object, Bucket=bucket, Key="by-reader", Body=b"r")  # no grant, and readonly


def test_bucket_acl_document(env: Env, bucket: str):
    document = {"Owner": {"ID": canonical_id(OWNER)}, "Grants": [
        {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id(OWNER)}, "Permission": "FULL_CONTROL"},
        {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id(OTHER)}, "Permission": "READ_ACP"},
        {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}]}
    env.owner.put_bucket_acl(Bucket=bucket, AccessControlPolicy=document)
    assert grants_of(env.owner.get_bucket_acl(Bucket=bucket)) == owner_only(OWNER) | {
        (canonical_id(OTHER), "READ_ACP"), (ALL_USERS, "READ")}
    assert grants_of(env.other.get_bucket_acl(Bucket=bucket)) == grants_of(env.owner.get_bucket_acl(Bucket=bucket))
    denied(env.other.put_bucket_acl, Bucket=bucket, ACL="private")


BAD_BUCKET_ACLS = [
    ("owner-mismatch", {"AccessControlPolicy": {"Owner": {"ID": canonical_id(OTHER)}, "Grants": [
        {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}]}}, ("AccessDenied", 403)),
    ("no-owner", {"AccessControlPolicy": {"Grants": [
        {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}]}}, ("MalformedACLError", 400)),
    ("bad-permission", {"AccessControlPolicy": {"Owner": {"ID": canonical_id(OWNER)}, "Grants": [
        {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "EVERYTHING"}]}}, ("MalformedACLError", 400)),
    ("unknown-id-in-document", {"AccessControlPolicy": {"Owner": {"ID": canonical_id(OWNER)}, "Grants": [
        {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id("nobody")}, "Permission": "READ"}]}},
     ("InvalidArgument", 400)),
    ("email-in-document", {"AccessControlPolicy": {"Owner": {"ID": canonical_id(OWNER)}, "Grants": [
        {"Grantee": {"Type": "AmazonCustomerByEmail", "EmailAddress": "a@example.com"}, "Permission": "READ"}]}},
     ("UnresolvableGrantByEmailAddress", 400)),
    ("email-header", {"GrantRead": 'emailAddress="someone@example.com"'}, ("UnresolvableGrantByEmailAddress", 400)),
    ("unknown-id-header", {"GrantRead": f'id="{canonical_id("nobody")}"'}, ("InvalidArgument", 400)),
    ("bad-uri-header", {"GrantRead": 'uri="http://acs.amazonaws.com/groups/global/Everybody"'},
     ("InvalidArgument", 400)),
    ("unparsable-header", {"GrantRead": "everyone please"}, ("InvalidArgument", 400)),
    ("unknown-canned", {"ACL": "public"}, ("InvalidArgument", 400)),
    ("canned-and-grants", {"ACL": "public-read", "GrantRead": f'id="{canonical_id(OTHER)}"'},
     ("InvalidRequest", 400)),
]


@pytest.mark.parametrize("kwargs,expected", [b[1:] for b in BAD_BUCKET_ACLS], ids=[b[0] for b in BAD_BUCKET_ACLS])
def test_bad_bucket_acl_changes_nothing(env: Env, bucket: str, kwargs: dict, expected: tuple[str, int]):
    env.owner.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{canonical_id(READER)}"')
    before = grants_of(env.owner.get_bucket_acl(Bucket=bucket))
    assert error(env.owner.put_bucket_acl, Bucket=bucket, **kwargs) == expected
    assert grants_of(env.owner.get_bucket_acl(Bucket=bucket)) == before


def test_bad_acl_xml(env: Env, bucket: str):
    for body, code in ((b"<AccessControlPolicy><Owner>", "MalformedXML"), (b"", "MalformedACLError")):
        answer = rawhttp.request(env.srv, "PUT", f"/{bucket}", query="acl", body=body,
                                 access_key=OWNER, secret_key=OWNER_SECRET)
        assert (answer.status, answer.code) == (400, code), answer.text
    assert grants_of(env.owner.get_bucket_acl(Bucket=bucket)) == owner_only(OWNER)


def test_acl_on_create_bucket(env: Env):
    name = new_bucket_name("cfg-acl")
    env.owner.create_bucket(Bucket=name, ACL="public-read")
    assert grants_of(env.owner.get_bucket_acl(Bucket=name)) == owner_only(OWNER) | {(ALL_USERS, "READ")}
    assert env.anon.list_objects_v2(Bucket=name)["KeyCount"] == 0
    other = new_bucket_name("cfg-acl")
    env.owner.create_bucket(Bucket=other, GrantWrite=f'id="{canonical_id(OTHER)}"')
    env.other.put_object(Bucket=other, Key="k", Body=b"k")
    bad = new_bucket_name("cfg-acl")
    assert error(env.owner.create_bucket, Bucket=bad, GrantRead='emailAddress="x@example.com"') == \
        ("UnresolvableGrantByEmailAddress", 400)
    assert error(env.root.head_bucket, Bucket=bad)[1] == 404  # nothing made


# --------------------------------------------------------------------------------------------
# Object ACLs

def test_object_acl(env: Env, bucket: str):
    acl = env.owner.get_object_acl(Bucket=bucket, Key="obj")
    assert acl["Owner"]["ID"] == canonical_id(OWNER)
    assert grants_of(acl) == owner_only(OWNER)
    denied(env.anon.get_object, Bucket=bucket, Key="obj")
    env.owner.put_object_acl(Bucket=bucket, Key="obj", ACL="public-read")
    assert grants_of(env.owner.get_object_acl(Bucket=bucket, Key="obj")) == owner_only(OWNER) | {(ALL_USERS, "READ")}
    assert env.anon.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    denied(env.anon.list_objects_v2, Bucket=bucket)  # an object's grant is not the bucket's
    denied(env.anon.get_object_acl, Bucket=bucket, Key="obj")
    env.owner.put_object_acl(Bucket=bucket, Key="obj", GrantReadACP=f'id="{canonical_id(OTHER)}"',
                             GrantWriteACP=f'id="{canonical_id(OTHER)}"')
    denied(env.anon.get_object, Bucket=bucket, Key="obj")
    denied(env.other.get_object, Bucket=bucket, Key="obj")
    assert grants_of(env.other.get_object_acl(Bucket=bucket, Key="obj")) == {
        (canonical_id(OTHER), "READ_ACP"), (canonical_id(OTHER), "WRITE_ACP")}
    env.other.put_object_acl(Bucket=bucket, Key="obj", AccessControlPolicy={
        "Owner": {"ID": canonical_id(OWNER)},
        "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": canonical_id(OTHER)}, "Permission": "READ"}]})
    assert env.other.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    denied(env.other.get_object_acl, Bucket=bucket, Key="obj")  # it gave its READ_ACP away


def test_object_acl_on_put_and_copy(env: Env, bucket: str):
    env.owner.put_object(Bucket=bucket, Key="public", Body=b"p", ACL="public-read")
    assert env.anon.get_object(Bucket=bucket, Key="public")["Body"].read() == b"p"
    env.owner.copy_object(Bucket=bucket, Key="copy-private", CopySource={"Bucket": bucket, "Key": "public"})
    denied(env.anon.get_object, Bucket=bucket, Key="copy-private")  # a copy gets the request's ACL
    env.owner.copy_object(Bucket=bucket, Key="copy-public", CopySource={"Bucket": bucket, "Key": "obj"},
                          ACL="public-read")
    assert env.anon.get_object(Bucket=bucket, Key="copy-public")["Body"].read() == b"object body"
    upload = env.owner.create_multipart_upload(Bucket=bucket, Key="mp-public", ACL="public-read")["UploadId"]
    etag = env.owner.upload_part(Bucket=bucket, Key="mp-public", UploadId=upload, PartNumber=1, Body=b"m")["ETag"]
    env.owner.complete_multipart_upload(Bucket=bucket, Key="mp-public", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert env.anon.get_object(Bucket=bucket, Key="mp-public")["Body"].read() == b"m"


def test_bad_object_acl_changes_nothing(env: Env, bucket: str):
    env.owner.put_object_acl(Bucket=bucket, Key="obj", ACL="public-read")
    before = grants_of(env.owner.get_object_acl(Bucket=bucket, Key="obj"))
    for kwargs, expected in (
            ({"ACL": "public-read-everything"}, ("InvalidArgument", 400)),
            ({"GrantRead": 'emailAddress="x@example.com"'}, ("UnresolvableGrantByEmailAddress", 400)),
            ({"AccessControlPolicy": {"Owner": {"ID": canonical_id(OTHER)}, "Grants": []}}, ("AccessDenied", 403))):
        assert error(env.owner.put_object_acl, Bucket=bucket, Key="obj", **kwargs) == expected, kwargs
        assert grants_of(env.owner.get_object_acl(Bucket=bucket, Key="obj")) == before
    assert error(env.owner.put_object_acl, Bucket=bucket, Key="missing", ACL="private") == ("NoSuchKey", 404)
    assert error(env.owner.get_object_acl, Bucket=bucket, Key="missing") == ("NoSuchKey", 404)
    assert error(env.owner.put_object, Bucket=bucket, Key="new", Body=b"n", ACL="nope") == ("InvalidArgument", 400)
    assert error(env.root.head_object, Bucket=bucket, Key="new")[1] == 404


def test_object_owner_is_the_writer(env: Env, bucket: str):
    """ObjectWriter (a new bucket's behaviour): who writes an object owns it, and its ACL says so."""
    env.owner.put_bucket_acl(Bucket=bucket, GrantWrite=f'id="{canonical_id(OTHER)}"')
    env.other.put_object(Bucket=bucket, Key="others", Body=b"o")
    acl = env.owner.get_object_acl(Bucket=bucket, Key="others")  # the bucket's owner reads every object's ACL
    assert acl["Owner"]["ID"] == canonical_id(OTHER)
    assert grants_of(acl) == owner_only(OTHER)
    assert env.other.get_object(Bucket=bucket, Key="others")["Body"].read() == b"o"  # its own object
    assert env.owner.get_object(Bucket=bucket, Key="others")["Body"].read() == b"o"  # the bucket owner's bucket
    denied(env.other.get_object, Bucket=bucket, Key="obj")  # not its object, no grant


def test_object_the_root_user_writes_is_the_root_users(env: Env, bucket: str):
    """The root user writing into a user's bucket is a writer like any other (ObjectWriter)."""
    env.root.put_object(Bucket=bucket, Key="roots", Body=b"r")
    acl = env.owner.get_object_acl(Bucket=bucket, Key="roots")
    assert acl["Owner"] == {"ID": canonical_id(ROOT_USER), "DisplayName": ROOT_USER}
    assert grants_of(acl) == owner_only(ROOT_USER)


# --------------------------------------------------------------------------------------------
# Object ownership controls

def ownership(rule: str) -> dict:
    return {"Rules": [{"ObjectOwnership": rule}]}


def test_ownership_controls_put_get_delete(env: Env, bucket: str):
    assert error(env.owner.get_bucket_ownership_controls, Bucket=bucket) == ("OwnershipControlsNotFoundError", 404)
    for rule in ("BucketOwnerPreferred", "ObjectWriter", "BucketOwnerEnforced"):
        env.owner.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=ownership(rule))
        assert env.owner.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"] == ownership(rule)
    assert error(env.owner.put_bucket_ownership_controls, Bucket=bucket,
                 OwnershipControls=ownership("Anyone")) == ("MalformedXML", 400)
    assert env.owner.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"] == \
        ownership("BucketOwnerEnforced")
    env.owner.delete_bucket_ownership_controls(Bucket=bucket)
    assert error(env.owner.get_bucket_ownership_controls, Bucket=bucket) == ("OwnershipControlsNotFoundError", 404)
    denied(env.other.put_bucket_ownership_controls, Bucket=bucket, OwnershipControls=ownership("ObjectWriter"))


def test_bucket_owner_enforced_refuses_acls(env: Env, bucket: str):
    env.owner.put_object(Bucket=bucket, Key="was-public", Body=b"w", ACL="public-read")
    assert env.anon.get_object(Bucket=bucket, Key="was-public")["Body"].read() == b"w"
    env.owner.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=ownership("BucketOwnerEnforced"))
    denied(env.anon.get_object, Bucket=bucket, Key="was-public")  # ACLs no longer count
    assert grants_of(env.owner.get_object_acl(Bucket=bucket, Key="was-public")) == owner_only(OWNER)
    unsupported = ("AccessControlListNotSupported", 400)
    assert error(env.owner.put_object, Bucket=bucket, Key="new", Body=b"n", ACL="public-read") == unsupported
    assert error(env.root.head_object, Bucket=bucket, Key="new")[1] == 404
    assert error(env.owner.put_bucket_acl, Bucket=bucket, ACL="public-read") == unsupported
    assert error(env.owner.put_bucket_acl, Bucket=bucket, GrantRead=f'id="{canonical_id(OTHER)}"') == unsupported
    assert error(env.owner.put_object_acl, Bucket=bucket, Key="obj", ACL="public-read") == unsupported
    assert error(env.owner.copy_object, Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "obj"},
                 ACL="authenticated-read") == unsupported
    assert error(env.owner.create_multipart_upload, Bucket=bucket, Key="mp", ACL="public-read") == unsupported
    assert grants_of(env.owner.get_bucket_acl(Bucket=bucket)) == owner_only(OWNER)
    # what says no more than "the bucket's owner controls it" is still accepted
    env.owner.put_object(Bucket=bucket, Key="fine", Body=b"f", ACL="bucket-owner-full-control")
    env.owner.put_object(Bucket=bucket, Key="fine2", Body=b"f", ACL="private")
    env.owner.put_bucket_acl(Bucket=bucket, ACL="private")


def test_enforced_refused_while_the_bucket_acl_grants(env: Env, bucket: str):
    env.owner.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert error(env.owner.put_bucket_ownership_controls, Bucket=bucket,
                 OwnershipControls=ownership("BucketOwnerEnforced")) == ("InvalidBucketAclWithObjectOwnership", 400)
    assert error(env.owner.get_bucket_ownership_controls, Bucket=bucket) == ("OwnershipControlsNotFoundError", 404)


def test_bucket_owner_preferred(env: Env, bucket: str):
    env.owner.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=ownership("BucketOwnerPreferred"))
    env.owner.put_bucket_acl(Bucket=bucket, GrantWrite=f'id="{canonical_id(OTHER)}"')
    env.other.put_object(Bucket=bucket, Key="given", Body=b"g", ACL="bucket-owner-full-control")
    env.other.put_object(Bucket=bucket, Key="kept", Body=b"k")
    assert env.owner.get_object_acl(Bucket=bucket, Key="given")["Owner"]["ID"] == canonical_id(OWNER)
    assert env.owner.get_object_acl(Bucket=bucket, Key="kept")["Owner"]["ID"] == canonical_id(OTHER)


def test_create_bucket_with_object_ownership(env: Env):
    name = new_bucket_name("cfg-own")
    assert error(env.owner.create_bucket, Bucket=name, ObjectOwnership="BucketOwnerEnforced",
                 ACL="public-read") == ("InvalidBucketAclWithObjectOwnership", 400)
    assert error(env.root.head_bucket, Bucket=name)[1] == 404
    assert error(env.owner.create_bucket, Bucket=name, ObjectOwnership="Whoever") == ("InvalidArgument", 400)
    assert error(env.root.head_bucket, Bucket=name)[1] == 404
    env.owner.create_bucket(Bucket=name, ObjectOwnership="BucketOwnerEnforced", ACL="private")
    assert env.owner.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"] == \
        ownership("BucketOwnerEnforced")
    preferred = new_bucket_name("cfg-own")
    env.owner.create_bucket(Bucket=preferred, ObjectOwnership="BucketOwnerPreferred", ACL="public-read")
    assert env.owner.get_bucket_ownership_controls(Bucket=preferred)["OwnershipControls"] == \
        ownership("BucketOwnerPreferred")
    assert (ALL_USERS, "READ") in grants_of(env.owner.get_bucket_acl(Bucket=preferred))


# --------------------------------------------------------------------------------------------
# The public access block

ALL_BLOCKS = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
              "RestrictPublicBuckets": True}


def block(**on: bool) -> dict:
    return {name: bool(on.get(name)) for name in ALL_BLOCKS}


def test_public_access_block_put_get_delete(env: Env, bucket: str):
    assert error(env.owner.get_public_access_block, Bucket=bucket) == ("NoSuchPublicAccessBlockConfiguration", 404)
    env.owner.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=ALL_BLOCKS)
    assert env.owner.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == ALL_BLOCKS
    env.owner.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"IgnorePublicAcls": True})
    assert env.owner.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == \
        block(IgnorePublicAcls=True)
    bad = (b'<PublicAccessBlockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
           b"<BlockPublicAcls>maybe</BlockPublicAcls></PublicAccessBlockConfiguration>")
    answer = rawhttp.request(env.srv, "PUT", f"/{bucket}", query="publicAccessBlock", body=bad,
                             access_key=OWNER, secret_key=OWNER_SECRET)
    assert (answer.status, answer.code) == (400, "MalformedXML"), answer.text
    assert env.owner.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == \
        block(IgnorePublicAcls=True)
    denied(env.other.put_public_access_block, Bucket=bucket, PublicAccessBlockConfiguration=block())
    denied(env.other.delete_public_access_block, Bucket=bucket)
    env.owner.delete_public_access_block(Bucket=bucket)
    assert error(env.owner.get_public_access_block, Bucket=bucket) == ("NoSuchPublicAccessBlockConfiguration", 404)


def test_block_public_acls(env: Env, bucket: str):
    env.owner.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block(BlockPublicAcls=True))
    denied(env.owner.put_object, Bucket=bucket, Key="public", Body=b"p", ACL="public-read")
    assert error(env.root.head_object, Bucket=bucket, Key="public")[1] == 404
    denied(env.owner.put_bucket_acl, Bucket=bucket, ACL="public-read")
    denied(env.owner.put_bucket_acl, Bucket=bucket, GrantRead=f'uri="{AUTHENTICATED}"')
    denied(env.owner.put_object_acl, Bucket=bucket, Key="obj", ACL="public-read-write")
    assert grants_of(env.owner.get_bucket_acl(Bucket=bucket)) == owner_only(OWNER)
    assert grants_of(env.owner.get_object_acl(Bucket=bucket, Key="obj")) == owner_only(OWNER)
    env.owner.put_object(Bucket=bucket, Key="private", Body=b"p", ACL="private")  # not public: fine
    env.owner.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{canonical_id(OTHER)}"')  # a user, not public
    env.owner.put_bucket_policy(Bucket=bucket, Policy=public_read(bucket))  # policies are another switch
    env.owner.delete_public_access_block(Bucket=bucket)
    env.owner.put_object(Bucket=bucket, Key="public", Body=b"p", ACL="public-read")


def test_ignore_public_acls(env: Env, bucket: str):
    env.owner.put_object_acl(Bucket=bucket, Key="obj", ACL="public-read")
    env.owner.put_bucket_acl(Bucket=bucket, ACL="public-read")
    env.owner.put_object(Bucket=bucket, Key="for-other", Body=b"o", GrantRead=f'id="{canonical_id(OTHER)}"')
    assert env.anon.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    env.owner.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block(IgnorePublicAcls=True))
    denied(env.anon.get_object, Bucket=bucket, Key="obj")
    denied(env.anon.list_objects_v2, Bucket=bucket)
    denied(env.other.list_objects_v2, Bucket=bucket)  # AllUsers includes signed callers: ignored too
    assert env.other.get_object(Bucket=bucket, Key="for-other")["Body"].read() == b"o"  # a grant to a user stays
    assert (ALL_USERS, "READ") in grants_of(env.owner.get_bucket_acl(Bucket=bucket))  # kept, just not honoured
    env.owner.delete_public_access_block(Bucket=bucket)
    assert env.anon.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"


def test_block_public_policy(env: Env, bucket: str):
    named = grant_users(bucket, OTHER)
    env.owner.put_bucket_policy(Bucket=bucket, Policy=named)
    env.owner.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block(BlockPublicPolicy=True))
    denied(env.owner.put_bucket_policy, Bucket=bucket, Policy=public_read(bucket))
    assert env.owner.get_bucket_policy(Bucket=bucket)["Policy"] == named
    denied(env.anon.get_object, Bucket=bucket, Key="obj")
    other = grant_users(bucket, OTHER, READER)
    env.owner.put_bucket_policy(Bucket=bucket, Policy=other)  # not public: accepted
    assert env.owner.get_bucket_policy(Bucket=bucket)["Policy"] == other
    env.owner.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block())
    env.owner.put_bucket_policy(Bucket=bucket, Policy=public_read(bucket))


def test_restrict_public_buckets(env: Env, bucket: str):
    env.owner.put_bucket_policy(Bucket=bucket, Policy=policy_doc(
        {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{bucket}/*"}))
    assert env.anon.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    assert env.other.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    env.owner.put_public_access_block(Bucket=bucket,
                                      PublicAccessBlockConfiguration=block(RestrictPublicBuckets=True))
    denied(env.anon.get_object, Bucket=bucket, Key="obj")
    denied(env.other.get_object, Bucket=bucket, Key="obj")
    assert env.owner.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    env.owner.put_bucket_policy(Bucket=bucket, Policy=grant_users(bucket, OTHER))  # no longer public
    assert env.other.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"
    denied(env.anon.get_object, Bucket=bucket, Key="obj")
    env.owner.put_bucket_policy(Bucket=bucket, Policy=public_read(bucket))
    env.owner.delete_public_access_block(Bucket=bucket)
    assert env.anon.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"object body"


# --------------------------------------------------------------------------------------------
# Bucket ownership: expected owner, names, ListBuckets

def test_expected_bucket_owner(env: Env, bucket: str):
    info = env.admin.json("user", "info", "t", OWNER)
    assert info["account_id"] == account_id(OWNER) and info["canonical_id"] == canonical_id(OWNER)
    assert info["arn"] == user_arn(OWNER)
    env.owner.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=info["account_id"])
    env.owner.get_object(Bucket=bucket, Key="obj", ExpectedBucketOwner=info["account_id"])
    env.root.head_bucket(Bucket=bucket, ExpectedBucketOwner=info["account_id"])
    other_account = env.admin.json("user", "info", "t", OTHER)["account_id"]
    denied(env.owner.list_objects_v2, Bucket=bucket, ExpectedBucketOwner=other_account)
    denied(env.owner.put_object, Bucket=bucket, Key="refused", Body=b"r", ExpectedBucketOwner="123456789012")
    assert error(env.root.head_object, Bucket=bucket, Key="refused")[1] == 404
    denied(env.root.get_bucket_policy, Bucket=bucket, ExpectedBucketOwner=other_account)
    # the source of a copy
    env.owner.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "obj"},
                          ExpectedSourceBucketOwner=info["account_id"], ExpectedBucketOwner=info["account_id"])
    denied(env.owner.copy_object, Bucket=bucket, Key="copied2", CopySource={"Bucket": bucket, "Key": "obj"},
           ExpectedSourceBucketOwner=other_account)
    assert error(env.root.head_object, Bucket=bucket, Key="copied2")[1] == 404
    # a root user's bucket
    mine = new_bucket_name("cfg-root")
    env.root.create_bucket(Bucket=mine)
    env.root.list_objects_v2(Bucket=mine, ExpectedBucketOwner=account_id(ROOT_USER))
    denied(env.root.list_objects_v2, Bucket=mine, ExpectedBucketOwner=info["account_id"])


def test_bucket_already_exists_or_owned(env: Env, bucket: str):
    assert error(env.owner.create_bucket, Bucket=bucket) == ("BucketAlreadyOwnedByYou", 409)
    assert error(env.other.create_bucket, Bucket=bucket) == ("BucketAlreadyExists", 409)
    assert error(env.root.create_bucket, Bucket=bucket) == ("BucketAlreadyExists", 409)
    mine = new_bucket_name("cfg-root")
    env.root.create_bucket(Bucket=mine)
    assert error(env.root.create_bucket, Bucket=mine) == ("BucketAlreadyOwnedByYou", 409)
    assert error(env.owner.create_bucket, Bucket=mine) == ("BucketAlreadyExists", 409)
    denied(env.reader.create_bucket, Bucket=new_bucket_name("cfg-reader"))  # readonly creates nothing
    assert env.owner.get_bucket_acl(Bucket=bucket)["Owner"]["ID"] == canonical_id(OWNER)  # unchanged


def test_list_buckets_per_user(env: Env):
    a, b, shared, by_acl = (new_bucket_name("cfg-list") for _ in range(4))
    env.owner.create_bucket(Bucket=a)
    env.other.create_bucket(Bucket=b)
    env.owner.create_bucket(Bucket=shared)
    env.owner.put_bucket_policy(Bucket=shared, Policy=grant_users(shared, OTHER, actions=("s3:ListBucket",),
                                                                   objects=False))
    env.owner.create_bucket(Bucket=by_acl)
    env.owner.put_bucket_acl(Bucket=by_acl, GrantRead=f'id="{canonical_id(READER)}"')
    ours = {a, b, shared, by_acl}

    def names(client) -> set[str]:
        return {x["Name"] for x in client.list_buckets()["Buckets"]} & ours

    assert names(env.root) == ours
    assert names(env.owner) == {a, shared, by_acl}
    assert names(env.other) == {b, shared}
    assert names(env.reader) == {by_acl}
    owner_view = env.owner.list_buckets()
    assert owner_view["Owner"]["ID"] == canonical_id(OWNER)
    assert all(x["Name"] not in (b,) for x in owner_view["Buckets"])
    denied(env.anon.list_buckets)
    denied(env.writer.list_buckets)  # writeonly: no s3:ListAllMyBuckets


# --------------------------------------------------------------------------------------------
# buckets-admin: named policies and user policies

def test_named_policy_lifecycle(env: Env, tmp_path: Path):
    target = new_bucket_name("cfg-named")
    env.owner.create_bucket(Bucket=target)
    env.owner.put_object(Bucket=target, Key="in/a", Body=b"a")
    env.owner.put_object(Bucket=target, Key="out/b", Body=b"b")
    env.owner.put_bucket_policy(Bucket=target, Policy=policy_doc(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{target}", f"arn:aws:s3:::{target}/*"]}))
    document = policy_doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{target}/in/*"})
    path = tmp_path / "in-reader.json"
    path.write_text(document)
    assert "Added policy in-reader" in env.admin.ok("policy", "add", "t", "in-reader", str(path))
    listed = {p["name"]: p for p in env.admin.json("policy", "list", "t")["policies"]}
    assert listed["in-reader"]["canned"] is False and listed["readonly"]["canned"] is True
    assert json.loads(env.admin.json("policy", "info", "t", "in-reader")["document"]) == json.loads(document)

    env.admin.ok("user", "add", "t", "cfg-named-user", "cfg-named-secret", "--policy", "in-reader")
    assert env.admin.json("user", "info", "t", "cfg-named-user")["policy"] == "in-reader"
    assert env.api.call("GET", "policies/in-reader")["users"] == ["cfg-named-user"]
    named = env.client("cfg-named-user", "cfg-named-secret")
    assert named.get_object(Bucket=target, Key="in/a")["Body"].read() == b"a"
    denied(named.get_object, Bucket=target, Key="out/b")  # outside its policy, though the bucket allows all
    denied(named.put_object, Bucket=target, Key="in/new", Body=b"n")
    denied(named.list_objects_v2, Bucket=target)

    line = env.admin.fails("policy", "remove", "t", "in-reader")
    assert "PolicyInUse" in line
    assert env.api.call("GET", "policies/in-reader")["users"] == ["cfg-named-user"]
    assert named.get_object(Bucket=target, Key="in/a")["Body"].read() == b"a"  # still in force

    assert "now has policy readonly" in env.admin.ok("user", "policy", "t", "cfg-named-user", "readonly")
    assert env.api.call("GET", "users/cfg-named-user")["policy"] == "readonly"
    assert named.get_object(Bucket=target, Key="out/b")["Body"].read() == b"b"
    assert named.list_objects_v2(Bucket=target)["KeyCount"] == 2
    denied(named.put_object, Bucket=target, Key="in/new", Body=b"n")
    assert "Removed policy in-reader" in env.admin.ok("policy", "remove", "t", "in-reader")
    assert "in-reader" not in {p["name"] for p in env.api.call("GET", "policies")["policies"]}
    assert "NoSuchPolicy" in env.admin.fails("policy", "info", "t", "in-reader")


def test_user_policy_as_json_document(env: Env, tmp_path: Path):
    target = new_bucket_name("cfg-json")
    env.owner.create_bucket(Bucket=target)
    env.owner.put_bucket_policy(Bucket=target, Policy=policy_doc(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{target}", f"arn:aws:s3:::{target}/*"]}))
    document = policy_doc({"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{target}/*"})
    env.admin.ok("user", "add", "t", "cfg-json-user", "cfg-json-secret", "--policy", document)
    user = env.client("cfg-json-user", "cfg-json-secret")
    user.put_object(Bucket=target, Key="k", Body=b"k")
    denied(user.get_object, Bucket=target, Key="k")
    path = tmp_path / "get.json"
    path.write_text(policy_doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{target}/*"}))
    env.admin.ok("user", "policy", "t", "cfg-json-user", f"@{path}")
    assert user.get_object(Bucket=target, Key="k")["Body"].read() == b"k"
    denied(user.put_object, Bucket=target, Key="k2", Body=b"k")


def test_admin_bad_input_changes_nothing(env: Env, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", '
                   '"Resource": "arn:aws:s3:::x/*"}]}')  # a Principal in a user policy
    assert "MalformedPolicy" in env.admin.fails("policy", "add", "t", "bad-one", str(bad))
    assert "bad-one" not in {p["name"] for p in env.api.call("GET", "policies")["policies"]}
    assert "NoSuchPolicy" in env.admin.fails("user", "add", "t", "cfg-nopolicy", "cfg-nopolicy-secret",
                                             "--policy", "no-such-policy")
    assert "cfg-nopolicy" not in {u["access_key"] for u in env.api.call("GET", "users")["users"]}
    assert "MalformedPolicy" in env.admin.fails("user", "policy", "t", READER, '{"Statement": []}')
    assert env.api.call("GET", f"users/{READER}")["policy"] == "readonly"
    assert "NoSuchUser" in env.admin.fails("user", "policy", "t", "cfg-nobody", "readonly")
    good = tmp_path / "good.json"
    good.write_text(policy_doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*"}))
    assert env.admin.fails("policy", "add", "t", "readonly", str(good))  # a canned name is not replaceable
    assert json.loads(env.api.call("GET", "policies/readonly")["document"])["Statement"][0]["Action"] == \
        ["s3:Get*", "s3:List*"]


# --------------------------------------------------------------------------------------------
# Settings survive a restart

def test_settings_survive_a_restart(tmp_path: Path):
    base = tmp_path / "restart"
    srv = start_server(base)
    try:
        with no_new_tracebacks(srv.log_text):
            api = AdminClient(srv.endpoint, ROOT_USER, ROOT_PASSWORD)
            api.call("PUT", "policies/getter", {"document": policy_doc(
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*"})})
            api.call("PUT", f"users/{OWNER}", {"secret_key": OWNER_SECRET})
            api.call("PUT", f"users/{OTHER}", {"secret_key": OTHER_SECRET, "policy": "getter"})
            owner = srv.client(access_key=OWNER, secret_key=OWNER_SECRET)
            name = new_bucket_name("cfg-restart")
            owner.create_bucket(Bucket=name)
            owner.put_object(Bucket=name, Key="public", Body=b"p", ACL="public-read")
            owner.put_object(Bucket=name, Key="private", Body=b"q")
            policy = grant_users(name, OTHER)
            owner.put_bucket_policy(Bucket=name, Policy=policy)
            owner.put_bucket_acl(Bucket=name, GrantRead=f'id="{canonical_id(OTHER)}"')
            owner.put_bucket_ownership_controls(Bucket=name, OwnershipControls=ownership("BucketOwnerPreferred"))
            owner.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block(BlockPublicPolicy=True))
            before = {"acl": grants_of(owner.get_bucket_acl(Bucket=name)),
                      "object_acl": grants_of(owner.get_object_acl(Bucket=name, Key="public"))}
    finally:
        stop_server(srv)
    text = srv.log_text()
    assert "Traceback" not in text, text[-4000:]

    srv = start_server(base)
    try:
        with no_new_tracebacks(srv.log_text):
            api = AdminClient(srv.endpoint, ROOT_USER, ROOT_PASSWORD)
            owner = srv.client(access_key=OWNER, secret_key=OWNER_SECRET)
            other = srv.client(access_key=OTHER, secret_key=OTHER_SECRET)
            assert owner.get_bucket_policy(Bucket=name)["Policy"] == policy
            assert grants_of(owner.get_bucket_acl(Bucket=name)) == before["acl"]
            assert grants_of(owner.get_object_acl(Bucket=name, Key="public")) == before["object_acl"]
            assert owner.get_bucket_acl(Bucket=name)["Owner"]["ID"] == canonical_id(OWNER)
            assert owner.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"] == \
                ownership("BucketOwnerPreferred")
            assert owner.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"] == \
                block(BlockPublicPolicy=True)
            assert anonymous(srv).get_object(Bucket=name, Key="public")["Body"].read() == b"p"
            denied(anonymous(srv).get_object, Bucket=name, Key="private")
            assert other.get_object(Bucket=name, Key="private")["Body"].read() == b"q"  # its named policy
            denied(other.put_object, Bucket=name, Key="x", Body=b"x")
            assert error(owner.create_bucket, Bucket=name) == ("BucketAlreadyOwnedByYou", 409)
            assert api.call("GET", f"users/{OTHER}")["policy"] == "getter"
            with pytest.raises(AdminCallError) as excinfo:
                api.call("DELETE", "policies/getter")
            assert (excinfo.value.code, excinfo.value.status) == ("PolicyInUse", 409)
    finally:
        stop_server(srv)


def test_a_missing_key_is_404_only_to_who_may_list_the_bucket(env: Env, bucket: str):
    """As AWS answers: a caller allowed to list the bucket learns that a key is not there
    (404 NoSuchKey); one who may not gets 403 and learns nothing."""
    assert error(env.other.get_object, Bucket=bucket, Key="no-such-key") == ("AccessDenied", 403)
    assert error(env.anon.get_object, Bucket=bucket, Key="no-such-key") == ("AccessDenied", 403)
    env.owner.put_bucket_acl(Bucket=bucket, ACL="public-read")  # READ on the bucket: everyone may list it
    assert error(env.anon.get_object, Bucket=bucket, Key="no-such-key") == ("NoSuchKey", 404)
    assert error(env.other.get_object, Bucket=bucket, Key="no-such-key") == ("NoSuchKey", 404)
    assert error(env.anon.get_object, Bucket=bucket, Key="obj") == ("AccessDenied", 403)  # there, not readable
