"""The permission matrix of access control (issue 11), against a real server.

Every cell is (grant situation, caller, operation) -> allowed or denied, run through boto3:

* callers: the root user, the bucket's owner (a user with ``readwrite``), another user with
  ``readwrite``, another user with ``readonly``, and an anonymous (unsigned) client;
* grant situations, each its own bucket owned by the owner user, set up once:
  ``none`` (no policy, no ACL), ``policy`` (a bucket policy granting the two other users
  everything by ARN, and everyone GetObject/ListBucket), ``acl`` (bucket and object ACLs
  granting the two other users FULL_CONTROL by canonical ID, and AllUsers READ), ``deny``
  (the ``acl`` grants plus a policy allowing everyone everything and denying everyone
  everything);
* operations: the families of ``OPS`` below.

``expected`` writes down what ``buckets.iam.decide``'s rules say each cell must be. An
allowed cell must succeed; a denied cell must be ``403 AccessDenied`` (for DeleteObjects:
``AccessDenied`` for each key) and change nothing, which each operation's ``check`` verifies
through the root user.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from s3server import REGION, ROOT_PASSWORD, ROOT_USER, ServerProcess, new_bucket_name, start_server, stop_server
from serverproc import no_new_tracebacks_in

from buckets.admin.client import AdminClient
from buckets.iam.identity import account_id, canonical_id

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
BODY = b"matrix body"
USERS = {"owner": ("mx-owner", "mx-owner-secret", "readwrite"),
         "rw": ("mx-rw", "mx-rw-secret-1", "readwrite"),
         "ro": ("mx-ro", "mx-ro-secret-1", "readonly")}
CALLERS = ["root", "owner", "rw", "ro", "anon"]
SITUATIONS = ["none", "policy", "acl", "deny"]


def user_arn(caller: str) -> str:
    key = USERS[caller][0]
    return f"arn:aws:iam::{account_id(key)}:user/{key}"


def grant_headers() -> dict[str, str]:
    """The ``acl`` situation's grants, as boto3 arguments (bucket and objects alike)."""
    ids = ", ".join(f'id="{canonical_id(USERS[c][0])}"' for c in ("owner", "rw", "ro"))
    return {"GrantFullControl": ids, "GrantRead": f'uri="{ALL_USERS}"'}


