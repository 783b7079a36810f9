"""``KeyManager``: the node's key store for SSE-S3 and SSE-KMS.

Key hierarchy (``architecture/encryption.md``)::

    master key (32 bytes: BUCKETS_KMS_SECRET_KEY or the key file; never stored by Buckets)
      ├─ SSE-S3 key-encryption key = HKDF(master, "buckets-sse-s3-kek-v1")
      │     seals each SSE-S3 object's data key (bucket/key as associated data)
      ├─ the default KMS key (named like the master key) = HKDF(master, "buckets-kms-default-key-v1")
      └─ wrapping key = HKDF(master, "buckets-kms-wrap-v1")
            wraps each named KMS key (32 random bytes, ``buckets-admin kms key create``),
            which seals each SSE-KMS object's data key (bucket, key and context as associated data)

What is stored (no key in the clear): the master key's name and fingerprint, and every named
key wrapped. A single node keeps them in its registry (``sys`` table, ``kms``) and mirrors
them to ``.buckets.sys/kms.meta`` on every disk, so a rebuilt registry gets them back; a
cluster keeps them in the control plane's settings (``kms:master``, ``kms:key:<name>``), so
every node has them. A node that became a cluster imports its mirror at the next start.

At start the configured key is compared with the recorded fingerprint. A missing key file
or a different key is logged as an error and the node serves anyway: objects stored in the
clear and SSE-C objects as usual, SSE-S3/SSE-KMS requests with ``KMS.KMSInvalidStateException``
(never wrong bytes). A new key is created (in the key file) only while no fingerprint is
recorded, the first time one is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from buckets.engine import crypto
from buckets.engine.types import SSESpec
from buckets.errors import BucketsError, InvalidArgument, define_error
from buckets.kms.master import (
    DEFAULT_MASTER_NAME, KEY_NAME_RE, MasterKey, MasterKeyError, create_key_file, default_key_file,
    parse_master_key, read_key_file,
)

log = logging.getLogger("buckets.kms")

MIRROR_FILE = ".buckets.sys/kms.meta"
SETTING_MASTER = "kms:master"
SETTING_KEY_PREFIX = "kms:key:"

KMSUnavailable = define_error(
    "KMSUnavailable", "KMS.KMSInvalidStateException", 400,
    "The server's master key is not available, so objects encrypted with SSE-S3 or SSE-KMS cannot be "
    "read or written until an operator restores it (the server's log says what is missing).")
KMSNotFound = define_error("KMSNotFound", "KMS.NotFoundException", 400, "Invalid keyId")
KMSKeyExists = define_error("KMSKeyExists", "KMS.AlreadyExistsException", 409, "A key with this name exists already.")

_S3_KEK = b"buckets-sse-s3-kek-v1"
_WRAP_KEK = b"buckets-kms-wrap-v1"
_DEFAULT_KEY = b"buckets-kms-default-key-v1"
_KEY_AAD = b"buckets-kms-key-v1\0"


def key_arn(name: str) -> str:
    """How a KMS key is named in responses (MinIO's form)."""
    return f"arn:aws:kms:{name}"


def key_name_of(key_id: str) -> str:
    """The key name in a key id as clients send it: ``NAME``, ``alias/NAME``, ``arn:aws:kms:NAME``
    or a full ARN ``arn:aws:kms:REGION:ACCOUNT:key/NAME`` (or ``:alias/NAME``)."""
    text = key_id.strip()
    if text.startswith("arn:aws:kms:"):
        text = text[len("arn:aws:kms:"):]
        if "/" in text:
            text = text.rsplit("/", 1)[1]
        elif text.count(":") >= 2:
            text = text.rsplit(":", 1)[1]
    elif text.startswith("alias/"):
        text = text[len("alias/"):]
    return text


# --- where the records live ------------------------------------------------------------------------
class LocalRecords:
    """A single node: the registry's ``sys`` table, mirrored to every disk."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.state: dict = {"master": None, "keys": {}}

    async def load(self) -> None:
        state = self.store.registry.get_sys("kms")
        if state is None:
            mirrored = await newest_mirror(self.store)
            if mirrored is not None:
                state = {"master": mirrored.get("master"), "keys": dict(mirrored.get("keys") or {})}
                await self._save(state)
                log.warning("key store restored from the disks' mirror (%d named keys)", len(state["keys"]))
        if state is not None:
            self.state = {"master": state.get("master"), "keys": dict(state.get("keys") or {})}

    def master(self) -> dict | None:
        return self.state.get("master")

    def key(self, name: str) -> dict | None:
        return self.state["keys"].get(name)

    def keys(self) -> dict[str, dict]:
        return dict(self.state["keys"])

    async def set_master(self, record: dict) -> None:
        await self._save({**self.state, "master": record})

    async def put_key(self, name: str, record: dict) -> None:
        await self._save({**self.state, "keys": {**self.state["keys"], name: record}})

    async def _save(self, state: dict) -> None:
        from buckets.engine.meta import encode_meta_file
        from buckets.registry import Op

        await self.store.registry.commit([Op("put_sys", "kms", value=state)])
        self.state = state
        data = encode_meta_file({"version": time.time_ns(), **state})
        store = self.store
        ok = await store._on_disks(lambda d: d.write_file(MIRROR_FILE, data, sync=store.sync))
        if ok < store._write_quorum(store.k, store.m):
            log.warning("the key store reached only %d disks; a registry rebuild may not restore it", ok)


class ClusterRecords:
    """A cluster: the control plane's settings, the same on every node."""

    def __init__(self, store: Any, control: Any) -> None:
        self.store = store
        self.control = control

    async def load(self) -> None:
        settings = (await self.control.read(linearizable=True)).settings
        if SETTING_MASTER in settings:
            return
        mirrored = await newest_mirror(self.store)  # a single node converted into a cluster
        if mirrored is not None and mirrored.get("master"):
            values = {SETTING_MASTER: mirrored["master"]}
            values.update({SETTING_KEY_PREFIX + name: rec for name, rec in (mirrored.get("keys") or {}).items()})
            await self.control.apply("set_settings", set=values)
            log.warning("key store imported into the cluster from this node's disks (%d named keys)",
                        len(values) - 1)

    def master(self) -> dict | None:
        value = self.control.snapshot.settings.get(SETTING_MASTER)
        return dict(value) if value is not None else None

    def key(self, name: str) -> dict | None:
        value = self.control.snapshot.settings.get(SETTING_KEY_PREFIX + name)
        return dict(value) if value is not None else None

    def keys(self) -> dict[str, dict]:
        settings = self.control.snapshot.settings
        return {k[len(SETTING_KEY_PREFIX):]: dict(settings[k]) for k in sorted(settings)
                if k.startswith(SETTING_KEY_PREFIX)}

    async def set_master(self, record: dict) -> None:
        current = (await self.control.read(linearizable=True)).settings.get(SETTING_MASTER)
        if current is not None and current.get("fp") != record.get("fp"):
            raise KMSUnavailable("Another node recorded a different master key first.")
        await self.control.apply("set_settings", set={SETTING_MASTER: record})

    async def put_key(self, name: str, record: dict) -> None:
        await self.control.apply("set_settings", set={SETTING_KEY_PREFIX + name: record})


async def newest_mirror(store: Any) -> dict | None:
    from buckets.engine.meta import decode_meta_file
    from buckets.errors import DiskError

    best: dict | None = None
    for disk in [d for d in store.disks if d.online]:
        try:
            snap = decode_meta_file(await disk.read_file(MIRROR_FILE))
        except (DiskError, ValueError):
            continue
        if best is None or snap.get("version", 0) > best.get("version", 0):
            best = snap
    return best


# --- the manager -----------------------------------------------------------------------------------
class KeyManager:
    def __init__(self, records: Any, *, secret: str | None = None, key_file: str | None = None,
                 deployment_id: str = "") -> None:
        self.records = records
        self._secret = secret
        self._key_file_setting = key_file
        self._deployment_id = deployment_id
        self.master: MasterKey | None = None
        self.problem: str | None = None
        self._lock = asyncio.Lock()
        self._keys: dict[str, bytes] = {}  # unwrapped named keys

    # -- start --------------------------------------------------------------------------------
    def key_file(self) -> Path:
        if self._key_file_setting:
            return Path(self._key_file_setting).expanduser()
        try:
            return default_key_file(self._deployment_id)
        except (RuntimeError, KeyError):
            raise MasterKeyError("no home directory to keep the master key in: set BUCKETS_KMS_KEY_FILE "
                                 "(or kms_key_file) to a path, or BUCKETS_KMS_SECRET_KEY") from None

    async def start(self) -> None:
        try:
            await self.records.load()
        except BucketsError as error:  # e.g. no control-plane majority this instant: use what is known
            log.warning("encryption at rest: the key store could not be read in full at start (%s); "
                        "using this node's copy", error.message)
        recorded = self.records.master()
        key: MasterKey | None = None
        try:
            if self._secret:
                key = parse_master_key(self._secret, "BUCKETS_KMS_SECRET_KEY")
            else:
                path = self.key_file()
                try:
                    key = read_key_file(path)
                except FileNotFoundError:
                    if recorded is not None:
                        raise MasterKeyError(
                            f"the master key file {path} is missing, but this deployment's encrypted objects "
                            f"need the master key {recorded.get('name')!r} (fingerprint {recorded.get('fp')}): "
                            f"restore the file from your backup (or set BUCKETS_KMS_SECRET_KEY to it) and "
                            f"restart; until then SSE-S3 and SSE-KMS objects cannot be read") from None
        except MasterKeyError as error:
            self.problem = str(error)
        if key is not None and recorded is not None and recorded.get("fp") != key.fingerprint:
            self.problem = (f"the master key from {key.source} (fingerprint {key.fingerprint}) is not the one "
                            f"this deployment's encrypted objects were sealed with ({recorded.get('name')!r}, "
                            f"fingerprint {recorded.get('fp')}): configure that key and restart; until then "
                            f"SSE-S3 and SSE-KMS objects cannot be read")
            key = None
        if key is not None and recorded is None:
            try:
                await self.records.set_master(_master_record(key))
            except BucketsError as error:
                self.problem = f"the master key from {key.source} could not be recorded: {error.message}"
                key = None
        self.master = key
        if self.problem:
            log.error("encryption at rest: %s", self.problem)
        elif key is not None:
            log.info("encryption at rest: master key %r (fingerprint %s) from %s", key.name, key.fingerprint,
                     key.source)

    async def ensure_master(self) -> MasterKey:
        """The master key; created (in the key file) the first time one is needed, while no
        other key is recorded for this deployment."""
        if self.master is not None:
            return self.master
        if self.problem:
            raise KMSUnavailable()
        async with self._lock:
            if self.master is not None:
                return self.master
            recorded = self.records.master()
            if recorded is not None:  # another node of the cluster created it: this node lacks it
                self.problem = (f"the master key {recorded.get('name')!r} (fingerprint {recorded.get('fp')}) was "
                                f"created on another node; copy its key file to {self.key_file()} on this node "
                                f"(or set BUCKETS_KMS_SECRET_KEY) and restart")
                log.error("encryption at rest: %s", self.problem)
                raise KMSUnavailable()
            try:
                path = self.key_file()
                loop = asyncio.get_running_loop()
                key = await loop.run_in_executor(None, create_key_file, path, DEFAULT_MASTER_NAME)
                await self.records.set_master(_master_record(key))
            except (MasterKeyError, OSError) as error:
                log.error("encryption at rest: cannot create the master key: %s", error)
                raise KMSUnavailable() from None
            self.master = key
            log.warning("encryption at rest: created the master key %r (fingerprint %s) in %s: back this file "
                        "up now and keep it secret; without it SSE-S3 and SSE-KMS objects cannot be read",
                        key.name, key.fingerprint, path)
            return key

    def _require_master(self) -> MasterKey:
        if self.master is None:
            raise KMSUnavailable()
        return self.master

    # -- named keys -----------------------------------------------------------------------------
    def _is_default(self, name: str, master: MasterKey) -> bool:
        """The default key goes by the master key's name, as configured now or as recorded
        (the same key configured under another name keeps its objects readable)."""
        return name == master.name or name == (self.records.master() or {}).get("name")

    def _material(self, name: str) -> bytes:
        master = self._require_master()
        if self._is_default(name, master):
            return crypto.hkdf(master.key, None, _DEFAULT_KEY)
        cached = self._keys.get(name)
        if cached is not None:
            return cached
        record = self.records.key(name)
        if record is None:
            raise KMSNotFound(f"Invalid keyId {name!r}: no such key in this server's key store.")
        material = crypto.unseal(crypto.hkdf(master.key, None, _WRAP_KEK), base64.b64decode(record["w"]),
                                 _KEY_AAD + name.encode())
        if material is None:
            raise KMSUnavailable(f"The KMS key {name!r} does not open with this server's master key.")
        self._keys[name] = material
        return material

    def resolve(self, key_id: str | None) -> str:
        """The name of an existing key (``KMS.NotFoundException`` otherwise); None: the default key."""
        master = self._require_master()
        if key_id is None or key_id.strip() == "":
            return master.name
        name = key_name_of(key_id)
        if not self._is_default(name, master) and self.records.key(name) is None:
            raise KMSNotFound(f"Invalid keyId {key_id!r}: no such key in this server's key store.")
        return name

    async def create_key(self, name: str) -> dict:
        if not KEY_NAME_RE.fullmatch(name):
            raise InvalidArgument("a key name is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                                  "letter or digit")
        master = await self.ensure_master()
        async with self._lock:
            if self._is_default(name, master) or self.records.key(name) is not None:
                raise KMSKeyExists(f"A key named {name!r} exists already.")
            material = os.urandom(32)
            record = {"w": base64.b64encode(crypto.seal(crypto.hkdf(master.key, None, _WRAP_KEK), material,
                                                        _KEY_AAD + name.encode())).decode(),
                      "created": time.time()}
            await self.records.put_key(name, record)
            self._keys[name] = material
        log.info("KMS key %r created", name)
        return {"name": name, "created": record["created"], "arn": key_arn(name)}

    def list_keys(self) -> list[dict]:
        out = []
        if self.master is not None or self.records.master() is not None:
            master = self.records.master() or {}
            name = self.master.name if self.master is not None else master.get("name", DEFAULT_MASTER_NAME)
            out.append({"name": name, "default": True, "created": master.get("created"), "arn": key_arn(name)})
        for name, record in sorted(self.records.keys().items()):
            out.append({"name": name, "default": False, "created": record.get("created"), "arn": key_arn(name)})
        return out

    def status(self) -> dict:
        recorded = self.records.master()
        if self.problem:
            state = "unavailable"
        elif self.master is not None:
            state = "ok"
        else:
            state = "not created yet"
        return {"state": state, "problem": self.problem,
                "name": self.master.name if self.master else (recorded or {}).get("name"),
                "fingerprint": self.master.fingerprint if self.master else (recorded or {}).get("fp"),
                "source": self.master.source if self.master else None}

    # -- data keys (engine/crypto.py calls these) ------------------------------------------------
    async def new_data_key(self, spec: SSESpec, bucket: str, key: str) -> tuple[bytes, dict]:
        master = await self.ensure_master()
        data_key = os.urandom(32)
        if spec.mode == crypto.MODE_KMS:
            name = self.resolve(spec.kms_key_id)
            sealed = crypto.seal(self._material(name), data_key,
                                 crypto.data_key_aad("KMS", bucket, key, spec.context))
            record = {"t": "KMS", "kid": name, "dk": sealed}
            if spec.bucket_key:
                record["bk"] = True
            if spec.context:
                record["ctx"] = spec.context
            return data_key, record
        sealed = crypto.seal(crypto.hkdf(master.key, None, _S3_KEK), data_key, crypto.data_key_aad("S3", bucket, key))
        return data_key, {"t": "S3", "kid": master.name, "dk": sealed}

    def open_data_key(self, record: dict, bucket: str, key: str) -> bytes:
        master = self._require_master()
        if record.get("t") == "KMS":
            kek = self._material(record.get("kid") or master.name)
            aad = crypto.data_key_aad("KMS", bucket, key, record.get("ctx"))
        else:
            kek = crypto.hkdf(master.key, None, _S3_KEK)
            aad = crypto.data_key_aad("S3", bucket, key)
        data_key = crypto.unseal(kek, record["dk"], aad)
        if data_key is None:
            raise crypto.SSEDataTampered("the object's sealed data key does not open with its key")
        return data_key


def _master_record(key: MasterKey) -> dict:
    return {"name": key.name, "fp": key.fingerprint, "created": time.time()}


async def open_key_manager(store: Any, config: Any) -> KeyManager:
    """The node's key manager, checked against what the deployment recorded (see the module)."""
    node = getattr(store, "cluster_node", None)
    control = getattr(node, "control", None) if node is not None else None
    records: Any = ClusterRecords(store, control) if control is not None else LocalRecords(store)
    manager = KeyManager(records, secret=getattr(config, "kms_secret_key", None),
                         key_file=getattr(config, "kms_key_file", None), deployment_id=store.deployment_id)
    await manager.start()
    return manager


def canonical_context(header_value: str) -> str:
    """``x-amz-server-side-encryption-context``: base64 of a JSON object of strings; returned as
    canonical JSON (sorted keys), which is what the data key's seal binds."""
    try:
        document = json.loads(base64.b64decode(header_value.strip(), validate=True))
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("The encryption context is not valid base64-encoded JSON.",
                              ArgumentName="x-amz-server-side-encryption-context") from None
    if not isinstance(document, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in document.items()):
        raise InvalidArgument("The encryption context must be a JSON object of string values.",
                              ArgumentName="x-amz-server-side-encryption-context")
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
