"""The signed admin API under ``/_buckets/admin/v1/``: JSON in, JSON out, root only.

Every request is verified with the S3 layer's SigV4 code (service ``s3``, any region in
the scope, which the signature still binds) and must come from the root user; the body
is read whole (it is small, capped at ``MAX_BODY``) and checked against the signed
``x-amz-content-sha256``, so a signed request cannot have its body swapped.

===========  ==================================  =========================================
method       path (after the prefix)             what
===========  ==================================  =========================================
GET          ``info``                            version, uptime, disks, layout, usage, registry
GET          ``users``                           users (never their secrets)
PUT          ``users/{access_key}``              create or replace a user: ``{"secret_key": ...}``
DELETE       ``users/{access_key}``              remove a user
GET          ``users/{access_key}``              one user: status, policy, canonical and account IDs
PUT          ``users/{access_key}/policy``       attach a policy: ``{"policy": name or JSON document}``
POST         ``users/{access_key}/enable``       let the user sign requests again
POST         ``users/{access_key}/disable``      refuse the user's requests, keep the record
GET          ``policies``                        the canned and named policies
GET / PUT    ``policies/{name}``                 one named policy / create or replace it: ``{"document": ...}``
DELETE       ``policies/{name}``                 remove a named policy no user has
GET / POST   ``heal``                            heal status / start a full pass
GET / PUT    ``config``                          live settings / change some: ``{"name": value}``
GET / PUT    ``kms/keys[/{name}]``               the key store: list / create a KMS key (kms_api)
===========  ==================================  =========================================

Errors are ``{"code": ..., "reason": ..., "message": ..., "request_id": ...}`` with the HTTP
status of the matching S3 error; ``reason`` names the refusal where one S3 code covers several
(``NoQuorum``, a change the control plane did not confirm in time, is a ``ServiceUnavailable``
like others): a client decides on it, never on the message's text. The request id is the one
in ``x-amz-request-id`` and in the log.

A request is authenticated before it is routed: whatever the path under the prefix and
whatever the method, a request that is not signed by the root user gets the same 403 (or
the same 400 for a malformed signature), so the API's endpoints cannot be discovered
without the root credentials. ``100 Continue`` is sent only once the signature is good.
A virtual-host-style request (``<bucket>.<domain>/_buckets/...``) is not the admin API's:
there the path is an object key in that bucket, and it goes to the S3 handler.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web

from buckets.admin.jsonio import answer, json_body

from buckets import __version__
from buckets.admin.settings import LiveSettings
from buckets.erasure.codec import coder_name
from buckets.errors import (
    AccessDenied, BucketsError, InternalError, InvalidArgument, XAmzContentSHA256Mismatch, define_error,
)
from buckets.iam.identity import account_id, canonical_id
from buckets.iam.policy import CANNED_USER_POLICIES, parse_policy
from buckets.obs.access import OPS_ACCESS_KEY, OPS_API, OPS_ERROR_CODE, REQUEST_ID
from buckets.obs.endpoints import node_health
from buckets.s3.app import S3_HANDLER
from buckets.s3.auth import authenticate
from buckets.s3.auth.credentials import STREAMING_PAYLOADS, UNSIGNED_PAYLOAD
from buckets.s3.body import send_continue
from buckets.s3.credentials import ServerCredentials
from buckets.s3.router import bucket_from_host
from buckets.storage.local import full_below, reserve_bytes

log = logging.getLogger("buckets.admin")

PREFIX = "/_buckets/admin/v1"
MAX_BODY = 64 * 1024
ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9._@+=-]{3,128}")


NoSuchUser = define_error("NoSuchUser", "NoSuchUser", 404, "The specified user does not exist.")
NoSuchPolicy = define_error("NoSuchPolicy", "NoSuchPolicy", 404, "The specified policy does not exist.")
PolicyInUse = define_error("PolicyInUse", "PolicyInUse", 409, "The policy is attached to a user.")
POLICY_NAME_RE = re.compile(r"[A-Za-z0-9._@+=-]{1,128}")
NoSuchAdminEndpoint = define_error("NoSuchAdminEndpoint", "NoSuchAdminEndpoint", 404,
                                   "There is no such admin API endpoint.")
AdminMethodNotAllowed = define_error("AdminMethodNotAllowed", "MethodNotAllowed", 405,
                                     "The method is not allowed on this admin endpoint.")


def _request_id(request: web.Request) -> str:
    request_id = request.get(REQUEST_ID)
    if not request_id:
        request_id = request[REQUEST_ID] = secrets.token_hex(8).upper()
    return request_id


async def _no_early_continue(request: web.Request) -> None:
    """Keep aiohttp from answering ``Expect: 100-continue`` before the request is
    authenticated; ``_authenticate`` sends it once the signature is good."""
    return None



class HealTracker:
    """Progress of the heal pass an operator asked for, from the scanner's counters."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.started: float | None = None
        self.target_cycle = 0
        self.checked_at_start = 0
        self.total = 0

    def start(self) -> None:
        scanner = self.store.scanner
        # A pass already running started before the request: ours is the one after it.
        self.target_cycle = scanner.cycle + (2 if scanner.running_cycle else 1)
        self.checked_at_start = self.store.heal_stats.objects_checked
        self.total = self.store.registry.count_objects() * (self.target_cycle - scanner.cycle)
        self.started = time.time()
        scanner.trigger()

    def status(self) -> dict[str, Any]:
        scanner = self.store.scanner
        state = scanner.status()
        if self.started is None:
            progress: dict[str, Any] = {"started": None, "done": True, "objects_total": 0,
                                        "objects_done": 0}
        else:
            done = scanner.cycle >= self.target_cycle
            checked = self.store.heal_stats.objects_checked - self.checked_at_start
            progress = {"started": self.started, "done": done, "objects_total": self.total,
                        "objects_done": self.total if done else max(0, min(checked, self.total))}
        return {**progress, "scanning": state["scanning"], "cycle": state["cycle"],
                "objects_checked": state["objects_checked"], "shards_bad": state["shards_bad"],
                "shards_repaired": state["shards_repaired"], "shards_failed": state["shards_failed"],
                "objects_unrecoverable": state["objects_unrecoverable"], "queued": state["queued"],
                "shards_deferred": state["shards_deferred"], "deferred": state["deferred"],
                "refill": state["refill"]}