def situation_policy(situation: str, bucket: str) -> str | None:
    resources = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    if situation == "policy":
        statements = [
            {"Sid": "Users", "Effect": "Allow", "Principal": {"AWS": [user_arn("rw"), user_arn("ro")]},
             "Action": "s3:*", "Resource": resources},
            {"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
             "Resource": resources},
        ]
    elif situation == "deny":
        statements = [{"Sid": "All", "Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": resources},
                      {"Sid": "None", "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": resources}]
    else:
        return None
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def harmless_policy(bucket: str) -> str:
    """What PutBucketPolicy writes where the situation has no policy (removed again after)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::*:user/nobody-at-all"}, "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/no-such-key"}]})


@dataclass
class World:
    srv: ServerProcess
    clients: dict[str, object]
    buckets: dict[str, str]  # situation -> bucket name
    sink: str  # a root bucket everyone may write to: the destination of copy_out

    @property
    def root(self):
        return self.clients["root"]

    def acl_args(self, situation: str) -> dict[str, str]:
        return grant_headers() if situation in ("acl", "deny") else {"ACL": "private"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    srv = start_server(tmp_path_factory.mktemp("access-matrix"))
    try:
        admin = AdminClient(srv.endpoint, ROOT_USER, ROOT_PASSWORD)
        for key, secret, policy in USERS.values():
            admin.call("PUT", f"users/{key}", {"secret_key": secret, "policy": policy})
        clients: dict[str, object] = {"root": srv.client()}
        for caller, (key, secret, _) in USERS.items():
            clients[caller] = srv.client(access_key=key, secret_key=secret)
        clients["anon"] = boto3.client("s3", endpoint_url=srv.endpoint, region_name=REGION,
                                       config=Config(signature_version=UNSIGNED))
        owner = clients["owner"]
        buckets = {}
        for situation in SITUATIONS:
            name = new_bucket_name(f"mx-{situation}")
            buckets[situation] = name
            owner.create_bucket(Bucket=name)
            acl = grant_headers() if situation in ("acl", "deny") else {}
            owner.put_object(Bucket=name, Key="obj", Body=BODY, **acl)
            if acl:
                owner.put_bucket_acl(Bucket=name, **acl)
            policy = situation_policy(situation, name)
            if policy is not None:
                owner.put_bucket_policy(Bucket=name, Policy=policy)
        sink = new_bucket_name("mx-sink")
        clients["root"].create_bucket(Bucket=sink)
        clients["root"].put_bucket_policy(Bucket=sink, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{sink}/*"}]}))
        yield World(srv, clients, buckets, sink)
    finally:
        stop_server(srv)
    text = srv.log_text()
    assert "Traceback" not in text and "unhandled error" not in text, f"the server logged a bug:\n{text[-6000:]}"


@pytest.fixture(autouse=True)
def no_server_bugs(world: World) -> Iterator[None]:
    """A 500 (a traceback in the server's log) fails the cell that caused it."""
    with no_new_tracebacks_in(world.srv.log_path):
        yield


# --------------------------------------------------------------------------------------------
# The operations. Each runs as the caller (``run``), after the root user prepared what it
# needs (``prepare``); ``check`` then verifies through the root user that the cell's answer
# is what happened (an allowed write is there, a denied one is not), and puts the bucket
# back as the situation has it.

def exists(w: World, bucket: str, key: str) -> bool:
    try:
        w.root.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise


@dataclass
class Cell:
    w: World
    situation: str
    caller: str
    op: str

    @property
    def bucket(self) -> str:
        return self.w.buckets[self.situation]

    @property
    def client(self):
        return self.w.clients[self.caller]

    @property
    def tag(self) -> str:
        return f"{self.caller}-{self.op}"


@dataclass
class Op:
    run: Callable[[Cell, dict], object]
    prepare: Callable[[Cell], dict] = lambda cell: {}
    check: Callable[[Cell, dict, bool], None] = lambda cell, state, allowed: None
    allowed_errors: tuple[str, ...] = ()  # error codes an allowed caller may still get


def _get(cell: Cell, state: dict) -> None:
    body = cell.client.get_object(Bucket=cell.bucket, Key="obj")["Body"].read()
    assert body == BODY


def _put_check(cell: Cell, state: dict, allowed: bool) -> None:
    assert exists(cell.w, cell.bucket, f"put-{cell.tag}") is allowed


def _del_prepare(cell: Cell) -> dict:
    key = f"del-{cell.tag}"
    cell.w.root.put_object(Bucket=cell.bucket, Key=key, Body=b"d")
    return {"key": key}


def _del_check(cell: Cell, state: dict, allowed: bool) -> None:
    assert exists(cell.w, cell.bucket, state["key"]) is not allowed


def _uploads(cell: Cell, key: str) -> list[dict]:
    return [u for u in cell.w.root.list_multipart_uploads(Bucket=cell.bucket, Prefix=key).get("Uploads", [])
            if u["Key"] == key]


def _mpc_check(cell: Cell, state: dict, allowed: bool) -> None:
    uploads = _uploads(cell, f"mpc-{cell.tag}")
    assert len(uploads) == (1 if allowed else 0)
    for u in uploads:
        cell.w.root.abort_multipart_upload(Bucket=cell.bucket, Key=u["Key"], UploadId=u["UploadId"])


def _mpu_prepare(cell: Cell) -> dict:
    key = f"mpu-{cell.tag}"
    return {"key": key, "upload": cell.w.root.create_multipart_upload(Bucket=cell.bucket, Key=key)["UploadId"]}


def _mpu_check(cell: Cell, state: dict, allowed: bool) -> None:
    parts = cell.w.root.list_parts(Bucket=cell.bucket, Key=state["key"], UploadId=state["upload"]).get("Parts", [])
    assert len(parts) == (1 if allowed else 0)
    cell.w.root.abort_multipart_upload(Bucket=cell.bucket, Key=state["key"], UploadId=state["upload"])


def _mpf_prepare(cell: Cell) -> dict:
    state = {"key": f"mpf-{cell.tag}"}
    state["upload"] = cell.w.root.create_multipart_upload(Bucket=cell.bucket, Key=state["key"])["UploadId"]
    etag = cell.w.root.upload_part(Bucket=cell.bucket, Key=state["key"], UploadId=state["upload"], PartNumber=1,
                                   Body=b"one part")["ETag"]
    state["parts"] = [{"PartNumber": 1, "ETag": etag}]
    return state


def _mpf_check(cell: Cell, state: dict, allowed: bool) -> None:
    assert exists(cell.w, cell.bucket, state["key"]) is allowed
    if not allowed:
        assert len(_uploads(cell, state["key"])) == 1  # still there to complete
        cell.w.root.abort_multipart_upload(Bucket=cell.bucket, Key=state["key"], UploadId=state["upload"])


def _delete_objects(cell: Cell, state: dict) -> None:
    answer = cell.client.delete_objects(Bucket=cell.bucket, Delete={"Objects": [{"Key": k} for k in state["keys"]]})
    errors = answer.get("Errors", [])
    deleted = [d["Key"] for d in answer.get("Deleted", [])]
    if errors:
        assert not deleted, f"some keys deleted, some not: {answer}"
        assert sorted(e["Key"] for e in errors) == sorted(state["keys"])
        codes = {e["Code"] for e in errors}
        assert codes == {"AccessDenied"}, f"per-key errors: {errors}"
        raise _Denied()
    assert sorted(deleted) == sorted(state["keys"])


def _dels_prepare(cell: Cell) -> dict:
    keys = [f"dels-{cell.tag}-{i}" for i in (1, 2)]
    for key in keys:
        cell.w.root.put_object(Bucket=cell.bucket, Key=key, Body=b"d")
    return {"keys": keys}


def _dels_check(cell: Cell, state: dict, allowed: bool) -> None:
    for key in state["keys"]:
        assert exists(cell.w, cell.bucket, key) is not allowed, key


def _policy_prepare(cell: Cell) -> dict:
    return {"policy": situation_policy(cell.situation, cell.bucket)}


def _put_policy(cell: Cell, state: dict) -> None:
    cell.client.put_bucket_policy(Bucket=cell.bucket, Policy=state["policy"] or harmless_policy(cell.bucket))


def _policy_check(cell: Cell, state: dict, allowed: bool) -> None:
    if state["policy"] is None:
        if allowed:
            cell.w.root.delete_bucket_policy(Bucket=cell.bucket)
        with pytest.raises(ClientError) as excinfo:
            cell.w.root.get_bucket_policy(Bucket=cell.bucket)
        assert excinfo.value.response["Error"]["Code"] == "NoSuchBucketPolicy"
    else:
        assert cell.w.root.get_bucket_policy(Bucket=cell.bucket)["Policy"] == state["policy"]


def _grants(response: dict) -> list:
    return sorted(json.dumps(g, sort_keys=True) for g in response["Grants"])


def _bucket_acl_prepare(cell: Cell) -> dict:
    return {"grants": _grants(cell.w.root.get_bucket_acl(Bucket=cell.bucket))}


def _bucket_acl_check(cell: Cell, state: dict, allowed: bool) -> None:
    assert _grants(cell.w.root.get_bucket_acl(Bucket=cell.bucket)) == state["grants"]


def _object_acl_prepare(cell: Cell) -> dict:
    return {"grants": _grants(cell.w.root.get_object_acl(Bucket=cell.bucket, Key="obj"))}


def _object_acl_check(cell: Cell, state: dict, allowed: bool) -> None:
    assert _grants(cell.w.root.get_object_acl(Bucket=cell.bucket, Key="obj")) == state["grants"]


def _copy_check(bucket_of: Callable[[Cell], str], key_of: Callable[[Cell], str]):
    def check(cell: Cell, state: dict, allowed: bool) -> None:
        assert exists(cell.w, bucket_of(cell), key_of(cell)) is allowed
        if allowed:
            assert cell.w.root.get_object(Bucket=bucket_of(cell), Key=key_of(cell))["Body"].read() == BODY
    return check


OPS: dict[str, Op] = {
    "list_objects": Op(lambda c, s: c.client.list_objects_v2(Bucket=c.bucket, MaxKeys=5)),
    "get_object": Op(_get),
    "head_object": Op(lambda c, s: c.client.head_object(Bucket=c.bucket, Key="obj")),
    "put_object": Op(lambda c, s: c.client.put_object(Bucket=c.bucket, Key=f"put-{c.tag}", Body=b"p"),
                     check=_put_check),
    "delete_object": Op(lambda c, s: c.client.delete_object(Bucket=c.bucket, Key=s["key"]), _del_prepare, _del_check),
    "multipart_create": Op(lambda c, s: c.client.create_multipart_upload(Bucket=c.bucket, Key=f"mpc-{c.tag}"),
                           check=_mpc_check),
    "multipart_upload_part": Op(lambda c, s: c.client.upload_part(Bucket=c.bucket, Key=s["key"], UploadId=s["upload"],
                                                                  PartNumber=1, Body=b"part"),
                                _mpu_prepare, _mpu_check),
    "multipart_complete": Op(lambda c, s: c.client.complete_multipart_upload(
        Bucket=c.bucket, Key=s["key"], UploadId=s["upload"], MultipartUpload={"Parts": s["parts"]}),
        _mpf_prepare, _mpf_check),
    "copy_within": Op(lambda c, s: c.client.copy_object(Bucket=c.bucket, Key=f"cpi-{c.tag}",
                                                        CopySource={"Bucket": c.bucket, "Key": "obj"}),
                      check=_copy_check(lambda c: c.bucket, lambda c: f"cpi-{c.tag}")),
    "copy_out": Op(lambda c, s: c.client.copy_object(Bucket=c.w.sink, Key=f"{c.situation}-{c.tag}",
                                                     CopySource={"Bucket": c.bucket, "Key": "obj"}),
                   check=_copy_check(lambda c: c.w.sink, lambda c: f"{c.situation}-{c.tag}")),
    "delete_objects": Op(_delete_objects, _dels_prepare, _dels_check),
    "get_bucket_policy": Op(lambda c, s: c.client.get_bucket_policy(Bucket=c.bucket),
                            allowed_errors=("NoSuchBucketPolicy",)),
    "put_bucket_policy": Op(_put_policy, _policy_prepare, _policy_check),
    "get_bucket_acl": Op(lambda c, s: c.client.get_bucket_acl(Bucket=c.bucket)),
    "put_bucket_acl": Op(lambda c, s: c.client.put_bucket_acl(Bucket=c.bucket, **c.w.acl_args(c.situation)),
                         _bucket_acl_prepare, _bucket_acl_check),
    "get_object_acl": Op(lambda c, s: c.client.get_object_acl(Bucket=c.bucket, Key="obj")),
    "put_object_acl": Op(lambda c, s: c.client.put_object_acl(Bucket=c.bucket, Key="obj", **c.w.acl_args(c.situation)),
                         _object_acl_prepare, _object_acl_check),
    "list_multipart_uploads": Op(lambda c, s: c.client.list_multipart_uploads(Bucket=c.bucket)),
}


class _Denied(Exception):
    """DeleteObjects answered AccessDenied for every key."""


# --------------------------------------------------------------------------------------------
# What decide.py's rules say

READS = {"list_objects", "get_object", "head_object", "get_bucket_policy", "get_bucket_acl", "get_object_acl",
         "list_multipart_uploads"}  # what s3:Get* and s3:List* (the readonly policy) cover
POLICY_ONLY = {"get_bucket_policy", "put_bucket_policy"}  # no ACL permission grants these
PUBLIC_BY_POLICY = {"list_objects", "get_object", "head_object", "copy_out"}  # GetObject, ListBucket to "*"
PUBLIC_BY_ACL = PUBLIC_BY_POLICY | {"list_multipart_uploads"}  # AllUsers READ on the bucket and the object


def expected(situation: str, caller: str, op: str) -> bool:
    if caller == "root":
        return True  # rule 1
    if situation == "deny":
        return False  # rule 2: the bucket policy denies everyone, whatever else allows
    if caller == "owner":
        return True  # rule 3: its readwrite policy
    if caller == "ro" and op not in READS:
        return False  # rule 4: a readonly user stays read-only everywhere
    if situation == "none":
        return False  # rules 4 and 5: nobody granted anything
    if caller == "anon":  # rule 5: only the grants to everyone
        return op in (PUBLIC_BY_POLICY if situation == "policy" else PUBLIC_BY_ACL)
    if situation == "acl":
        return op not in POLICY_ONLY  # rule 4 through the grants of the bucket's and the object's ACLs
    return True  # rule 4 through the policy's grant to the user's ARN


CELLS = [(s, c, o) for s in SITUATIONS for c in CALLERS for o in OPS]


@pytest.mark.parametrize("situation,caller,op", CELLS, ids=[f"{s}-{c}-{o}" for s, c, o in CELLS])
def test_matrix(world: World, situation: str, caller: str, op: str):
    cell = Cell(world, situation, caller, op)
    spec = OPS[op]
    want = expected(situation, caller, op)
    name = f"cell ({situation} bucket, {caller}, {op})"
    state = spec.prepare(cell)
    got: str
    try:
        spec.run(cell, state)
        got = "allowed"
    except _Denied:
        got = "denied"
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        if code in spec.allowed_errors:
            got = "allowed"
        elif status == 403 and code in ("AccessDenied", "403"):  # a HEAD's 403 has no body to name it
            got = "denied"
        else:
            pytest.fail(f"{name}: expected {'allow' if want else 'deny'}, got {status} {code}")
    assert got == ("allowed" if want else "denied"), f"{name}: expected {'allow' if want else 'deny'}, got {got}"
    spec.check(cell, state, want)


def test_matrix_covers_every_family():
    """The table is the issue's: five callers, four grant situations, every operation family,
    and each family is both allowed and denied somewhere."""
    assert len(CALLERS) == 5 and len(SITUATIONS) == 4
    for op in OPS:
        outcomes = {expected(s, c, op) for s in SITUATIONS for c in CALLERS}
        assert outcomes == {True, False}, op


# --------------------------------------------------------------------------------------------
# Beyond the table: one request, several resources

def test_delete_objects_answers_per_key(world: World):
    """A grant over part of a bucket: DeleteObjects deletes the keys the caller may delete and
    answers AccessDenied for each other key, in one 200 answer."""
    bucket = new_bucket_name("mx-perkey")
    owner = world.clients["owner"]
    owner.create_bucket(Bucket=bucket)
    owner.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": user_arn("rw")}, "Action": "s3:DeleteObject",
         "Resource": f"arn:aws:s3:::{bucket}/tmp/*"}]}))
    keys = ["tmp/a", "keep/b", "tmp/c", "keep/d"]
    for key in keys:
        owner.put_object(Bucket=bucket, Key=key, Body=b"x")
    answer = world.clients["rw"].delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == ["tmp/a", "tmp/c"]
    assert sorted((e["Key"], e["Code"]) for e in answer["Errors"]) == [("keep/b", "AccessDenied"),
                                                                        ("keep/d", "AccessDenied")]
    assert [o["Key"] for o in world.root.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep/b", "keep/d"]


def test_upload_part_copy_needs_the_source(world: World):
    """UploadPartCopy into a bucket the caller may write needs s3:GetObject on the source too."""
    rw = world.clients["rw"]
    mine = new_bucket_name("mx-rw")
    rw.create_bucket(Bucket=mine)
    upload = rw.create_multipart_upload(Bucket=mine, Key="assembled")["UploadId"]
    with pytest.raises(ClientError) as excinfo:
        rw.upload_part_copy(Bucket=mine, Key="assembled", UploadId=upload, PartNumber=1,
                            CopySource={"Bucket": world.buckets["none"], "Key": "obj"})
    assert excinfo.value.response["Error"]["Code"] == "AccessDenied"
    assert rw.list_parts(Bucket=mine, Key="assembled", UploadId=upload).get("Parts", []) == []
    etag = rw.upload_part_copy(Bucket=mine, Key="assembled", UploadId=upload, PartNumber=1,
                               CopySource={"Bucket": world.buckets["policy"], "Key": "obj"})["CopyPartResult"]["ETag"]
    rw.complete_multipart_upload(Bucket=mine, Key="assembled", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert rw.get_object(Bucket=mine, Key="assembled")["Body"].read() == BODY
