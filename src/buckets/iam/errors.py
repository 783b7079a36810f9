"""The S3 errors of access control (rendered by the S3 layer like every other)."""

from __future__ import annotations

from buckets.errors import define_error

MalformedPolicy = define_error("MalformedPolicy", "MalformedPolicy", 400, "Policies must be valid JSON.")
NoSuchBucketPolicy = define_error("NoSuchBucketPolicy", "NoSuchBucketPolicy", 404,
                                  "The bucket policy does not exist")
MalformedACLError = define_error(
    "MalformedACLError", "MalformedACLError", 400,
    "The XML you provided was not well-formed or did not validate against our published schema")
UnresolvableGrantByEmailAddress = define_error(
    "UnresolvableGrantByEmailAddress", "UnresolvableGrantByEmailAddress", 400,
    "The e-mail address you provided does not match any account on record.")
AccessControlListNotSupported = define_error(
    "AccessControlListNotSupported", "AccessControlListNotSupported", 400, "The bucket does not allow ACLs")
InvalidBucketAclWithObjectOwnership = define_error(
    "InvalidBucketAclWithObjectOwnership", "InvalidBucketAclWithObjectOwnership", 400,
    "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting")
OwnershipControlsNotFoundError = define_error(
    "OwnershipControlsNotFoundError", "OwnershipControlsNotFoundError", 404,
    "The bucket ownership controls were not found")
NoSuchPublicAccessBlockConfiguration = define_error(
    "NoSuchPublicAccessBlockConfiguration", "NoSuchPublicAccessBlockConfiguration", 404,
    "The public access block configuration was not found")
