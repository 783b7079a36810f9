"""Bucket operations: CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation,
Get/PutBucketVersioning, and S3's bucket naming rules."""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

from buckets.errors import InvalidArgument, InvalidBucketName, MalformedXML
from buckets.iam.errors import InvalidBucketAclWithObjectOwnership
from buckets.s3.acls import acl_from_headers
from buckets.s3.body import read_document
from buckets.s3.context import S3Request, region_is_strict
from buckets.s3.errors import IllegalLocationConstraint
from buckets.s3.handlers.access import OWNERSHIP_VALUES
from buckets.s3.handlers.common import empty_response, xml_response
from buckets.s3 import lockrules
from buckets.s3.handlers.objectlock import create_bucket_settings
from buckets.s3.permissions import owner_name
from buckets.s3.xmlio import XmlBuilder, parse_document

_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap")
MAX_CONFIG_XML = 64 * 1024


def check_bucket_name(name: str) -> None:
    """S3's general-purpose bucket naming rules; any violation is InvalidBucketName."""
    problem = None
    if not 3 <= len(name) <= 63:
        problem = "Bucket names must be between 3 and 63 characters long."
    elif not _NAME.fullmatch(name):  # fullmatch: "$" would admit a trailing newline
        problem = ("Bucket names can consist only of lowercase letters, numbers, dots and hyphens, "
                   "and must begin and end with a letter or number.")
    elif ".." in name or ".-" in name or "-." in name:
        problem = "Bucket names must not contain two adjacent periods or a period next to a hyphen."
    elif name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        problem = "Bucket names must not use a reserved prefix or suffix."
    else:
        try:
            ipaddress.IPv4Address(name)
            problem = "Bucket names must not be formatted as an IP address."
        except ValueError:
            pass
    if problem:
        raise InvalidBucketName(problem, BucketName=name)


def _has_body(req: S3Request) -> bool:
    length = req.headers.get("Content-Length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "chunked" in req.headers.get("Transfer-Encoding", "").lower()


async def create_bucket(req: S3Request) -> web.StreamResponse:
    check_bucket_name(req.bucket)
    owner = owner_name(req)
    settings: dict = create_bucket_settings(req.headers)  # x-amz-bucket-object-lock-enabled
    ownership = req.headers.get("x-amz-object-ownership")
    if ownership is not None:
        if ownership.strip() not in OWNERSHIP_VALUES:
            raise InvalidArgument("Invalid x-amz-object-ownership header", ArgumentName="x-amz-object-ownership",
                                  ArgumentValue=ownership)
        settings["ownership"] = ownership.strip()
    acl = acl_from_headers(req, owner, for_bucket=True, bucket_owner=owner)
    if acl is not None and not acl.is_owner_only:
        if settings.get("ownership") == "BucketOwnerEnforced":
            raise InvalidBucketAclWithObjectOwnership()
        settings["acl"] = acl.to_record()
    if _has_body(req):
        body, _ = await read_document(req, MAX_CONFIG_XML)
        if body.strip():
            config = parse_document(body, "CreateBucketConfiguration")
            location = config.child_text("LocationConstraint")
            # A client configured for another region sends it here (`aws s3 mb` with
            # AWS_DEFAULT_REGION=eu-west-1); only a strict region refuses it.
            if location is not None and location.strip() and location.strip() != req.config.region \
                    and region_is_strict(req.config):
                raise IllegalLocationConstraint(
                    f"The {location.strip()} location constraint is incompatible for the region "
                    f"specific endpoint this request was sent to ({req.config.region}).")
    await req.store.make_bucket(req.bucket, owner, settings)
    return empty_response(200, {"Location": f"/{req.bucket}"})


async def head_bucket(req: S3Request) -> web.StreamResponse:
    await req.store.get_bucket(req.bucket)
    return empty_response(200, {"x-amz-bucket-region": req.config.region,
                                "x-amz-access-point-alias": "false"})


async def delete_bucket(req: S3Request) -> web.StreamResponse:
    await req.store.delete_bucket(req.bucket)
    return empty_response(204)


async def get_bucket_location(req: S3Request) -> web.StreamResponse:
    await req.store.get_bucket(req.bucket)
    # us-east-1 is reported as an empty constraint, as S3 does (clients map it back).
    region = req.config.region
    doc = XmlBuilder("LocationConstraint")
    if region != "us-east-1":
        doc.text(region)
    return xml_response(doc.finish())


async def get_bucket_versioning(req: S3Request) -> web.StreamResponse:
    """No <Status> for a bucket never versioned, as S3 answers."""
    record = await req.store.bucket_record(req.bucket)
    doc = XmlBuilder("VersioningConfiguration")
    if record.get("versioning"):
        doc.elem("Status", record["versioning"])
    return xml_response(doc.finish())


async def put_bucket_versioning(req: S3Request) -> web.StreamResponse:
    """Enabled or Suspended (never back to unversioned). MFA Delete is not supported: asking
    to enable it is refused, as on S3 buckets without an MFA device."""
    body, _ = await read_document(req, MAX_CONFIG_XML)
    doc = parse_document(body, "VersioningConfiguration")
    status = doc.child_text("Status")
    mfa = doc.child_text("MfaDelete")
    if status not in ("Enabled", "Suspended") or mfa not in (None, "Disabled", "Enabled"):
        raise MalformedXML()
    if mfa == "Enabled":
        raise InvalidArgument("MFA Delete is not supported by this server.", ArgumentName="MfaDelete",
                              ArgumentValue=mfa)
    lockrules.check_versioning_change(await req.store.bucket_record(req.bucket), status)
    await req.store.set_versioning(req.bucket, status)
    return empty_response(200)