class AdminApi:
    """Route handlers of the admin API over one store."""

    def __init__(self, store: Any, cfg: Any, settings: LiveSettings) -> None:
        self.store = store
        self.cfg = cfg
        self.settings = settings
        self.root_user: str = cfg.root_user
        self.region: str = getattr(cfg, "region", "us-east-1")
        self.domains: list[str] = list(getattr(cfg, "domains", None) or [])
        self.credentials = ServerCredentials(cfg.root_user, cfg.root_password, getattr(store, "users", None))
        self.heal = HealTracker(store)
        self._table: list[tuple[re.Pattern[str], dict[str, Any], str]] = [
            (re.compile(r"info"), {"GET": self.info}, "info"),
            (re.compile(r"users"), {"GET": self.list_users}, "user.list"),
            (re.compile(r"users/(?P<access_key>[^/]+)"), {"GET": self.get_user, "PUT": self.put_user,
                                                          "DELETE": self.remove_user}, "user"),
            (re.compile(r"users/(?P<access_key>[^/]+)/policy"), {"PUT": self.set_user_policy}, "user.policy"),
            (re.compile(r"policies"), {"GET": self.list_policies}, "policy.list"),
            (re.compile(r"policies/(?P<name>[^/]+)"), {"GET": self.get_policy, "PUT": self.put_policy,
                                                       "DELETE": self.remove_policy}, "policy"),
            (re.compile(r"users/(?P<access_key>[^/]+)/(?P<action>enable|disable)"), {"POST": self.enable_user},
             "user.enable"),
            (re.compile(r"heal"), {"GET": self.heal_status, "POST": self.heal_start}, "heal"),
            (re.compile(r"config"), {"GET": self.get_config, "PUT": self.set_config}, "config"),
        ]
        from buckets.admin import migration_api  # the migration's endpoints (cluster/migration...)

        self._table.extend(migration_api.routes(store))
        from buckets.admin import cluster_api  # membership: cluster/nodes, add-node, remove-node

        self._table.extend(cluster_api.routes(store))
        from buckets.admin import kms_api  # the key store: kms/keys (buckets-admin kms key ...)

        self._table.extend(kms_api.routes(store))

    def routes(self) -> list[web.RouteDef]:
        # The prefix itself and everything below it, line feeds included ((?s): a bare '.'
        # would let ".../info%0A" fall through to the S3 handler).
        return [web.route("*", PREFIX + "{tail:(?s:/.*)?}", self.dispatch, expect_handler=_no_early_continue)]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if bucket_from_host(request.headers.get("Host", ""), self.domains) is not None:
            return await request.app[S3_HANDLER](request)
        request_id = _request_id(request)
        request[OPS_API] = "admin"
        try:
            # Authenticate first, then route: until the root user has signed, every path
            # and method answers alike (no 404/405 telling which endpoints exist).
            body = await self._authenticate(request)
            handler, params, name = self._resolve(request)
            request[OPS_API] = f"admin.{name}"
            return await handler(request, body, **params)
        except BucketsError as error:
            return self._error(request, error, request_id)
        except Exception:
            log.exception("request %s: unhandled error in admin %s %s", request_id, request.method, request.path)
            return self._error(request, InternalError(), request_id)

    def _resolve(self, request: web.Request) -> tuple[Any, dict[str, str], str]:
        tail = request.match_info.get("tail", "").strip("/")
        for pattern, methods, name in self._table:
            match = pattern.fullmatch(tail)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                raise AdminMethodNotAllowed(f"{request.method} is not allowed on {PREFIX}/{tail}; "
                                            f"use {', '.join(methods)}")
            return handler, match.groupdict(), name
        raise NoSuchAdminEndpoint(f"no admin endpoint {PREFIX}/{tail}")

    def _error(self, request: web.Request, error: BucketsError, request_id: str) -> web.Response:
        request[OPS_ERROR_CODE] = error.code
        if error.status >= 500:
            log.warning("request %s: admin %s %s -> %s %s", request_id, request.method, request.path,
                        error.status, error.code)
        return answer({"code": error.code, "reason": type(error).__name__, "message": error.message,
                       "request_id": request_id}, status=error.status)

    async def _authenticate(self, request: web.Request) -> bytes:
        auth = await authenticate(request, self.credentials, region=None, service="s3")
        if auth.is_anonymous:
            raise AccessDenied("The admin API needs a request signed with the root credentials.")
        request[OPS_ACCESS_KEY] = auth.access_key
        if not hmac.compare_digest(auth.access_key.encode(), self.root_user.encode()):
            raise AccessDenied("The admin API takes the root credentials only.")
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise InvalidArgument(f"admin request bodies are limited to {MAX_BODY} bytes")
        await send_continue(request)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BODY:  # read() answers with what has arrived: loop to the end
            chunk = await request.content.read(MAX_BODY + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
        if len(body) > MAX_BODY:
            raise InvalidArgument(f"admin request bodies are limited to {MAX_BODY} bytes")
        claimed = auth.content_sha256
        if claimed is None or claimed == UNSIGNED_PAYLOAD or claimed in STREAMING_PAYLOADS:
            raise InvalidArgument("admin requests must sign their body: send x-amz-content-sha256 "
                                  "with the SHA-256 of the body")
        if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), claimed.lower()):
            raise XAmzContentSHA256Mismatch()
        return body


    # -- info ---------------------------------------------------------------------------------
    async def info(self, request: web.Request, body: bytes) -> web.Response:
        store = self.store
        data, parity = store.layout
        health = node_health(store)
        disks = []
        for info, disk in zip(await store.disk_infos(), store.disks):
            # "full": at (or within a write's pieces of) its free-space reserve, the disk refuses
            # new data (507 StorageFull): a shard piece is refused once it would cross the reserve
            reserve = reserve_bytes(info.total) if info.online else 0
            state = "healing" if getattr(disk, "healing", False) and info.online else (
                ("full" if reserve and info.free < full_below(info.total) else "online") if info.online else "offline")
            disks.append({"endpoint": info.endpoint, "id": info.disk_id, "state": state, "total": info.total,
                          "free": info.free, "used": info.used, "reserve": reserve, "error": info.error or None})
        usage = store.registry.usage
        cache = store.registry.cache
        return answer({
            "version": __version__,
            "deployment_id": store.deployment_id,
            "region": self.region,
            "uptime_seconds": round(time.time() - store.started, 3),
            "erasure": {"data": data, "parity": parity, "write_quorum": health.write_quorum,
                        "coder": coder_name(data, parity),  # ISA-L or zfec: the same pieces either way
                        "read_quorum": health.read_quorum, "block_size": getattr(store, "block_size", None),
                        # objects up to max_bytes on a narrower set of the same parity (--small-set-limit)
                        "small": None if (small := store.small_layout) is None else {
                            "data": small[0], "parity": small[1], "max_bytes": store.small_set_limit}},
            "health": health.as_dict(),
            "disks": disks,
            "usage": {"buckets": len(usage), "objects": sum(u[0] for u in usage.values()),
                      "bytes": sum(u[1] for u in usage.values())},
            "registry": {"size_bytes": store.registry.size_bytes(), "entries": store.registry.count_objects(),
                         "cache_entries": len(cache), "cache_hits": cache.hits, "cache_misses": cache.misses,
                         "commits": store.registry.commits, "committed_ops": store.registry.committed_ops},
            "cluster": node.status() if (node := getattr(store, "cluster_node", None)) is not None else None,
        })

    # -- users --------------------------------------------------------------------------------
    async def list_users(self, request: web.Request, body: bytes) -> web.Response:
        users = await self.store.users.list()
        return answer({"users": [{"access_key": user.access_key, "enabled": user.enabled,
                                   "created": user.created, "policy": user.policy} for user in users]})

    def _check_access_key(self, access_key: str) -> str:
        if not ACCESS_KEY_RE.fullmatch(access_key):
            raise InvalidArgument("an access key is 3 to 128 letters, digits or ._@+=- characters")
        if hmac.compare_digest(access_key.encode(), self.root_user.encode()):
            raise InvalidArgument("that access key is the root user's; pick another")
        return access_key

    async def put_user(self, request: web.Request, body: bytes, access_key: str) -> web.Response:
        access_key = self._check_access_key(access_key)
        document = json_body(body)
        secret = document.get("secret_key")
        if not isinstance(secret, str) or not 8 <= len(secret) <= 128 or any(
                char.isspace() or not char.isprintable() for char in secret):
            raise InvalidArgument("secret_key must be 8 to 128 printable characters without spaces")
        enabled = document.get("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidArgument("enabled must be true or false")
        policy = document.get("policy")
        if policy is not None:
            policy = self._check_user_policy(policy)
        existed = self.store.users.registry.get_user(access_key) is not None
        await self.store.users.put(access_key, secret, enabled=enabled, policy=policy)
        log.info("user %s %s", access_key, "updated" if existed else "added")
        record = self.store.users.registry.get_user(access_key) or {}
        return answer({"access_key": access_key, "enabled": enabled, "created": not existed,
                       "policy": record.get("policy", "readwrite")})

    async def get_user(self, request: web.Request, body: bytes, access_key: str) -> web.Response:
        record = self.store.users.registry.get_user(access_key)
        if record is None:
            raise NoSuchUser(f"no user with access key {access_key!r}")
        return answer({"access_key": access_key, "enabled": record.get("enabled", True),
                       "created": record.get("created", 0.0), "policy": record.get("policy", "readwrite"),
                       "canonical_id": canonical_id(access_key), "account_id": account_id(access_key),
                       "arn": f"arn:aws:iam::{account_id(access_key)}:user/{access_key}"})

    def _check_user_policy(self, policy: Any) -> str:
        """A canned policy's name, a named policy that exists, or a valid JSON policy document."""
        if not isinstance(policy, str) or not policy.strip():
            raise InvalidArgument("policy must be a policy name or a JSON policy document")
        if policy.lstrip().startswith("{"):
            parse_policy(policy)  # MalformedPolicy says what is wrong
            return policy
        if policy not in CANNED_USER_POLICIES and self.store.users.get_policy(policy) is None:
            raise NoSuchPolicy(f"no policy named {policy!r}: use one of {', '.join(CANNED_USER_POLICIES)} "
                               f"or add it with 'buckets-admin policy add'")
        return policy

    async def set_user_policy(self, request: web.Request, body: bytes, access_key: str) -> web.Response:
        policy = self._check_user_policy(json_body(body).get("policy"))
        if not await self.store.users.set_policy(access_key, policy):
            raise NoSuchUser(f"no user with access key {access_key!r}")
        log.info("user %s: policy set to %s", access_key, policy if len(policy) < 64 else "a JSON document")
        return answer({"access_key": access_key, "policy": policy})

    # -- named policies -----------------------------------------------------------------------
    async def list_policies(self, request: web.Request, body: bytes) -> web.Response:
        canned = [{"name": name, "canned": True, "document": json.dumps(doc)}
                  for name, doc in CANNED_USER_POLICIES.items()]
        named = [{"name": name, "canned": False, "document": rec["document"], "created": rec.get("created", 0.0)}
                 for name, rec in self.store.users.list_policies()]
        return answer({"policies": canned + named})

    async def get_policy(self, request: web.Request, body: bytes, name: str) -> web.Response:
        if name in CANNED_USER_POLICIES:
            return answer({"name": name, "canned": True, "document": json.dumps(CANNED_USER_POLICIES[name])})
        rec = self.store.users.get_policy(name)
        if rec is None:
            raise NoSuchPolicy(f"no policy named {name!r}")
        users = [ak for ak, u in self.store.users.registry.list_users() if u.get("policy") == name]
        return answer({"name": name, "canned": False, "document": rec["document"],
                       "created": rec.get("created", 0.0), "users": users})

    async def put_policy(self, request: web.Request, body: bytes, name: str) -> web.Response:
        if not POLICY_NAME_RE.fullmatch(name):
            raise InvalidArgument("a policy name is 1 to 128 letters, digits or ._@+=- characters")
        if name in CANNED_USER_POLICIES:
            raise InvalidArgument(f"{name!r} is a canned policy and cannot be replaced")
        document = json_body(body).get("document")
        if not isinstance(document, str):
            raise InvalidArgument("document must be the policy's JSON text")
        parse_policy(document)
        existed = self.store.users.get_policy(name) is not None
        await self.store.users.put_policy(name, document)
        log.info("policy %s %s", name, "updated" if existed else "added")
        return answer({"name": name, "created": not existed})

    async def remove_policy(self, request: web.Request, body: bytes, name: str) -> web.Response:
        users = [ak for ak, u in self.store.users.registry.list_users() if u.get("policy") == name]
        if users:
            raise PolicyInUse(f"policy {name!r} is attached to {', '.join(users)}; give them another first")
        if not await self.store.users.delete_policy(name):
            raise NoSuchPolicy(f"no policy named {name!r}")
        log.info("policy %s removed", name)
        return answer({"name": name, "removed": True})

    async def remove_user(self, request: web.Request, body: bytes, access_key: str) -> web.Response:
        if not await self.store.users.remove(access_key):
            raise NoSuchUser(f"no user with access key {access_key!r}")
        log.info("user %s removed", access_key)
        return answer({"access_key": access_key, "removed": True})

    async def enable_user(self, request: web.Request, body: bytes, access_key: str, action: str) -> web.Response:
        enabled = action == "enable"
        if not await self.store.users.set_enabled(access_key, enabled):
            raise NoSuchUser(f"no user with access key {access_key!r}")
        log.info("user %s %sd", access_key, action)
        return answer({"access_key": access_key, "enabled": enabled})

    # -- heal ---------------------------------------------------------------------------------
    async def heal_start(self, request: web.Request, body: bytes) -> web.Response:
        self.heal.start()
        log.info("heal pass requested")
        return answer(self.heal.status())

    async def heal_status(self, request: web.Request, body: bytes) -> web.Response:
        return answer(self.heal.status())

    # -- live config --------------------------------------------------------------------------
    async def get_config(self, request: web.Request, body: bytes) -> web.Response:
        return answer({"settings": self.settings.describe()})

    async def set_config(self, request: web.Request, body: bytes) -> web.Response:
        changes = json_body(body)
        if not changes:
            raise InvalidArgument("nothing to set: send {\"name\": value, ...}")
        try:
            applied = self.settings.update(changes)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        log.warning("live settings changed: %s", ", ".join(f"{k}={v}" for k, v in applied.items()))
        return answer({"applied": applied, "settings": self.settings.describe()})
