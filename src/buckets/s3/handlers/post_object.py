"""POST Object: browser uploads with a signed policy document (multipart/form-data).

The form's fields are read first (``buckets.s3.formdata``), then its signature and policy
are checked (``buckets.s3.postpolicy``) and the signer is authorized for ``s3:PutObject``
on the key; only then is the ``file`` field streamed into the engine, exactly as a
PutObject body (content-length-range is enforced while it streams: the write is aborted,
nothing is stored). The request's own Authorization header or query, if any, plays no
part: the form alone says who uploads (a form without a policy is anonymous).

The ``acl`` field is a canned ACL: handed to authorization as ``s3:x-amz-acl`` and
recorded with the object (with its owner, the form's signer) exactly as PutObject's
``x-amz-acl`` header is (``buckets.s3.acls.write_access``). Encryption, tagging and grant
fields are refused (501) rather than ignored; a bucket's default encryption applies.
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from buckets.engine.types import STORED_HEADERS
from buckets.errors import EntityTooLarge, EntityTooSmall, InvalidArgument, NotImplementedErr
from buckets.obs.access import S3_ACCESS_KEY
from buckets.s3 import postpolicy
from buckets.s3.acls import write_access
from buckets.s3.auth import METHOD_ANONYMOUS, AuthContext
from buckets.s3.body import MAX_OBJECT_SIZE, Integrity, require_length
from buckets.s3.context import WRITTEN_KEY, S3Request, check_key, region_is_strict
from buckets.s3.credentials import ServerCredentials
from buckets.s3.formdata import PostForm
from buckets.s3.handlers.common import empty_response, xml_response
from buckets.s3.headers import put_options, quote_etag
from buckets.s3.permissions import authorize
from buckets.s3.xmlio import XmlBuilder

CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
               "bucket-owner-read", "bucket-owner-full-control")
# Form fields that become object headers (the rest are the form's own: key, policy, ...).
_NOT_HEADERS = frozenset({"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature",
                          "x-amz-security-token"})
_UNSUPPORTED_PREFIXES = (("x-amz-server-side-encryption", "Server-side encryption of a POST upload"),
                         ("tagging", "Object tagging"), ("x-amz-tagging", "Object tagging"),
                         ("x-amz-object-lock-", "Object lock"), ("x-amz-grant-", "ACL grants in a POST form"))


class _FormAsHeaders:
    """``req`` as the ACL code sees a PutObject, with the form's ``acl`` as its ``x-amz-acl``."""

    def __init__(self, req: S3Request, acl: str | None) -> None:
        self._req = req
        self.headers = CIMultiDictProxy(CIMultiDict({} if acl is None else {"x-amz-acl": acl}))

    def __getattr__(self, name: str):
        return getattr(self._req, name)


def _credentials(req: S3Request) -> ServerCredentials:
    return ServerCredentials(req.config.root_user, req.config.root_password, getattr(req.store, "users", None))


def _object_headers(fields: dict[str, str]) -> dict[str, str]:
    """The fields a PutObject would have received as headers (stored headers, metadata,
    storage class, checksums, and the unsupported ones ``put_options`` refuses)."""
    return {name: value for name, value in fields.items()
            if name in STORED_HEADERS or (name.startswith("x-amz-") and name not in _NOT_HEADERS)
            or name == "content-md5"}


def _refuse_unsupported(fields: dict[str, str]) -> None:
    for name in fields:
        for prefix, feature in _UNSUPPORTED_PREFIXES:
            if name.startswith(prefix):
                raise NotImplementedErr(f"{feature} ({name}) is not implemented by this server.")


def _location(req: S3Request, key: str) -> str:
    request = req.request
    base = f"{request.scheme}://{request.host}"
    path = quote(key, safe="/", encoding="utf-8", errors="surrogateescape")
    if req.target.host_bucket is not None:
        return f"{base}/{path}"
    return f"{base}/{quote(req.bucket, safe='')}/{path}"


def _redirect_target(value: str | None) -> str | None:
    """S3 follows ``success_action_redirect`` only when it is an absolute http(s) URL."""
    if not value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value):
        return None  # never a header injection
    return value


