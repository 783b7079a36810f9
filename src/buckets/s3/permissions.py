"""Authorization of S3 requests: may this caller do this action on this resource?

``authorize`` is the one function every operation goes through (the pipeline calls it
with the operation's action; handlers call it again only for what one request does to
several resources: each key of DeleteObjects, the source of a copy, the upload of a POST
form). The decision itself is ``buckets.iam``'s; this module gathers its inputs (the
caller's policy, the bucket's policy, ACL and settings, the object's ACL when needed, the
request's condition keys).
"""

from __future__ import annotations

from typing import Any

from buckets.errors import AccessDenied


async def authorize(req: Any, action: str, bucket: str | None, key: str | None = None, *,
                    context: dict[str, Any] | None = None) -> None:
    """Raise ``AccessDenied`` unless ``req.auth`` (the caller) may do ``action`` (an IAM
    action name such as ``s3:PutObject``) on ``bucket``/``key``. ``context`` adds condition
    keys the request itself does not carry (``s3:x-amz-acl`` of a POST form field, ...)."""
    if req.auth is None or req.auth.is_anonymous:
        raise AccessDenied()
