"""The node's master key: where it comes from and how it is recognised.

The master key is 32 random bytes with a name, written ``NAME:BASE64`` (MinIO's
``MINIO_KMS_SECRET_KEY`` convention) in ``BUCKETS_KMS_SECRET_KEY`` or in a key file. Its
*fingerprint* (an HMAC of a fixed label under the key, so it reveals nothing about the key) is
recorded durably with the deployment the first time the key is used, and compared at every
start: a different or missing key is reported, never silently replaced.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_MASTER_NAME = "buckets-master-key"
_FINGERPRINT_LABEL = b"buckets-master-key-fingerprint-v1"


class MasterKeyError(ValueError):
    """A master key (value or file) that cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    name: str
    key: bytes  # 32 bytes
    source: str  # where it was read from, for messages: "BUCKETS_KMS_SECRET_KEY" or "file /path"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    def encoded(self) -> str:
        return f"{self.name}:{base64.b64encode(self.key).decode()}"

    def __repr__(self) -> str:  # never print the key
        return f"MasterKey({self.name!r}, fingerprint={self.fingerprint}, source={self.source!r})"


def fingerprint(key: bytes) -> str:
    return hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]


def parse_master_key(text: str, source: str) -> MasterKey:
    """``NAME:BASE64`` of 32 bytes. The message never contains the key."""
    name, colon, encoded = text.strip().partition(":")
    if not colon:
        raise MasterKeyError(f"{source}: expected NAME:BASE64 (a key name, a colon, 32 bytes in base64)")
    if not KEY_NAME_RE.fullmatch(name):
        raise MasterKeyError(f"{source}: the key name must be 1 to 64 letters, digits, '.', '_' or '-', "
                             f"starting with a letter or digit")
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{source}: the key is not valid base64") from None
    if len(key) != 32:
        raise MasterKeyError(f"{source}: the key must be 32 bytes (44 base64 characters), got {len(key)} bytes")
    return MasterKey(name, key, source)


def read_key_file(path: Path) -> MasterKey:
    """The master key in ``path``; ``FileNotFoundError`` when there is none, ``MasterKeyError``
    when it is unreadable or malformed."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as error:
        raise MasterKeyError(f"cannot read the master key file {path}: {getattr(error, 'strerror', None) or error}") \
            from None
    return parse_master_key(text, f"master key file {path}")


def create_key_file(path: Path, name: str = DEFAULT_MASTER_NAME) -> MasterKey:
    """A new random master key, written to ``path`` (mode 0600, its directory 0700 when created)
    atomically and durably, never over an existing file: if one appeared meanwhile, that one is
    returned."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = MasterKey(name, os.urandom(32), f"file {path}")
    temp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key.encoded() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)  # unlike rename, never replaces a key file that exists
        except FileExistsError:
            return read_key_file(path)
        _fsync_dir(path.parent)
    finally:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
    return key


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_key_file(deployment_id: str) -> Path:
    """Where the master key is created when no file or value is configured: off the data
    disks, in the home directory of the user running the server."""
    return Path.home() / ".buckets" / "keys" / f"{deployment_id}.key"
