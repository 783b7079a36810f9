"""Who may do what: the access-control model, pure and without I/O.

Owns the AWS policy language (parsing, validation as ``MalformedPolicy``, matching of
actions, resources, principals and conditions), ACLs (canned ACLs, grants, what each
permission allows), and the one decision function (``decide``) every S3 operation's
permission goes through. It must not read HTTP, storage or the registry: the S3 layer
(``buckets.s3.permissions``) gathers a request's inputs and asks here.

    policy = parse_policy(text, bucket="photos")        # MalformedPolicy on bad input
    decision = decide(AccessRequest(...), identity=..., bucket=BucketAccess(...))
    decision.allowed
"""

from buckets.iam.acl import ACL, CANNED_ACLS, Grant, canned_acl
from buckets.iam.decide import AccessRequest, BucketAccess, Decision, decide
from buckets.iam.identity import Caller, account_id, canonical_id
from buckets.iam.policy import Policy, canned_user_policy, parse_policy

__all__ = [
    "ACL", "CANNED_ACLS", "AccessRequest", "BucketAccess", "Caller", "Decision", "Grant", "Policy",
    "account_id", "canned_acl", "canned_user_policy", "canonical_id", "decide", "parse_policy",
]
