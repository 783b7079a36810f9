"""Child process for the crash test: writes objects forever, printing each acknowledgement.

Usage: python crash_child.py ROUND DISK...

Every object's content is a pure function of its key (``crash_content``), so the parent can
check any visible object without knowing how far the child got. After ``put_object`` (or
``complete_multipart_upload``) returns, the child prints ``ACK <key> <md5>`` and flushes:
from then on the object must survive a SIGKILL.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

BUCKET = "crash"
BLOCK = 16 * 1024
INLINE = 4 * 1024


def crash_content(key: str) -> bytes:
    h = hashlib.sha256(key.encode()).digest()
    size = [0, 100, INLINE, INLINE + 1, 3 * BLOCK + 17, 9 * BLOCK][h[0] % 6] + h[1]
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(h + counter.to_bytes(4, "little")).digest()
        counter += 1
    return bytes(out[:size])


def store_options() -> dict:
    return dict(sync=True, block_size=BLOCK, inline_threshold=INLINE, partitions=64)


async def main(round_no: int, disks: list[str]) -> None:
    from buckets import Store
    from buckets.engine.types import CompletePart

    store = await Store.open(disks, **store_options())
    print("READY", flush=True)
    i = 0
    while True:
        key = f"r{round_no}/k{i:05d}"
        if i % 5 == 4:  # overwrite an earlier key: same content, a new write
            key = f"r{round_no}/k{i - 3:05d}"
        data = crash_content(key)
        if i % 7 == 6:  # a one-part multipart upload (the last part may be small)
            key = f"r{round_no}/mp{i:05d}"
            data = crash_content(key)
            up = await store.create_multipart_upload(BUCKET, key)
            part = await store.put_part(BUCKET, key, up.upload_id, 1, data, len(data))
            await store.complete_multipart_upload(BUCKET, key, up.upload_id, [CompletePart(1, part.etag)])
        else:
            await store.put_object(BUCKET, key, data, len(data))
        print("ACK", key, hashlib.md5(data).hexdigest(), flush=True)
        i += 1


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
