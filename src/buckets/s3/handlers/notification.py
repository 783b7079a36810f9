"""Bucket notifications: Get/PutBucketNotificationConfiguration (``buckets.notify`` owns the
rules and the delivery)."""

from __future__ import annotations

from aiohttp import web

from buckets.notify.rules import parse_configuration, render_configuration, rules_of
from buckets.s3.body import read_document
from buckets.s3.context import S3Request
from buckets.s3.handlers.common import empty_response, xml_response
from buckets.s3.xmlio import parse_document

MAX_NOTIFICATION_XML = 256 * 1024


async def get_bucket_notification(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    return xml_response(render_configuration(rules_of(record)))


async def put_bucket_notification(req: S3Request) -> web.StreamResponse:
    await req.store.bucket_record(req.bucket)
    body, _ = await read_document(req, MAX_NOTIFICATION_XML)
    notifier = req.request.app.get(NOTIFIER_KEY)
    targets = set(notifier.targets) if notifier is not None else set()
    rules = parse_configuration(parse_document(body, "NotificationConfiguration"), targets)
    if rules:
        await req.store.update_bucket(req.bucket, set={"notification": [r.to_record() for r in rules]})
    else:  # an empty configuration turns notifications off
        await req.store.update_bucket(req.bucket, unset=["notification"])
    return empty_response(200)


NOTIFIER_KEY = web.AppKey("buckets_notifier", object)
