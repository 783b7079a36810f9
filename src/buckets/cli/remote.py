"""What ``buckets-client`` needs to talk S3: targets, boto3 clients, one-line errors, listings.

A target is ``ALIAS[/BUCKET[/KEY]]`` when its first segment names an alias, otherwise a
local path (``./x``, ``/tmp/x``, ``x`` when no alias is called ``x``), as in mc. Clients
are boto3's, with SigV4, path-style addressing for anything but Amazon's own hosts
(which get virtual-host style, so the same tool works against AWS), two attempts, and
short connect timeouts so "server down" is an answer within seconds, not a hang.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from buckets.cli.aliases import Alias, AliasStore, CliError


@dataclass(slots=True)
class Remote:
    alias: Alias
    bucket: str | None
    key: str  # "" for a whole bucket; may be a prefix ("photos/") or a key

    def __str__(self) -> str:
        parts = [self.alias.name] + ([self.bucket] if self.bucket else []) + ([self.key] if self.key else [])
        return "/".join(parts)

    @property
    def is_dir_like(self) -> bool:
        """A bucket or a prefix ending in '/': names a folder, not an object."""
        return self.bucket is not None and (self.key == "" or self.key.endswith("/"))


def parse_target(text: str, store: AliasStore, *, names: set[str] | None = None) -> Remote | Path:
    names = store.names() if names is None else names
    head, _, rest = text.partition("/")
    if head not in names or text.startswith(("./", "/")):
        return Path(text)
    alias = store.get(head)
    bucket, _, key = rest.partition("/")
    return Remote(alias, bucket or None, key)


def require_remote(text: str, store: AliasStore, *, bucket: bool = True, key: bool = False) -> Remote:
    target = parse_target(text, store)
    if not isinstance(target, Remote):
        head = text.partition("/")[0]
        raise CliError(f"unknown alias {head!r} in {text!r}; add it with: alias set {head} URL ACCESS_KEY SECRET_KEY")
    if bucket and not target.bucket:
        raise CliError(f"{text!r} names no bucket: use {target.alias.name}/BUCKET")
    if key and not target.key:
        raise CliError(f"{text!r} names no object: use {target.alias.name}/BUCKET/KEY")
    return target


_CLIENTS: dict[str, Any] = {}


def s3_client(alias: Alias) -> Any:
    """A boto3 S3 client for ``alias`` (one per alias per process)."""
    client = _CLIENTS.get(alias.name)
    if client is not None:
        return client
    import boto3
    from botocore.config import Config

    host = urlsplit(alias.url).hostname or ""
    style = "virtual" if host.endswith("amazonaws.com") else "path"
    config = Config(signature_version="s3v4", s3={"addressing_style": style},
                    retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=120,
                    user_agent_extra="buckets-client")
    session = boto3.session.Session()
    client = session.client("s3", endpoint_url=alias.url, aws_access_key_id=alias.access_key,
                            aws_secret_access_key=alias.secret_key, region_name=alias.region,
                            verify=alias.tls_verify() if alias.url.startswith("https") else True,
                            config=config)
    _CLIENTS[alias.name] = client
    return client


_FRIENDLY = {
    "404": "not found", "NoSuchKey": "no such object", "NoSuchBucket": "no such bucket",
    "403": "access denied", "400": "bad request", "412": "precondition failed",
}


@contextmanager
def s3_errors(what: object) -> Iterator[None]:
    """Turn botocore exceptions into one-line ``CliError``s that name ``what``."""
    from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError,
                                     ReadTimeoutError)

    try:
        yield
    except ClientError as error:
        info = error.response.get("Error", {})
        code = str(info.get("Code") or error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        message = _FRIENDLY.get(code) if code.isdigit() else None  # HEAD errors have no body
        message = message or info.get("Message") or "request failed"
        request_id = error.response.get("ResponseMetadata", {}).get("RequestId")
        suffix = f" (request id {request_id})" if request_id else ""
        raise CliError(f"{what}: {code}: {message}{suffix}") from None
    except EndpointConnectionError as error:
        raise CliError(f"cannot connect to {error.kwargs.get('endpoint_url', 'the server')} "
                       "(is the server running?)") from None
    except (ConnectTimeoutError, ReadTimeoutError) as error:
        raise CliError(f"{what}: {error}") from None
    except BotoCoreError as error:
        raise CliError(f"{what}: {error}") from None


def iter_objects(remote: Remote, *, recursive: bool) -> Iterator[dict[str, Any]]:
    """Objects (``{"Key", "Size", ...}``) and, unless recursive, folders (``{"Prefix"}``)."""
    client = s3_client(remote.alias)
    kwargs: dict[str, Any] = {"Bucket": remote.bucket, "Prefix": remote.key}
    if not recursive:
        kwargs["Delimiter"] = "/"
    with s3_errors(remote):
        for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
            entries: list[dict[str, Any]] = list(page.get("Contents", []))
            entries += [{"Prefix": p["Prefix"]} for p in page.get("CommonPrefixes", [])]
            entries.sort(key=lambda entry: entry.get("Key") or entry["Prefix"])
            yield from entries
