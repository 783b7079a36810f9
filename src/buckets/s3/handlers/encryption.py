"""Bucket default encryption: Put/Get/DeleteBucketEncryption (SSE-S3, SSE-KMS).

The configuration is kept in the bucket's record as ``encryption``: ``{"alg": "AES256" |
"aws:kms", "kid": KMSMasterKeyID or None, "bk": BucketKeyEnabled}``. PutObject, CopyObject
and CreateMultipartUpload without encryption headers encrypt as it says (the engine reads
it, ``crypto.bucket_default``); requests that name an encryption use theirs.
"""

from __future__ import annotations

from aiohttp import web

from buckets.errors import InvalidArgument, MalformedXML, NotImplementedErr, define_error
from buckets.s3.body import Integrity, read_document
from buckets.s3.context import S3Request
from buckets.s3.handlers.common import empty_response, xml_response
from buckets.s3.xmlio import XmlBuilder, parse_document

MAX_ENCRYPTION_XML = 64 * 1024
ALGORITHMS = ("AES256", "aws:kms", "aws:kms:dsse")

ServerSideEncryptionConfigurationNotFound = define_error(
    "ServerSideEncryptionConfigurationNotFound", "ServerSideEncryptionConfigurationNotFoundError", 404,
    "The server side encryption configuration was not found")


def parse_configuration(body: bytes) -> dict:
    """A ServerSideEncryptionConfiguration document as the bucket record keeps it."""
    doc = parse_document(body, "ServerSideEncryptionConfiguration")
    rules = doc.find_all("Rule")
    if len(rules) != 1 or len(doc.children) != 1:
        raise MalformedXML("The XML you provided was not well-formed or did not validate against our published "
                           "schema: one Rule is required.")
    rule = rules[0]
    if any(child.name not in ("ApplyServerSideEncryptionByDefault", "BucketKeyEnabled") for child in rule.children):
        raise MalformedXML()
    default = rule.find("ApplyServerSideEncryptionByDefault")
    if default is None or any(c.name not in ("SSEAlgorithm", "KMSMasterKeyID") for c in default.children):
        raise MalformedXML()
    algorithm = (default.child_text("SSEAlgorithm") or "").strip()
    if algorithm not in ALGORITHMS:
        raise MalformedXML()
    if algorithm == "aws:kms:dsse":
        raise NotImplementedErr("Dual-layer server-side encryption (aws:kms:dsse) is not implemented by this server.")
    key_id = default.child_text("KMSMasterKeyID")
    if key_id is not None:
        key_id = key_id.strip()
        if algorithm != "aws:kms":
            raise InvalidArgument("a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms",
                                  ArgumentName="ApplyServerSideEncryptionByDefault")
        if not key_id:
            raise InvalidArgument("The KMSMasterKeyID must not be empty.", ArgumentName="KMSMasterKeyID")
    bucket_key = (rule.child_text("BucketKeyEnabled") or "false").strip().lower()
    if bucket_key not in ("true", "false"):
        raise MalformedXML()
    return {"alg": algorithm, "kid": key_id or None, "bk": bucket_key == "true"}


def configuration_xml(config: dict) -> bytes:
    doc = XmlBuilder("ServerSideEncryptionConfiguration")
    doc.open("Rule").open("ApplyServerSideEncryptionByDefault")
    doc.elem("SSEAlgorithm", config.get("alg", "AES256"))
    if config.get("kid"):
        doc.elem("KMSMasterKeyID", config["kid"])
    doc.close()
    doc.elem("BucketKeyEnabled", bool(config.get("bk")))
    return doc.finish()


async def put_bucket_encryption(req: S3Request) -> web.StreamResponse:
    integrity = Integrity.from_headers(req.headers)
    body, reader = await read_document(req, MAX_ENCRYPTION_XML)
    integrity.reader = reader
    integrity.check_document(body, required=False)
    config = parse_configuration(body)
    await req.store.bucket_record(req.bucket)  # NoSuchBucket before the key store is asked
    kms = getattr(req.store, "kms", None)
    if kms is None:
        from buckets.engine.crypto import KMSNotConfigured

        raise KMSNotConfigured()
    # The master key is needed by the first PUT this default encrypts: make sure it is there
    # (created now if this deployment never had one), and that a named KMS key exists.
    await kms.ensure_master()
    if config["alg"] == "aws:kms" and config["kid"]:
        kms.resolve(config["kid"])
    await req.store.update_bucket(req.bucket, set={"encryption": config})
    return empty_response(200)


async def get_bucket_encryption(req: S3Request) -> web.StreamResponse:
    config = (await req.store.bucket_record(req.bucket)).get("encryption")
    if not config:
        raise ServerSideEncryptionConfigurationNotFound(BucketName=req.bucket)
    return xml_response(configuration_xml(config))


async def delete_bucket_encryption(req: S3Request) -> web.StreamResponse:
    await req.store.bucket_record(req.bucket)  # NoSuchBucket before anything else
    await req.store.update_bucket(req.bucket, unset=["encryption"])
    return empty_response(204)
