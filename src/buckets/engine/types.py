"""Value types the engine returns and accepts.

These are the contract between the engine and everything above it (S3 handlers,
admin API, embedded users). Plain dataclasses: no I/O, no behaviour beyond small helpers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

NULL_VERSION = "null"

# Headers S3 stores with an object and returns verbatim on GET/HEAD.
STORED_HEADERS = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
)


@dataclass(slots=True)
class BucketInfo:
    name: str
    created: float  # unix seconds
    owner: str = ""  # the access key of the user who created it; "" is the root user


@dataclass(slots=True)
class SSEInfo:
    """How an object (or a multipart upload) is encrypted at rest: what GET/HEAD report and
    what a read must present. Never holds a key."""

    mode: str  # "SSE-S3" | "SSE-KMS" | "SSE-C"
    kms_key_id: str | None = None  # SSE-KMS: the key's name in the node's key store
    bucket_key: bool = False  # SSE-KMS: x-amz-server-side-encryption-bucket-key-enabled
    context: str | None = None  # SSE-KMS: the encryption context (JSON text), if one was given
    customer_key_check: bytes | None = None  # SSE-C: salt + HMAC-SHA256 of the customer key


@dataclass(slots=True)
class SSESpec:
    """The encryption a write asks for (``PutOptions.sse``), or the customer key a part upload
    of an SSE-C upload presents. ``customer_key`` lives in memory only: it is never stored."""

    mode: str  # "SSE-S3" | "SSE-KMS" | "SSE-C"
    kms_key_id: str | None = None  # SSE-KMS: a key name, ARN or alias/NAME; None: the default key
    bucket_key: bool = False
    context: str | None = None  # SSE-KMS: encryption context, canonical JSON text
    customer_key: bytes | None = None  # SSE-C: the 32-byte key


@dataclass(slots=True)
class PartInfo:
    """One part of an object (a single PUT is one part numbered 1)."""

    number: int
    size: int  # plaintext bytes (an encrypted part takes a little more on disk)
    etag: str  # hex MD5 of the part, no quotes (SSE-C/SSE-KMS: an opaque value of the same form)
    checksums: dict[str, str] = field(default_factory=dict)  # {"CRC32": base64, ...}
    last_modified: float = 0.0
    sse: SSEInfo | None = None  # UploadPart's answer: the upload's encryption


@dataclass(slots=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str  # no quotes; "<md5hex>" or "<md5-of-md5s>-N"
    last_modified: float  # unix seconds
    headers: dict[str, str] = field(default_factory=dict)  # STORED_HEADERS present on PUT
    user_meta: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* (name without prefix, lowercase)
    checksums: dict[str, str] = field(default_factory=dict)  # {"CRC32": "base64" or "base64-N"}
    checksum_type: str | None = None  # "FULL_OBJECT" | "COMPOSITE" | None
    version_id: str = NULL_VERSION
    storage_class: str = "STANDARD"
    parts: list[PartInfo] = field(default_factory=list)
    content_hash: str = ""  # BLAKE3 hex of the whole object (encrypted: of its stored bytes)
    sse: SSEInfo | None = None  # encryption at rest, None when stored in the clear
    delete_marker: bool = False  # a delete marker (a version with no data), in version listings
    is_latest: bool = True
    owner: str | None = None  # the object's owner (access key, "" root); None: the bucket's owner
    tags: dict[str, str] = field(default_factory=dict)
    lock_mode: str | None = None  # object lock retention: "GOVERNANCE" | "COMPLIANCE"
    lock_until: float | None = None  # retain-until date, unix seconds
    legal_hold: bool | None = None  # None: never set; False: set OFF
    upload_id: str | None = None  # the multipart upload that made it, if any

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "binary/octet-stream")


# Called by the engine once the whole body has been consumed, before anything is
# committed. It receives what the engine computed: {"md5": bytes, "size": int,
# "CRC32": base64, ...}. Raise a BucketsError (BadDigest, ...) to abort the write; the
# engine then removes everything it staged.
VerifyHook = Callable[[dict], Awaitable[None]]


@dataclass(slots=True)
class PutOptions:
    headers: dict[str, str] = field(default_factory=dict)  # subset of STORED_HEADERS
    user_meta: dict[str, str] = field(default_factory=dict)
    checksum_algorithms: tuple[str, ...] = ()  # extra checksums to compute: "CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"
    checksum_type: str | None = None  # for multipart: "FULL_OBJECT" or "COMPOSITE"
    verify: VerifyHook | None = None
    if_match: str | None = None  # commit only if the current ETag equals this
    if_none_match: bool = False  # commit only if no object exists ("If-None-Match: *")
    # (internal) commit only if the current version satisfies this (the lifecycle's expiry of
    # the very version it judged); checked with if_match, under the key's lock
    if_current: Callable[[dict], bool] | None = None
    storage_class: str = "STANDARD"  # STANDARD | REDUCED_REDUNDANCY (fewer parity shards)
    # Who owns the new object and its ACL: {"own": access key, "acl": ACL record}, kept in its
    # entry (absent: the bucket's owner, no ACL beyond the owner's). See buckets.iam.
    access: dict = field(default_factory=dict)
    sse: SSESpec | None = None  # encrypt at rest; None: the bucket's default encryption, if any
    tags: dict[str, str] = field(default_factory=dict)  # the object's tag set (validated by the caller)
    lock_mode: str | None = None  # object lock: "GOVERNANCE" | "COMPLIANCE" (with lock_until);
    lock_until: float | None = None  # None: the bucket's default retention, if it has one
    legal_hold: bool = False


@dataclass(slots=True)
class DeleteResult:
    version_id: str | None  # the version removed, or the delete marker written (None: unversioned)
    delete_marker: bool  # a delete marker was written, or the version removed was one
    deleted: bool = True  # False: there was nothing to delete (S3 still answers 204)


@dataclass(slots=True)
class VersionListResult:
    versions: list[ObjectInfo]  # keys ascending, each key's versions newest first (markers too)
    prefixes: list[str]
    is_truncated: bool
    next_key_marker: str | None
    next_version_id_marker: str | None


@dataclass(slots=True)
class ByteRange:
    """An inclusive-exclusive resolved range [start, end)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(slots=True)
class ListResult:
    objects: list[ObjectInfo]
    prefixes: list[str]
    is_truncated: bool
    next_marker: str | None  # the last key or common prefix returned, when truncated


@dataclass(slots=True)
class UploadInfo:
    bucket: str
    key: str
    upload_id: str
    initiated: float
    headers: dict[str, str] = field(default_factory=dict)
    user_meta: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str | None = None
    checksum_type: str | None = None
    storage_class: str = "STANDARD"
    sse: SSEInfo | None = None


@dataclass(slots=True)
class ListPartsResult:
    upload: UploadInfo
    parts: list[PartInfo]
    is_truncated: bool
    next_marker: int


@dataclass(slots=True)
class ListUploadsResult:
    uploads: list[UploadInfo]
    prefixes: list[str]
    is_truncated: bool
    next_key_marker: str | None
    next_upload_id_marker: str | None


@dataclass(slots=True)
class CompletePart:
    number: int
    etag: str  # as the client sent it (quotes stripped by the S3 layer)
    checksums: dict[str, str] = field(default_factory=dict)


BodyStream = AsyncIterator[bytes]
