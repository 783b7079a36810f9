"""Typed errors shared by every layer.

Each class carries the S3 error ``code`` and HTTP ``status`` it maps to. The engine and
the storage layers raise these; the S3 layer renders them as XML in one place
(``buckets.s3.errors``). Nothing here knows about HTTP beyond the status number.
"""

from __future__ import annotations


class BucketsError(Exception):
    """Base of every error a client may see. ``code``/``status`` follow Amazon S3."""

    code: str = "InternalError"
    status: int = 500
    default_message: str = "We encountered an internal error. Please try again."

    def __init__(self, message: str | None = None, *, resource: str | None = None, **extra: str) -> None:
        self.message = message or self.default_message
        self.resource = resource
        self.extra = extra  # extra XML fields, e.g. BucketName, Key, UploadId
        super().__init__(self.message)


def define_error(name: str, code: str, status: int, message: str) -> type[BucketsError]:
    """A BucketsError subclass for one S3 error code (used by every layer that needs one)."""
    return type(name, (BucketsError,), {"code": code, "status": status, "default_message": message})


# --- 4xx: the client's fault -------------------------------------------------------------
AccessDenied = define_error("AccessDenied", "AccessDenied", 403, "Access Denied.")
InvalidAccessKeyId = define_error(
    "InvalidAccessKeyId", "InvalidAccessKeyId", 403,
    "The AWS Access Key Id you provided does not exist in our records.")
