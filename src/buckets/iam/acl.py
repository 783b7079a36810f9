"""Access control lists: grants of READ/WRITE/READ_ACP/WRITE_ACP/FULL_CONTROL to users
(by canonical ID) or to the groups AllUsers and AuthenticatedUsers.

A bucket's ACL and each object's ACL are stored as plain data (``ACL.to_record``). Canned
ACLs (``x-amz-acl``) and ``x-amz-grant-*`` headers become grants here; what each permission
allows is AWS's mapping (``BUCKET_PERMISSIONS``/``OBJECT_PERMISSIONS``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from buckets.errors import InvalidArgument
from buckets.iam.errors import UnresolvableGrantByEmailAddress

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
GROUPS = (ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY)
PERMISSIONS = ("FULL_CONTROL", "WRITE", "WRITE_ACP", "READ", "READ_ACP")

# What a grant on a bucket / on an object allows (AWS's ACL-to-action mapping). WRITE on a
# bucket lets the grantee create, overwrite and delete its objects (and run multipart
# uploads, which Buckets counts as writing).
BUCKET_PERMISSIONS = {
    "READ": {"s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads"},
    "WRITE": {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload",
              "s3:ListMultipartUploadParts"},
    "READ_ACP": {"s3:GetBucketAcl"},
    "WRITE_ACP": {"s3:PutBucketAcl"},
}
OBJECT_PERMISSIONS = {
    "READ": {"s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"},
    "READ_ACP": {"s3:GetObjectAcl", "s3:GetObjectVersionAcl"},
    "WRITE_ACP": {"s3:PutObjectAcl", "s3:PutObjectVersionAcl"},
}
for _table in (BUCKET_PERMISSIONS, OBJECT_PERMISSIONS):
    _table["FULL_CONTROL"] = set().union(*_table.values())

CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
               "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write")
GRANT_HEADERS = {"x-amz-grant-read": "READ", "x-amz-grant-write": "WRITE", "x-amz-grant-read-acp": "READ_ACP",
                 "x-amz-grant-write-acp": "WRITE_ACP", "x-amz-grant-full-control": "FULL_CONTROL"}


@dataclass(frozen=True, slots=True)
class Grant:
    kind: str  # "id" (a canonical user ID) or "group" (a group URI)
    grantee: str
    permission: str


@dataclass(frozen=True, slots=True)
class ACL:
    """The owner (an access key; "" the root user) and the grants, in order."""

    owner: str
    grants: tuple[Grant, ...]

    def to_record(self) -> dict:
        return {"owner": self.owner, "grants": [[g.kind, g.grantee, g.permission] for g in self.grants]}

    @classmethod
    def from_record(cls, rec: Mapping | None, default_owner: str = "") -> ACL | None:
        if not rec:
            return None
        return cls(rec.get("owner", default_owner), tuple(Grant(*g) for g in rec.get("grants", ())))

    def allows(self, permissions: Mapping[str, set[str]], action: str, caller_id: str | None,
               ignore_public: bool = False) -> bool:
        """Whether a grant of this ACL lets the caller (canonical ID, None: anonymous) do ``action``."""
        for g in self.grants:
            if action not in permissions.get(g.permission, ()):
                continue
            if g.kind == "id":
                if caller_id is not None and g.grantee == caller_id:
                    return True
            elif g.grantee == ALL_USERS and not ignore_public:
                return True
            elif g.grantee == AUTHENTICATED_USERS and caller_id is not None and not ignore_public:
                return True
        return False

    @property
    def is_public(self) -> bool:
        return any(g.kind == "group" and g.grantee in (ALL_USERS, AUTHENTICATED_USERS) for g in self.grants)

    @property
    def is_owner_only(self) -> bool:
        """Nothing beyond the owner's own full control (what an ACL-less bucket accepts)."""
        return all(g.kind == "id" and g.permission == "FULL_CONTROL" for g in self.grants)


def canned_acl(name: str, owner: str, owner_id: str, bucket_owner_id: str | None = None, *,
               for_bucket: bool) -> ACL:
    """The grants of a canned ACL (InvalidArgument for an unknown name or one that does not
    apply to this kind of resource, as AWS answers)."""
    if name not in CANNED_ACLS:
        raise InvalidArgument(None, ArgumentName="x-amz-acl", ArgumentValue=name)
    grants = [Grant("id", owner_id, "FULL_CONTROL")]
    if name == "public-read":
        grants.append(Grant("group", ALL_USERS, "READ"))
    elif name == "public-read-write":
        grants += [Grant("group", ALL_USERS, "READ"), Grant("group", ALL_USERS, "WRITE")]
    elif name == "authenticated-read":
        grants.append(Grant("group", AUTHENTICATED_USERS, "READ"))
    elif name == "log-delivery-write":
        grants += [Grant("group", LOG_DELIVERY, "WRITE"), Grant("group", LOG_DELIVERY, "READ_ACP")]
    elif name in ("bucket-owner-read", "bucket-owner-full-control") and not for_bucket \
            and bucket_owner_id is not None and bucket_owner_id != owner_id:
        grants.append(Grant("id", bucket_owner_id, "READ" if name == "bucket-owner-read" else "FULL_CONTROL"))
    return ACL(owner, tuple(grants))


_GRANTEE = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*"?([^",]*)"?\s*(?:,|$)', re.IGNORECASE)


def grants_from_headers(headers: Mapping[str, str], owner: str, owner_id: str,
                        known_id: Callable[[str], bool]) -> ACL | None:
    """The ACL that ``x-amz-grant-*`` headers spell, or None when there are none. The owner
    keeps full control as AWS adds it implicitly."""
    grants: list[Grant] = []
    seen = False
    for header, permission in GRANT_HEADERS.items():
        value = headers.get(header)
        if value is None:
            continue
        seen = True
        pos = 0
        value = value.strip()
        while pos < len(value):
            m = _GRANTEE.match(value, pos)
            if m is None or m.end() == pos:
                raise InvalidArgument("Argument format not recognized", ArgumentName=header, ArgumentValue=value)
            kind, grantee = m.group(1).lower(), m.group(2).strip()
            pos = m.end()
            grants.append(_grant(kind, grantee, permission, known_id, header))
    if not seen:
        return None
    return ACL(owner, tuple(grants))


def _grant(kind: str, grantee: str, permission: str, known_id: Callable[[str], bool], where: str) -> Grant:
    if kind == "emailaddress":
        raise UnresolvableGrantByEmailAddress(EmailAddress=grantee)
    if kind == "uri":
        if grantee not in GROUPS:
            raise InvalidArgument("Invalid group uri", ArgumentName=where, ArgumentValue=grantee)
        return Grant("group", grantee, permission)
    if not known_id(grantee):
        raise InvalidArgument("Invalid id", ArgumentName=where, ArgumentValue=grantee)
    return Grant("id", grantee, permission)


def make_grant(kind: str, grantee: str, permission: str, known_id: Callable[[str], bool]) -> Grant:
    """A grant from an AccessControlPolicy document (kind: "id", "uri" or "emailaddress")."""
    if permission not in PERMISSIONS:
        from buckets.iam.errors import MalformedACLError

        raise MalformedACLError()
    return _grant(kind, grantee, permission, known_id, "AccessControlList")


def owner_acl(owner: str, owner_id: str) -> ACL:
    """The ACL of a resource nobody set one on: its owner has full control."""
    return ACL(owner, (Grant("id", owner_id, "FULL_CONTROL"),))

