"""S3 error documents: the one place a `BucketsError` becomes an HTTP response.

Also defines the few S3 error codes only the HTTP layer can raise (they are about
request syntax, not storage), as `BucketsError` subclasses so they render the same way.
"""

from __future__ import annotations

from aiohttp import web

from buckets.errors import BucketsError, define_error
from buckets.s3.xmlio import XmlBuilder


InvalidStorageClass = define_error("InvalidStorageClass", "InvalidStorageClass", 400,
                                   "The storage class you specified is not valid.")
IllegalLocationConstraint = define_error("IllegalLocationConstraint", "IllegalLocationConstraintException", 400,
                                         "The specified location-constraint is not valid for this endpoint.")
InvalidURI = define_error("InvalidURI", "InvalidURI", 400, "Couldn't parse the specified URI.")


def set_response_headers(err: BucketsError, headers: dict[str, str]) -> BucketsError:
    """Attach headers an error response must carry (e.g. Content-Range on InvalidRange)."""
    err.response_headers = headers  # type: ignore[attr-defined]
    return err


def error_response(err: BucketsError, *, request_id: str, host_id: str, resource: str,
                   head: bool) -> web.Response:
    """Render `err` as S3 does; a HEAD answer carries the status and headers but no body.

    `resource` is what the client addressed (/bucket/key), which S3 reports even when
    the failure concerns a part of it (a missing bucket under a key request).
    """
    headers = {"Content-Type": "application/xml"}
    headers.update(getattr(err, "response_headers", None) or {})
    if getattr(err, "delete_marker", False):  # GET/HEAD that landed on a delete marker
        headers["x-amz-delete-marker"] = "true"
        headers["x-amz-version-id"] = err.version_id  # type: ignore[attr-defined]
        if err.status == 405 and getattr(err, "last_modified", None):
            from buckets.s3.headers import http_date

            headers["Last-Modified"] = http_date(err.last_modified)  # type: ignore[attr-defined]
    if head:
        resp = web.Response(status=err.status, headers=headers)
        return resp
    doc = XmlBuilder("Error", namespace=False)
    doc.elem("Code", err.code).elem("Message", err.message)
    for name, value in err.extra.items():
        doc.elem(name, value)
    doc.elem("Resource", resource)
    doc.elem("RequestId", request_id).elem("HostId", host_id)
    return web.Response(status=err.status, body=doc.finish(), headers=headers)
