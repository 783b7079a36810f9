"""Request routing: which bucket, which key, which S3 operation.

Pure functions over the request line and Host header, no I/O. Path-style
(`/bucket/key`) and virtual-host-style (`bucket.<domain>/key`, domains from config)
addressing both resolve to a `Target`; `select_operation` then names the S3 operation
from the method and the query sub-resources. Sub-resources S3 defines but this server
does not implement raise NotImplemented (501), never fall through to a wrong handler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from buckets.engine.names import check_bucket_name
from buckets.errors import MethodNotAllowed, NotImplementedErr
from buckets.s3.errors import InvalidURI


@dataclass(frozen=True, slots=True)
class Target:
    bucket: str | None
    key: str | None
    host_bucket: str | None  # set when the bucket came from the Host header

    @property
    def resource(self) -> str:
        """The `Resource` element of an error document: /bucket/key as the client addressed
        it. A character XML 1.0 cannot carry even as a reference (NUL, most C0 controls) is
        left percent-encoded as it was sent, so that the error document stays readable by
        strict parsers (boto3's): a client refused for such a name still sees the code."""
        if self.bucket is None:
            return "/"
        text = f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}"
        return _NOT_XML.sub(lambda m: quote(m.group(0), safe=""), text)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def bucket_from_host(host: str, domains: list[str]) -> str | None:
    """`photos.s3.example.com:9000` with domain `s3.example.com` -> `photos`."""
    if not host or not domains:
        return None
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    hostname = hostname.lower().rstrip(".")
    for domain in domains:
        domain = domain.lower().rstrip(".")
        if hostname.endswith("." + domain):
            bucket = hostname[: -len(domain) - 1]
            if bucket:
                return bucket
    return None


def _decode(segment: str) -> str:
    try:
        return unquote(segment, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidURI() from None


def parse_target(host: str, raw_path: str, domains: list[str]) -> Target:
    """Split the raw (still percent-encoded) request path into bucket and key.

    The key is decoded after splitting so that `%2F` inside a key stays part of the key
    and `+` stays a plus (S3 paths are not form-encoded). Nothing is normalised: S3 keys
    may hold `.` and `..` segments, `//`, control characters (`%0A`, ...) and they are
    kept exactly as sent (the key never becomes a file path, see `buckets.engine.names`).
    """
    path = raw_path.split("?", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    host_bucket = bucket_from_host(host, domains)
    if host_bucket is not None:
        key = _decode(path[1:])
        return Target(host_bucket, key or None, host_bucket)
    rest = path[1:]
    if not rest:
        return Target(None, None, None)
    bucket_raw, _, key_raw = rest.partition("/")
    bucket = _decode(bucket_raw)
    if not bucket:
        raise InvalidURI()
    key = _decode(key_raw)
    return Target(bucket, key or None, None)


# Every sub-resource S3 defines. Those this server answers are handled in select_operation;
# any other present in the query means the client wants something not implemented.
KNOWN_SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption",
    "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "location", "logging",
    "metadataTable", "metrics", "notification", "object-lock", "ownershipControls",
    "partNumber", "policy", "policyStatus", "publicAccessBlock", "renameObject", "replication",
    "requestPayment", "restore", "retention", "select", "session", "tagging", "torrent",
    "uploadId", "uploads", "versionId", "versioning", "versions", "website",
})

# Sub-resources that only qualify an operation, never select one by themselves.
_QUALIFIERS = frozenset({"versionId", "partNumber", "uploadId"})


def _unsupported(query: Mapping[str, str], supported: set[str]) -> str | None:
    for name in query:
        if name in KNOWN_SUBRESOURCES and name not in supported:
            return name
    return None


def select_operation(method: str, target: Target, query: Mapping[str, str],
                     headers: Mapping[str, str]) -> str:
    """Name the S3 operation (AWS API names) this request asks for.

    A bucket name no bucket can have (a control character, `_`, upper case, too short...)
    is InvalidBucketName whatever the operation, before anything looks it up. A PUT on a
    bucket (CreateBucket) is left to its handler, which applies the stricter rules for new
    names with a message saying which one failed.
    """
    if target.bucket is None:
        if method in ("GET", "HEAD"):
            return "ListBuckets"
        raise MethodNotAllowed(resource="/")
    if target.key is None:
        if method != "PUT":
            check_bucket_name(target.bucket)
        return _bucket_operation(method, query)
    check_bucket_name(target.bucket)
    return _object_operation(method, query, headers)


def _not_implemented(name: str) -> NotImplementedErr:
    return NotImplementedErr(
        f"The '{name}' sub-resource is not implemented by this server.")


