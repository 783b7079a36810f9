"""A bucket's notification configuration: parsed and validated as AWS does, stored as plain
data in the bucket's settings, matched against each event."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from buckets.errors import InvalidArgument, MalformedXML
from buckets.s3.xmlio import XmlBuilder, XmlNode

# Every event name AWS accepts in a configuration. Buckets produces ObjectCreated:*,
# ObjectRemoved:Delete, ObjectRemoved:DeleteMarkerCreated and LifecycleExpiration:Delete and
# :DeleteMarkerCreated (the lifecycle worker's); the others are accepted and fire once their
# feature exists.
EVENTS = (
    "s3:ObjectCreated:*", "s3:ObjectCreated:Put", "s3:ObjectCreated:Post", "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload", "s3:ObjectRemoved:*", "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated", "s3:ObjectRestore:*", "s3:ObjectRestore:Post",
    "s3:ObjectRestore:Completed", "s3:ObjectRestore:Delete", "s3:ReducedRedundancyLostObject",
    "s3:Replication:*", "s3:Replication:OperationFailedReplication",
    "s3:Replication:OperationMissedThreshold", "s3:Replication:OperationReplicatedAfterThreshold",
    "s3:Replication:OperationNotTracked", "s3:LifecycleExpiration:*", "s3:LifecycleExpiration:Delete",
    "s3:LifecycleExpiration:DeleteMarkerCreated", "s3:LifecycleTransition", "s3:IntelligentTiering",
    "s3:ObjectTagging:*", "s3:ObjectTagging:Put", "s3:ObjectTagging:Delete", "s3:ObjectAcl:Put",
)
_ARN = re.compile(r"^arn:(?:buckets|minio):sqs:[^:]*:([A-Za-z0-9_.-]+):webhook$")
# (element, ARN element) of the three kinds of destination in the document.
KINDS = (("QueueConfiguration", "Queue"), ("TopicConfiguration", "Topic"),
         ("CloudFunctionConfiguration", "CloudFunction"))
MAX_RULES = 100


@dataclass(frozen=True, slots=True)
class NotificationRule:
    id: str
    kind: str  # QueueConfiguration | TopicConfiguration | CloudFunctionConfiguration
    arn: str
    target: str  # the webhook's name on this server
    events: tuple[str, ...]
    prefix: str = ""
    suffix: str = ""

    def to_record(self) -> dict:
        return {"id": self.id, "kind": self.kind, "arn": self.arn, "target": self.target,
                "events": list(self.events), "prefix": self.prefix, "suffix": self.suffix}

    @classmethod
    def from_record(cls, rec: dict) -> NotificationRule:
        return cls(rec["id"], rec.get("kind", "QueueConfiguration"), rec["arn"], rec["target"],
                   tuple(rec["events"]), rec.get("prefix", ""), rec.get("suffix", ""))

    def matches(self, event: str, key: str) -> bool:
        """``event`` like ``s3:ObjectCreated:Put``."""
        family = event.rsplit(":", 1)[0] + ":*"
        return (event in self.events or family in self.events) and key.startswith(self.prefix) \
            and key.endswith(self.suffix)


def _invalid(message: str, **extra: str) -> InvalidArgument:
    return InvalidArgument(message, **extra)


def parse_configuration(doc: XmlNode, targets: set[str]) -> list[NotificationRule]:
    """The rules of a ``NotificationConfiguration`` document; ``targets`` are the webhook
    names this server knows (an ARN naming another is refused, as AWS refuses a destination
    it cannot validate)."""
    if doc.find("EventBridgeConfiguration") is not None:  # refused, not ignored: no event would come
        raise _invalid("Unable to validate the following destination configurations",
                       ArgumentName="EventBridgeConfiguration",
                       ArgumentValue="EventBridge is not available on this server; use a webhook target "
                       "(--notify-webhook NAME=URL).")
    rules: list[NotificationRule] = []
    for kind, arn_element in KINDS:
        for node in doc.find_all(kind):
            arn = (node.child_text(arn_element) or "").strip()
            m = _ARN.match(arn)
            if m is None or m.group(1) not in targets:
                raise _invalid("Unable to validate the following destination configurations",
                               ArgumentName=arn or arn_element, ArgumentValue="The destination ARN does not "
                               "exist on this server (configure it with --notify-webhook NAME=URL).")
            events = tuple((e.text or "").strip() for e in node.find_all("Event"))
            if not events:
                raise MalformedXML()
            for event in events:
                if event not in EVENTS:
                    raise _invalid("The event is not supported for notifications", ArgumentName="Event",
                                   ArgumentValue=event)
            prefix = suffix = None
            filter_node = node.find("Filter")
            if filter_node is not None:
                key_node = filter_node.find("S3Key")
                for rule in (key_node.find_all("FilterRule") if key_node is not None else []):
                    name = (rule.child_text("Name") or "").strip().lower()
                    value = rule.child_text("Value") or ""
                    if name == "prefix" and prefix is None:
                        prefix = value
                    elif name == "suffix" and suffix is None:
                        suffix = value
                    elif name in ("prefix", "suffix"):
                        raise _invalid("Cannot specify more than one prefix rule in a filter." if name == "prefix"
                                       else "Cannot specify more than one suffix rule in a filter.",
                                       ArgumentName="FilterRule", ArgumentValue=name)
                    else:
                        raise _invalid("filter rule name must be either prefix or suffix",
                                       ArgumentName="FilterRule", ArgumentValue=name)
            rule_id = (node.child_text("Id") or "").strip() or uuid.uuid4().hex
            rules.append(NotificationRule(rule_id, kind, arn, m.group(1), tuple(dict.fromkeys(events)),
                                          prefix or "", suffix or ""))
    check_configuration(rules)
    return rules


def _events_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    for x in a:
        for y in b:
            if x == y or (x.endswith(":*") and y.startswith(x[:-1])) or (y.endswith(":*") and x.startswith(y[:-1])):
                return True
    return False


def check_configuration(rules: list[NotificationRule]) -> None:
    """AWS's checks across rules: unique ids, no two rules that could both match one event."""
    if len(rules) > MAX_RULES:
        raise _invalid(f"A notification configuration holds at most {MAX_RULES} rules.")
    ids = [r.id for r in rules]
    if len(ids) != len(set(ids)):
        raise _invalid("Two notification rules have the same Id.", ArgumentName="Id")
    for i, a in enumerate(rules):
        for b in rules[i + 1:]:
            prefixes = a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix)
            suffixes = a.suffix.endswith(b.suffix) or b.suffix.endswith(a.suffix)
            if prefixes and suffixes and _events_overlap(a.events, b.events):
                raise _invalid("Configuration is ambiguously defined. Cannot have overlapping suffixes in two "
                               "rules if the prefixes are overlapping for the same event type.")


def render_configuration(rules: list[NotificationRule]) -> bytes:
    doc = XmlBuilder("NotificationConfiguration")
    arn_element = dict(KINDS)
    for rule in rules:
        doc.open(rule.kind).elem("Id", rule.id).elem(arn_element[rule.kind], rule.arn)
        for event in rule.events:
            doc.elem("Event", event)
        if rule.prefix or rule.suffix:
            doc.open("Filter").open("S3Key")
            for name, value in (("Prefix", rule.prefix), ("Suffix", rule.suffix)):  # as AWS answers
                if value:
                    doc.open("FilterRule").elem("Name", name).elem("Value", value).close()
            doc.close().close()
        doc.close()
    return doc.finish()


def rules_of(record: dict[str, Any]) -> list[NotificationRule]:
    return [NotificationRule.from_record(r) for r in record.get("notification") or ()]