async def _limited(chunks, form: PostForm, low: int, high: int):
    """The file's bytes, refused as soon as they pass ``high`` and at the end if under
    ``low``: raising here aborts the engine's write, so nothing is stored."""
    async for chunk in chunks:
        if form.file_size > high:
            if high == MAX_OBJECT_SIZE:
                raise EntityTooLarge(MaxSizeAllowed=str(high))
            raise EntityTooLarge("Your proposed upload exceeds the maximum allowed size",
                                 MaxSizeAllowed=str(high))
        yield chunk
    if form.file_size < low:
        raise EntityTooSmall("Your proposed upload is smaller than the minimum allowed size",
                             ProposedSize=str(form.file_size), MinSizeAllowed=str(low))


async def post_object(req: S3Request) -> web.StreamResponse:
    await req.store.bucket_record(req.bucket)  # NoSuchBucket before anything about the form
    form = PostForm(req.request)
    require_length(req.request)
    await form.read_fields()
    fields = form.fields
    template = fields.get("key")
    if template is None:
        raise InvalidArgument("Bucket POST must contain a field named 'key'.  If it is specified, please check "
                              "the order of the fields.", ArgumentName="key", ArgumentValue="")
    key = template.replace("${filename}", form.filename or "")
    if not key:
        raise InvalidArgument("User key must have a length greater than 0.", ArgumentName="key", ArgumentValue="")
    check_key(key)

    low, high = 0, MAX_OBJECT_SIZE
    context: dict[str, str] = {"s3:authType": "POST"}
    if "policy" in fields:
        region = req.config.region if region_is_strict(req.config) else None
        auth = await postpolicy.verify_signature(fields, _credentials(req), region=region)
        policy = postpolicy.parse_policy(fields["policy"])
        postpolicy.check_policy(policy, {**fields, "key": key, "bucket": req.bucket}, time.time())
        bounds = policy.length_range()
        if bounds is not None:
            low, high = bounds[0], min(bounds[1], MAX_OBJECT_SIZE)
        context["s3:signatureversion"] = "AWS4-HMAC-SHA256" if auth.method == postpolicy.METHOD_V4_POST else "AWS"
    else:
        if postpolicy.has_signature_fields(fields):
            raise InvalidArgument("Bucket POST must contain a field named 'policy'.  If it is specified, please "
                                  "check the order of the fields.", ArgumentName="policy", ArgumentValue="")
        auth = AuthContext(access_key=None, method=METHOD_ANONYMOUS, content_sha256=None)
    req.auth = auth
    req.request[S3_ACCESS_KEY] = auth.access_key  # the access log names the form's signer

    _refuse_unsupported(fields)
    acl = fields.get("acl")
    if acl is not None:
        if acl not in CANNED_ACLS:
            raise InvalidArgument(None, ArgumentName="x-amz-acl", ArgumentValue=acl)
        context["s3:x-amz-acl"] = acl
    headers = _object_headers(fields)
    opts = put_options(headers)
    if "x-amz-storage-class" in headers:
        context["s3:x-amz-storage-class"] = headers["x-amz-storage-class"]
    integrity = Integrity.from_headers({k: v for k, v in headers.items()
                                        if k.startswith("x-amz-checksum-") or k == "content-md5"})
    opts.checksum_algorithms = integrity.algorithms
    opts.verify = integrity.verify

    await authorize(req, "s3:PutObject", req.bucket, key, context=context)
    opts.access = await write_access(_FormAsHeaders(req, acl), req.bucket)
    info = await req.store.put_object(req.bucket, key, _limited(form.file_chunks(), form, low, high), None, opts)
    req.request[WRITTEN_KEY] = key  # the key the notifier reports
    await form.finish()

    etag = quote_etag(info.etag)
    location = _location(req, key)
    out = {"ETag": etag, "Location": location}
    out.update(integrity.response_headers(info.checksums))
    redirect = _redirect_target(fields.get("success_action_redirect") or fields.get("redirect"))
    if redirect is not None:
        query = urlencode({"bucket": req.bucket, "key": key, "etag": etag}, encoding="utf-8",
                          errors="surrogateescape")
        out["Location"] = redirect + ("&" if urlsplit(redirect).query else ("" if redirect.endswith("?") else "?")) \
            + query
        return empty_response(303, out)
    status = fields.get("success_action_status")
    if status == "201":
        doc = XmlBuilder("PostResponse", namespace=False)
        doc.elem("Location", location).elem("Bucket", req.bucket).elem("Key", key).elem("ETag", etag)
        return xml_response(doc.finish(), status=201, headers=out)
    if status == "200":
        return empty_response(200, out)
    return empty_response(204, out)