# Bucket configuration sub-resources: name -> (GET, PUT, DELETE) operation (None: not allowed).
_BUCKET_CONFIG = {
    "policy": ("GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"),
    "policyStatus": ("GetBucketPolicyStatus", None, None),
    "acl": ("GetBucketAcl", "PutBucketAcl", None),
    "ownershipControls": ("GetBucketOwnershipControls", "PutBucketOwnershipControls",
                          "DeleteBucketOwnershipControls"),
    "publicAccessBlock": ("GetPublicAccessBlock", "PutPublicAccessBlock", "DeletePublicAccessBlock"),
    "cors": ("GetBucketCors", "PutBucketCors", "DeleteBucketCors"),
    "encryption": ("GetBucketEncryption", "PutBucketEncryption", "DeleteBucketEncryption"),
    "notification": ("GetBucketNotificationConfiguration", "PutBucketNotificationConfiguration", None),
    "versioning": ("GetBucketVersioning", "PutBucketVersioning", None),
    "lifecycle": ("GetBucketLifecycleConfiguration", "PutBucketLifecycleConfiguration", "DeleteBucketLifecycle"),
    "tagging": ("GetBucketTagging", "PutBucketTagging", "DeleteBucketTagging"),
    "object-lock": ("GetObjectLockConfiguration", "PutObjectLockConfiguration", None),
}
# Object sub-resources: name -> (GET, PUT, DELETE) operation (None: not allowed).
_OBJECT_CONFIG = {
    "acl": ("GetObjectAcl", "PutObjectAcl", None),
    "tagging": ("GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging"),
    "retention": ("GetObjectRetention", "PutObjectRetention", None),
    "legal-hold": ("GetObjectLegalHold", "PutObjectLegalHold", None),
}
_METHOD_COLUMN = {"GET": 0, "PUT": 1, "DELETE": 2}


def _bucket_config(method: str, query: Mapping[str, str], table: dict = _BUCKET_CONFIG) -> str | None:
    for name, ops in table.items():
        if name in query:
            column = _METHOD_COLUMN.get(method)
            op = ops[column] if column is not None else None
            if op is None:
                raise MethodNotAllowed()
            return op
    return None


def _bucket_operation(method: str, query: Mapping[str, str]) -> str:
    if method in ("GET", "PUT", "DELETE"):
        bad = _unsupported(query, {"location", "uploads", "versions", *_BUCKET_CONFIG})
        if bad:
            raise _not_implemented(bad)
        config = _bucket_config(method, query)
        if config is not None:
            return config
    if method == "GET":
        table = {"location": "GetBucketLocation", "uploads": "ListMultipartUploads",
                 "versions": "ListObjectVersions"}
        for name, op in table.items():
            if name in query:
                return op
        if query.get("list-type") == "2":
            return "ListObjectsV2"
        return "ListObjects"
    if method == "HEAD":
        return "HeadBucket"
    if method == "PUT":
        bad = _unsupported(query, set())
        if bad:
            raise _not_implemented(bad)
        return "CreateBucket"
    if method == "DELETE":
        bad = _unsupported(query, set())
        if bad:
            raise _not_implemented(bad)
        return "DeleteBucket"
    if method == "POST":
        bad = _unsupported(query, {"delete"})
        if bad:
            raise _not_implemented(bad)
        if "delete" in query:
            return "DeleteObjects"
        return "PostObject"
    if method == "OPTIONS":
        return "PreflightRequest"
    raise MethodNotAllowed()


def _object_operation(method: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    if method in ("GET", "PUT", "DELETE"):
        config = _bucket_config(method, query, _OBJECT_CONFIG)
        if config is not None:
            bad = _unsupported(query, {*_OBJECT_CONFIG, "versionId"})
            if bad:
                raise _not_implemented(bad)
            return config
    if method == "GET":
        bad = _unsupported(query, {"uploadId", "attributes"} | _QUALIFIERS)
        if bad:
            raise _not_implemented(bad)
        if "uploadId" in query:
            return "ListParts"
        if "attributes" in query:
            return "GetObjectAttributes"
        return "GetObject"
    if method == "HEAD":
        bad = _unsupported(query, set(_QUALIFIERS))
        if bad:
            raise _not_implemented(bad)
        return "HeadObject"
    if method == "PUT":
        bad = _unsupported(query, set(_QUALIFIERS))
        if bad:
            raise _not_implemented(bad)
        copy = "x-amz-copy-source" in headers
        if "uploadId" in query or "partNumber" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "DELETE":
        bad = _unsupported(query, set(_QUALIFIERS))
        if bad:
            raise _not_implemented(bad)
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "POST":
        bad = _unsupported(query, {"uploads", "uploadId"})
        if bad:
            raise _not_implemented(bad)
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        raise MethodNotAllowed()
    if method == "OPTIONS":
        return "PreflightRequest"
    raise MethodNotAllowed()
