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


def _error(name: str, code: str, status: int, message: str) -> type[BucketsError]:
    return type(name, (BucketsError,), {"code": code, "status": status, "default_message": message})


# --- 4xx: the client's fault -------------------------------------------------------------
AccessDenied = _error("AccessDenied", "AccessDenied", 403, "Access Denied.")
InvalidAccessKeyId = _error(
    "InvalidAccessKeyId", "InvalidAccessKeyId", 403,
    "The AWS Access Key Id you provided does not exist in our records.")
SignatureDoesNotMatch = _error(
    "SignatureDoesNotMatch", "SignatureDoesNotMatch", 403,
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.")
RequestTimeTooSkewed = _error(
    "RequestTimeTooSkewed", "RequestTimeTooSkewed", 403,
    "The difference between the request time and the server's time is too large.")
ExpiredToken = _error("ExpiredToken", "AccessDenied", 403, "Request has expired")
AuthorizationHeaderMalformed = _error(
    "AuthorizationHeaderMalformed", "AuthorizationHeaderMalformed", 400,
    "The authorization header is malformed.")
AuthorizationQueryParametersError = _error(
    "AuthorizationQueryParametersError", "AuthorizationQueryParametersError", 400,
    "Error parsing the X-Amz-Credential parameter.")
MissingSecurityHeader = _error(
    "MissingSecurityHeader", "MissingSecurityHeader", 400, "Your request was missing a required header.")
XAmzContentSHA256Mismatch = _error(
    "XAmzContentSHA256Mismatch", "XAmzContentSHA256Mismatch", 400,
    "The provided 'x-amz-content-sha256' header does not match what was computed.")
InvalidArgument = _error("InvalidArgument", "InvalidArgument", 400, "Invalid Argument")
InvalidRequest = _error("InvalidRequest", "InvalidRequest", 400, "Invalid Request")
MalformedXML = _error(
    "MalformedXML", "MalformedXML", 400,
    "The XML you provided was not well-formed or did not validate against our published schema.")
InvalidBucketName = _error("InvalidBucketName", "InvalidBucketName", 400, "The specified bucket is not valid.")
KeyTooLongError = _error("KeyTooLongError", "KeyTooLongError", 400, "Your key is too long.")
InvalidObjectName = _error("InvalidObjectName", "InvalidArgument", 400, "Object name contains unsupported characters.")
MetadataTooLarge = _error(
    "MetadataTooLarge", "MetadataTooLarge", 400,
    "Your metadata headers exceed the maximum allowed metadata size.")
EntityTooSmall = _error(
    "EntityTooSmall", "EntityTooSmall", 400,
    "Your proposed upload is smaller than the minimum allowed object size.")
EntityTooLarge = _error(
    "EntityTooLarge", "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size.")
IncompleteBody = _error(
    "IncompleteBody", "IncompleteBody", 400,
    "You did not provide the number of bytes specified by the Content-Length HTTP header.")
BadDigest = _error(
    "BadDigest", "BadDigest", 400, "The Content-MD5 or checksum you specified did not match what we received.")
InvalidDigest = _error("InvalidDigest", "InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
InvalidPart = _error(
    "InvalidPart", "InvalidPart", 400,
    "One or more of the specified parts could not be found. The part may not have been uploaded, "
    "or the specified entity tag may not match the part's entity tag.")
InvalidPartOrder = _error(
    "InvalidPartOrder", "InvalidPartOrder", 400,
    "The list of parts was not in ascending order. Parts must be ordered by part number.")
InvalidRange = _error("InvalidRange", "InvalidRange", 416, "The requested range is not satisfiable")
InvalidPartNumber = _error(
    "InvalidPartNumber", "InvalidPartNumber", 416, "The requested partnumber is not satisfiable")
NoSuchBucket = _error("NoSuchBucket", "NoSuchBucket", 404, "The specified bucket does not exist")
NoSuchKey = _error("NoSuchKey", "NoSuchKey", 404, "The specified key does not exist.")
NoSuchUpload = _error(
    "NoSuchUpload", "NoSuchUpload", 404,
    "The specified multipart upload does not exist. The upload ID may be invalid, "
    "or the upload may have been aborted or completed.")
NoSuchVersion = _error("NoSuchVersion", "NoSuchVersion", 404, "The specified version does not exist.")
MethodNotAllowed = _error(
    "MethodNotAllowed", "MethodNotAllowed", 405, "The specified method is not allowed against this resource.")
BucketAlreadyExists = _error(
    "BucketAlreadyExists", "BucketAlreadyExists", 409,
    "The requested bucket name is not available. Please select a different name and try again.")
BucketAlreadyOwnedByYou = _error(
    "BucketAlreadyOwnedByYou", "BucketAlreadyOwnedByYou", 409,
    "Your previous request to create the named bucket succeeded and you already own it.")
BucketNotEmpty = _error("BucketNotEmpty", "BucketNotEmpty", 409, "The bucket you tried to delete is not empty")
ConditionalRequestConflict = _error(
    "ConditionalRequestConflict", "ConditionalRequestConflict", 409,
    "A conflicting conditional operation is currently in progress against this resource.")
PreconditionFailed = _error(
    "PreconditionFailed", "PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold")
MissingContentLength = _error(
    "MissingContentLength", "MissingContentLength", 411, "You must provide the Content-Length HTTP header.")
RequestTimeout = _error(
    "RequestTimeout", "RequestTimeout", 400,
    "Your socket connection to the server was not read from or written to within the timeout period.")
NotImplementedErr = _error(
    "NotImplementedErr", "NotImplemented", 501, "A header or query you provided implies functionality that is not implemented.")

# --- 5xx: ours ---------------------------------------------------------------------------
InternalError = _error("InternalError", "InternalError", 500, "We encountered an internal error. Please try again.")
SlowDown = _error("SlowDown", "SlowDown", 503, "Please reduce your request rate.")
ServiceUnavailable = _error("ServiceUnavailable", "ServiceUnavailable", 503, "The service is unavailable.")


class WriteQuorumLost(BucketsError):
    """Fewer disks than the write quorum accepted the write; nothing was committed."""

    code = "SlowDown"
    status = 503
    default_message = "Write quorum lost: not enough disks are online to store the object safely."


class ReadQuorumLost(BucketsError):
    """Fewer than k good shards are available: the object cannot be reconstructed now."""

    code = "ServiceUnavailable"
    status = 503
    default_message = "Read quorum lost: not enough healthy disks hold this object to reconstruct it."


class DiskError(Exception):
    """A disk-level failure (offline, I/O error, missing file). Never shown to clients as-is."""


class DiskNotFound(DiskError):
    """The file or directory asked for does not exist on this disk."""


class CorruptData(DiskError):
    """A piece or metadata file failed its checksum."""


class FormatError(Exception):
    """A disk's format is wrong for this deployment (foreign, other deployment, unreadable)."""
