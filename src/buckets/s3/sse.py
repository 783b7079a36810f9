"""Encryption headers in and out: SSE-S3, SSE-KMS and SSE-C (customer-provided keys).

Requests ask for encryption with ``x-amz-server-side-encryption`` (``AES256`` or ``aws:kms``,
the latter with ``-aws-kms-key-id``, ``-context`` and ``-bucket-key-enabled``) or bring
their own key with ``x-amz-server-side-encryption-customer-{algorithm,key,key-MD5}`` (and,
for a copy's source, the same under ``x-amz-copy-source-``). Errors are S3's: a bad key or
MD5 is ``400 InvalidArgument``, SSE-C with another method ``400 InvalidArgument``, an
unknown method ``400 InvalidArgument``. Unlike S3, SSE-C is accepted over plain HTTP (put
TLS in front of the server, or the key crosses the network in the clear).

Responses carry what S3 sends: the method, the KMS key id and bucket-key flag for
SSE-KMS, and for SSE-C the algorithm and the MD5 of the key the request presented (the
key itself is never stored, so the MD5 can only come from the request).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from buckets.engine.crypto import MODE_C, MODE_KMS, MODE_S3
from buckets.engine.types import SSEInfo, SSESpec
from buckets.errors import InvalidArgument, NotImplementedErr, define_error

SSE = "x-amz-server-side-encryption"
KMS_KEY_ID = SSE + "-aws-kms-key-id"
CONTEXT = SSE + "-context"
BUCKET_KEY = SSE + "-bucket-key-enabled"
CUSTOMER = SSE + "-customer-"
COPY_CUSTOMER = "x-amz-copy-source-server-side-encryption-customer-"

InvalidEncryptionAlgorithm = define_error(
    "InvalidEncryptionAlgorithm", "InvalidEncryptionAlgorithmError", 400,
    "The encryption request you specified is not valid. The valid value is AES256.")

_KMS_NEEDS_HEADER = ("Server Side Encryption with AWS KMS managed key requires HTTP header "
                     "x-amz-server-side-encryption : aws:kms")


@dataclass(frozen=True, slots=True)
class CustomerKey:
    key: bytes  # 32 bytes, in memory for this request only
    md5: str  # base64 MD5 of the key, as the client sent it


def customer_key(headers: Mapping[str, str], prefix: str = CUSTOMER) -> CustomerKey | None:
    """The SSE-C key of a request (``prefix``: ``CUSTOMER`` or ``COPY_CUSTOMER``), checked as S3
    checks it; None when the request has none of the three headers."""
    algorithm = headers.get(prefix + "algorithm")
    encoded = headers.get(prefix + "key")
    md5 = headers.get(prefix + "key-MD5")
    if algorithm is None and encoded is None and md5 is None:
        return None
    if algorithm is None:
        raise InvalidArgument("Requests specifying Server Side Encryption with Customer provided keys must "
                              "provide a valid encryption algorithm.", ArgumentName=prefix + "algorithm")
    if algorithm.strip() != "AES256":
        raise InvalidEncryptionAlgorithm(ArgumentName=prefix + "algorithm", ArgumentValue=algorithm)
    if encoded is None:
        raise InvalidArgument("Requests specifying Server Side Encryption with Customer provided keys must "
                              "provide an appropriate secret key.", ArgumentName=prefix + "key")
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise InvalidArgument("The secret key was invalid for the specified algorithm.",
                              ArgumentName=prefix + "key")
    if md5 is None:
        raise InvalidArgument("Requests specifying Server Side Encryption with Customer provided keys must "
                              "provide the client calculated MD5 of the secret key.",
                              ArgumentName=prefix + "key-MD5")
    try:
        claimed = base64.b64decode(md5.strip(), validate=True)
    except (binascii.Error, ValueError):
        claimed = b""
    if claimed != hashlib.md5(key).digest():
        raise InvalidArgument("The calculated MD5 hash of the key did not match the hash that was provided.",
                              ArgumentName=prefix + "key-MD5")
    return CustomerKey(key, md5.strip())


def read_key(headers: Mapping[str, str], prefix: str = CUSTOMER) -> bytes | None:
    found = customer_key(headers, prefix)
    return found.key if found is not None else None


def _bool_header(headers: Mapping[str, str], name: str) -> bool:
    value = headers.get(name)
    if value is None:
        return False
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise InvalidArgument(f"The value of {name} must be true or false.", ArgumentName=name,
                              ArgumentValue=value)
    return text == "true"


def write_encryption(headers: Mapping[str, str]) -> SSESpec | None:
    """The encryption a write (PUT, copy destination, CreateMultipartUpload) asks for; None: the
    bucket's default applies."""
    method = headers.get(SSE)
    key_id = headers.get(KMS_KEY_ID)
    context = headers.get(CONTEXT)
    bucket_key = _bool_header(headers, BUCKET_KEY)
    customer = customer_key(headers)
    if customer is not None:
        if method is not None:
            raise InvalidArgument("Server Side Encryption with Customer provided key is incompatible with the "
                                  "encryption method specified", ArgumentName=SSE, ArgumentValue=method)
        if key_id is not None or context is not None:
            raise InvalidArgument(_KMS_NEEDS_HEADER, ArgumentName=KMS_KEY_ID if key_id is not None else CONTEXT)
        return SSESpec(MODE_C, customer_key=customer.key)
    if method is None:
        if key_id is not None or context is not None:
            raise InvalidArgument(_KMS_NEEDS_HEADER, ArgumentName=KMS_KEY_ID if key_id is not None else CONTEXT)
        return None
    method = method.strip()
    if method == "AES256":
        if key_id is not None or context is not None:
            raise InvalidArgument(_KMS_NEEDS_HEADER, ArgumentName=KMS_KEY_ID if key_id is not None else CONTEXT)
        return SSESpec(MODE_S3)
    if method == "aws:kms":
        from buckets.kms import canonical_context

        if key_id is not None and not key_id.strip():
            raise InvalidArgument("The KMS key id must not be empty.", ArgumentName=KMS_KEY_ID)
        return SSESpec(MODE_KMS, kms_key_id=key_id.strip() if key_id is not None else None,
                       bucket_key=bucket_key, context=canonical_context(context) if context is not None else None)
    if method == "aws:kms:dsse":
        raise NotImplementedErr("Dual-layer server-side encryption (aws:kms:dsse) is not implemented by this server.")
    raise InvalidArgument("The encryption method specified is not supported", ArgumentName=SSE, ArgumentValue=method)


def asks_for_encryption(headers: Mapping[str, str]) -> bool:
    """Whether a copy names its destination's encryption (which makes a copy onto itself legal)."""
    return SSE in headers or (CUSTOMER + "algorithm") in headers


def response_headers(sse: SSEInfo | None, customer: CustomerKey | None = None) -> dict[str, str]:
    """What S3 answers about an object's encryption (PUT, GET, HEAD, copy, multipart)."""
    if sse is None:
        return {}
    if sse.mode == MODE_C:
        out = {CUSTOMER + "algorithm": "AES256"}
        if customer is not None:
            out[CUSTOMER + "key-MD5"] = customer.md5
        return out
    if sse.mode == MODE_KMS:
        from buckets.kms import key_arn

        out = {SSE: "aws:kms"}
        if sse.kms_key_id:
            out[KMS_KEY_ID] = key_arn(sse.kms_key_id)
        if sse.bucket_key:
            out[BUCKET_KEY] = "true"
        return out
    return {SSE: "AES256"}