SignatureDoesNotMatch = define_error(
    "SignatureDoesNotMatch", "SignatureDoesNotMatch", 403,
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.")
RequestTimeTooSkewed = define_error(
    "RequestTimeTooSkewed", "RequestTimeTooSkewed", 403,
    "The difference between the request time and the server's time is too large.")
ExpiredToken = define_error("ExpiredToken", "AccessDenied", 403, "Request has expired")
AuthorizationHeaderMalformed = define_error(
    "AuthorizationHeaderMalformed", "AuthorizationHeaderMalformed", 400,
    "The authorization header is malformed.")
AuthorizationQueryParametersError = define_error(
    "AuthorizationQueryParametersError", "AuthorizationQueryParametersError", 400,
    "Error parsing the X-Amz-Credential parameter.")
MissingSecurityHeader = define_error(
    "MissingSecurityHeader", "MissingSecurityHeader", 400, "Your request was missing a required header.")
XAmzContentSHA256Mismatch = define_error(
    "XAmzContentSHA256Mismatch", "XAmzContentSHA256Mismatch", 400,
    "The provided 'x-amz-content-sha256' header does not match what was computed.")
InvalidArgument = define_error("InvalidArgument", "InvalidArgument", 400, "Invalid Argument")
InvalidRequest = define_error("InvalidRequest", "InvalidRequest", 400, "Invalid Request")
MalformedXML = define_error(
    "MalformedXML", "MalformedXML", 400,
    "The XML you provided was not well-formed or did not validate against our published schema.")
InvalidBucketName = define_error("InvalidBucketName", "InvalidBucketName", 400, "The specified bucket is not valid.")
KeyTooLongError = define_error("KeyTooLongError", "KeyTooLongError", 400, "Your key is too long.")
InvalidObjectName = define_error("InvalidObjectName", "InvalidArgument", 400, "Object name contains unsupported characters.")
MetadataTooLarge = define_error(
    "MetadataTooLarge", "MetadataTooLarge", 400,
    "Your metadata headers exceed the maximum allowed metadata size.")
EntityTooSmall = define_error(
    "EntityTooSmall", "EntityTooSmall", 400,
    "Your proposed upload is smaller than the minimum allowed object size.")
EntityTooLarge = define_error(
    "EntityTooLarge", "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size.")
IncompleteBody = define_error(
    "IncompleteBody", "IncompleteBody", 400,
    "You did not provide the number of bytes specified by the Content-Length HTTP header.")
BadDigest = define_error(
    "BadDigest", "BadDigest", 400, "The Content-MD5 or checksum you specified did not match what we received.")
InvalidDigest = define_error("InvalidDigest", "InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
InvalidPart = define_error(
    "InvalidPart", "InvalidPart", 400,
    "One or more of the specified parts could not be found. The part may not have been uploaded, "
    "or the specified entity tag may not match the part's entity tag.")
InvalidPartOrder = define_error(
    "InvalidPartOrder", "InvalidPartOrder", 400,
    "The list of parts was not in ascending order. Parts must be ordered by part number.")
InvalidRange = define_error("InvalidRange", "InvalidRange", 416, "The requested range is not satisfiable")
InvalidPartNumber = define_error(
    "InvalidPartNumber", "InvalidPartNumber", 416, "The requested partnumber is not satisfiable")
NoSuchBucket = define_error("NoSuchBucket", "NoSuchBucket", 404, "The specified bucket does not exist")
NoSuchKey = define_error("NoSuchKey", "NoSuchKey", 404, "The specified key does not exist.")
NoSuchUpload = define_error(
    "NoSuchUpload", "NoSuchUpload", 404,
    "The specified multipart upload does not exist. The upload ID may be invalid, "
    "or the upload may have been aborted or completed.")
InvalidBucketState = define_error(
    "InvalidBucketState", "InvalidBucketState", 409, "The request is not valid with the current state of the bucket.")
NoSuchVersion = define_error("NoSuchVersion", "NoSuchVersion", 404, "The specified version does not exist.")
MethodNotAllowed = define_error(
    "MethodNotAllowed", "MethodNotAllowed", 405, "The specified method is not allowed against this resource.")
BucketAlreadyExists = define_error(
    "BucketAlreadyExists", "BucketAlreadyExists", 409,
    "The requested bucket name is not available. Please select a different name and try again.")
BucketAlreadyOwnedByYou = define_error(
    "BucketAlreadyOwnedByYou", "BucketAlreadyOwnedByYou", 409,
    "Your previous request to create the named bucket succeeded and you already own it.")
BucketNotEmpty = define_error("BucketNotEmpty", "BucketNotEmpty", 409, "The bucket you tried to delete is not empty")
ConditionalRequestConflict = define_error(
    "ConditionalRequestConflict", "ConditionalRequestConflict", 409,
    "A conflicting conditional operation is currently in progress against this resource.")
OperationAborted = define_error(
    "OperationAborted", "OperationAborted", 409,
    "A conflicting conditional operation is currently in progress against this resource. Try again.")
PreconditionFailed = define_error(
    "PreconditionFailed", "PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold")
MissingContentLength = define_error(
    "MissingContentLength", "MissingContentLength", 411, "You must provide the Content-Length HTTP header.")
RequestTimeout = define_error(
    "RequestTimeout", "RequestTimeout", 400,
    "Your socket connection to the server was not read from or written to within the timeout period.")
NotImplementedErr = define_error(
    "NotImplementedErr", "NotImplemented", 501, "A header or query you provided implies functionality that is not implemented.")
# A bucket's settings changed between a request's check of them and its change of them (a
# change through another node of a cluster): the request reads them again and retries.
BucketSettingsChanged = type("BucketSettingsChanged", (OperationAborted,), {
    "default_message": "The bucket's configuration changed while this request was applied; retry the request."})

# --- 5xx: ours ---------------------------------------------------------------------------
InternalError = define_error("InternalError", "InternalError", 500, "We encountered an internal error. Please try again.")
SlowDown = define_error("SlowDown", "SlowDown", 503, "Please reduce your request rate.")
ServiceUnavailable = define_error("ServiceUnavailable", "ServiceUnavailable", 503, "The service is unavailable.")


class WriteQuorumLost(BucketsError):
    """Fewer disks than the write quorum accepted the write; nothing was committed."""

    code = "SlowDown"
    status = 503
    default_message = "Write quorum lost: not enough disks are online to store the object safely."


class StorageFull(WriteQuorumLost):
    """Too many of the disks an object goes to are at their free-space reserve (kept for
    deletions: ``--disk-reserve``) for a write quorum; nothing was written. Not a moment's
    trouble, so not a 503 that SDKs retry: 507, as MinIO answers a full drive
    (``XMinioStorageFull``); deleting objects or adding disks makes room."""

    code = "StorageFull"
    status = 507
    default_message = ("The storage is full: the disks this object goes to keep their remaining space for "
                       "deletions. Delete objects, or add disks, to make room.")


class BucketBeingDeleted(WriteQuorumLost):
    """A cluster's index replicas refused a write's new entry: a DeleteBucket of its bucket is
    under way there (its mark applied). Nothing of the write stands where it was refused; its
    node waits for the deletion's outcome and writes again, or answers ``NoSuchBucket``."""

    default_message = "The bucket is being deleted; retry the request."


class RegistryFailed(BucketsError):
    """This node's registry (its LMDB environment) can no longer be written or read: its disk
    failed (an I/O error, a file system gone read-only) or the environment is damaged. Nothing
    of the request was committed. A single node restarts in place and rebuilds its registry on
    another disk (``buckets.cli.server``); a cluster node answers this until it is repaired."""

    code = "ServiceUnavailable"
    status = 503
    default_message = "This node's registry could not be written: its disk failed. Retry the request."


class MergedTooLate(WriteQuorumLost):
    """An index replica refused a blind PUT's entry merged again too long after its first
    version (``IndexReplica._refuse_late``): another node may have removed that write's data by
    then. Not an answer toward the writer's quorum; its PUT fails with its outcome unknown."""

    default_message = "The write was merged again too late; retry the request."


class ReadQuorumLost(BucketsError):
    """Fewer than k good shards are available: the object cannot be reconstructed now."""

    code = "ServiceUnavailable"
    status = 503
    default_message = "Read quorum lost: not enough healthy disks hold this object to reconstruct it."


class WriteReplaced(ReadQuorumLost):
    """The write a read looked up was replaced or deleted while it was read, and its data is
    gone (on a cluster, the overwrite's or delete's node removes it without waiting for GETs
    through other nodes). Still a 503 if it reaches a client: a second try reads what the key
    holds now (``Store.get_object(..., begin=True)`` takes that try itself)."""

    default_message = "The object was replaced while it was read; please try again."


class KeyLocked(BucketsError):
    """An index replica holds the key for a conditional write that is committing (the key's
    lock, ``Registry`` op ``lock_key``): other writes of the key wait for it to end."""

    code = "SlowDown"
    status = 503
    default_message = "A conditional write to this key is committing; retry the request."

    def __init__(self, message: str | None = None, *, until: float = 0.0, **kw: str) -> None:
        super().__init__(message, **kw)
        self.until = until  # when the lock expires if its writer never ends it (wall clock)


class DiskError(Exception):
    """A disk-level failure. Never shown to clients as-is: the engine turns disk failures
    into quorum decisions (``WriteQuorumLost``, ``ReadQuorumLost``, a heal).

    Every class below has a stable ``code``, so a disk error crosses a peer RPC as
    ``{"code", "message"}`` (``disk_error_to_wire``) and comes back as the same class
    (``disk_error_from_wire``): code above a remote disk catches what it would catch from
    a local one. A plain ``DiskError`` is a failure with no better name (an unexpected
    errno, a caller passing an impossible argument).
    """

    code = "DiskError"


class FileNotFound(DiskError):
    """The file or directory asked for does not exist on this disk (or a path component is
    not a directory)."""

    code = "FileNotFound"


class CorruptData(DiskError):
    """A piece or metadata file failed its checksum, or a file is larger than any file of
    its kind can be."""

    code = "CorruptData"


class DiskFull(DiskError):
    """No space (or quota) left on the disk's filesystem."""

    code = "DiskFull"


class DiskAccessDenied(DiskError):
    """The disk refused the operation: permissions (a file system gone read-only is
    ``DiskFaulty``)."""

    code = "DiskAccessDenied"


class PathEscape(DiskError):
    """A path that does not name something inside the disk root (``..``, absolute, NUL), or
    an operation that would replace or remove the root itself. Always a caller bug."""

    code = "PathEscape"


class DiskOffline(DiskError):
    """The disk cannot be used at all: its root is gone or not a directory, it is closed,
    or (remote) its node does not answer. The disk is marked offline when this happens."""

    code = "DiskOffline"


class DiskFaulty(DiskOffline):
    """The device answered with an I/O error (EIO, ENODEV, ...), or its file system went
    read-only after an error (EROFS): the disk is marked offline and probed until it answers
    again, a write included."""

    code = "DiskFaulty"


class DiskTimeout(DiskOffline):
    """The disk (or the node serving it) did not answer within the call's time limit."""

    code = "DiskTimeout"


class DiskSlow(DiskOffline):
    """(Remote) the call timed out, but the disk's node answered other calls meanwhile: it is
    alive and slow (a saturated or degraded link), not gone. The slot is left out of this
    operation like an offline one, but the disk is not marked offline and its node stays
    online: the engine goes around slow sources by itself (``engine/hedge.py``), and a disk
    that hangs on a node that answers is taken offline by that node's own ``--disk-timeout``."""

    code = "DiskSlow"


class UnformattedDisk(DiskError):
    """The disk root holds no format file and nothing else (missing or empty): it may be
    formatted."""

    code = "UnformattedDisk"


class ForeignDisk(DiskError):
    """The disk root holds files but no format file: someone else's directory, never used."""

    code = "ForeignDisk"


class DiskInUse(DiskError):
    """Another process holds the disk's lock (``.buckets.sys/lock``): a second server started
    on the same directories. Two processes appending to one disk's logs and registry would
    corrupt it, so the start is refused."""

    code = "DiskInUse"


DISK_ERRORS: dict[str, type[DiskError]] = {cls.code: cls for cls in (
    DiskError, FileNotFound, CorruptData, DiskFull, DiskAccessDenied, PathEscape, DiskOffline,
    DiskFaulty, DiskTimeout, DiskSlow, UnformattedDisk, ForeignDisk, DiskInUse)}


def disk_error_to_wire(error: DiskError) -> dict[str, str]:
    """The msgpack-able form of a disk error: ``{"code": ..., "message": ...}``."""
    return {"code": error.code, "message": str(error)}


def disk_error_from_wire(doc: object) -> DiskError:
    """The disk error ``doc`` describes, as the class its code names. An unknown code (a
    newer peer) or a malformed record is a plain ``DiskError``, still a disk failure."""
    if not isinstance(doc, dict) or not isinstance(doc.get("message", ""), str):
        return DiskError(f"malformed disk error record: {doc!r:.200}")
    cls = DISK_ERRORS.get(doc.get("code"), DiskError) if isinstance(doc.get("code"), str) else DiskError
    return cls(doc.get("message", ""))


class FormatError(Exception):
    """A disk's format is wrong for this deployment (foreign, other deployment, unreadable)."""
