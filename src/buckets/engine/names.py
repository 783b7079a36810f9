"""S3 naming rules for buckets and keys.

Why a key may hold any character but NUL (``.``/``..`` segments, control characters,
``%``, leading ``/``) and still never touch the filesystem:

* a key is never a path component. ``buckets.engine.paths`` names an object's files after
  ``xxh3_128(key)`` in hex (``[0-9a-f]{32}``), a write id the server generates (hex) and a
  part number (an int): nothing the client chose. Every path under ``buckets/`` is built
  there, from those and the bucket name alone;
* a bucket name does become a directory, so it must pass ``check_bucket_name`` (lowercase
  letters, digits, ``.`` and ``-``, starting and ending with a letter or digit, no ``..``)
  before a bucket is created; a request naming any other bucket is refused before any
  lookup (``buckets.s3.router.select_operation``);
* multipart upload ids come back from clients, but reach a path only once the registry has
  a record under that id, i.e. only ids the server generated (hex);
* every ``Disk`` refuses (``PathEscape``) any relative path that would leave the disk root, as a
  second line should one of the above ever be broken.

NUL stays refused: the registry and the placement hash join ``bucket`` and ``key`` with a
NUL separator, and the design keeps NUL out of names (S3 itself accepts it).
"""

from __future__ import annotations

import re

from buckets.errors import InvalidBucketName, InvalidObjectName, KeyTooLongError

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
MAX_KEY_BYTES = 1024


def check_bucket_name(name: str) -> None:
    if not isinstance(name, str) or not _BUCKET_RE.fullmatch(name):  # fullmatch: '$' would admit 'abc\n'
        raise InvalidBucketName(resource=name if isinstance(name, str) else None, BucketName=str(name))
    if ".." in name or ".-" in name or "-." in name or _IP_RE.fullmatch(name):
        raise InvalidBucketName(resource=name, BucketName=name)
    if name.startswith("xn--") or name.startswith("sthree-") or name.endswith("-s3alias") \
            or name.endswith("--ol-s3"):
        raise InvalidBucketName(resource=name, BucketName=name)


def check_object_key(key: str) -> None:
    """Keys are what S3 allows (1 to 1024 bytes of UTF-8), less NUL. ``a/../b``, ``..`` and
    control characters are ordinary keys here, as on S3 (see the module docstring)."""
    if not key:
        raise InvalidObjectName("Object key must not be empty.", resource=key)
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidObjectName("Object key is not valid UTF-8.") from None
    if len(raw) > MAX_KEY_BYTES:
        raise KeyTooLongError(resource=key[:64] + "...")
    if "\0" in key:
        raise InvalidObjectName("Object key must not contain NUL characters.", resource=key)
