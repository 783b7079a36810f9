"""Bucket notifications: what happened to which object, delivered to webhooks.

Owns the notification configuration of a bucket (AWS's ``NotificationConfiguration``:
which events, which key prefix/suffix, which target), the event records (AWS's event JSON),
and their delivery: each event is queued durably in the node's registry before the request
that caused it is answered, then POSTed to its webhook by a background worker, retried with
backoff while the target is down, and kept across restarts until the target takes it
(at-least-once). Targets are configured on the server (``--notify-webhook NAME=URL``) and
named in configurations by ARN, ``arn:buckets:sqs::NAME:webhook``, as MinIO does.
"""

from buckets.notify.rules import NotificationRule, check_configuration, parse_configuration, render_configuration
from buckets.notify.service import Notifier, WebhookTarget, parse_targets

__all__ = ["NotificationRule", "Notifier", "WebhookTarget", "check_configuration", "parse_configuration",
           "parse_targets", "render_configuration"]
