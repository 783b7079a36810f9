"""The peer RPC wire format, shared by :mod:`rpcserver` and :mod:`rpcclient`.

Request: ``POST /_buckets/peer/v1/<service>/<method>`` with the signed headers of
:mod:`buckets.cluster.rpcauth` and a body made of the control message, length-prefixed,
then the streamed bytes if the method takes any::

    u32 big-endian n | n bytes: msgpack map (the arguments) | body bytes (declared length or chunked)

Response, by status:

- ``200`` with ``Content-Type: application/x-buckets-peer-result``: the msgpack result;
- ``200`` with ``Content-Type: application/x-buckets-peer-stream``: frames, each
  ``u8 kind | u32 big-endian n | n bytes``: ``D`` data, ``E`` an error record (msgpack;
  the stream ends there), ``Z`` the end (n = 0). A stream without its ``Z`` or ``E`` was
  cut: the reader raises instead of taking a short stream for a whole one;
- ``460`` (:data:`PEER_ERROR_STATUS`) with ``Content-Type: application/x-buckets-peer-error``:
  a typed error record (:mod:`buckets.cluster.rpcerrors`); ``500`` with the same type: a
  bug in the handler (logged with a traceback on the peer);
- ``403`` with a fixed body: not signed by this cluster. Nothing else is said.
"""

from __future__ import annotations

import re
import struct
from typing import Any

import msgpack

PREFIX = "/_buckets/peer/v1"
ROUTE_PREFIX = "/_buckets/peer"  # everything under it is authenticated first, even other versions
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")  # service and method names

RESULT_TYPE = "application/x-buckets-peer-result"
STREAM_TYPE = "application/x-buckets-peer-stream"
ERROR_TYPE = "application/x-buckets-peer-error"
PEER_ERROR_STATUS = 460
PEER_ERROR_REASON = "Peer Error"
FORBIDDEN_BODY = b"Forbidden\n"

ARGS_PREFIX = struct.Struct(">I")
FRAME_HEADER = struct.Struct(">cI")
FRAME_DATA, FRAME_ERROR, FRAME_END = b"D", b"E", b"Z"
MAX_FRAME = 1 << 20  # a data frame's payload; bigger chunks are split
MAX_ERROR_FRAME = 64 * 1024
# ``disk/read_streams`` carries several ranges in one stream: before each range's chunk, one
# data frame holding this tag (the range's index, what follows, its length in bytes), then
# that many bytes in data frames: the chunk (``RANGE_DATA``; shorter than asked where the file
# ends, and then that range is done), or the range's typed error record (``RANGE_ERROR``).
RANGE_TAG = struct.Struct(">HcI")
RANGE_DATA, RANGE_ERROR = b"d", b"e"
MAX_STREAM_RANGES = 256
DEFAULT_MAX_ARGS = 4 << 20  # a control message (registry batches fit; shard bytes never go here)


_PATHS: dict[tuple[str, str], str] = {}  # checked names: every call asks, the set is small


def path_for(service: str, method: str) -> str:
    path = _PATHS.get((service, method))
    if path is None:
        if not (NAME_RE.fullmatch(service) and NAME_RE.fullmatch(method)):
            raise ValueError(f"peer RPC names are lower-case identifiers: {service!r}/{method!r}")
        path = f"{PREFIX}/{service}/{method}"
        if len(_PATHS) < 1024:
            _PATHS[(service, method)] = path
    return path


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Decode one msgpack value (container sizes are bounded by ``len(data)``, msgpack's
    default); anything malformed is a ValueError."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise ValueError(f"not a valid msgpack value: {error}") from None


def args_prefix(args: bytes) -> bytes:
    return ARGS_PREFIX.pack(len(args))


def range_tag(index: int, kind: bytes, length: int) -> bytes:
    return RANGE_TAG.pack(index, kind, length)


def frame_header(kind: bytes, length: int) -> bytes:
    return FRAME_HEADER.pack(kind, length)
