"""``SyncStore``: the embedded engine for code that is not async.

Runs a private event loop in a background thread and forwards each call to the async
``Store``. Object bodies stay streamed: ``get_object`` returns an iterator of chunks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator

from buckets.engine.types import ObjectInfo


class SyncStore:
    def __init__(self, store, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._store, self._loop, self._thread = store, loop, thread

    @classmethod
    def open(cls, paths: list[str], **kwargs) -> "SyncStore":
        from buckets.engine.store import Store

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="buckets-store", daemon=True)
        thread.start()
        store = asyncio.run_coroutine_threadsafe(Store.open(paths, **kwargs), loop).result()
        return cls(store, loop, thread)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        self._call(self._store.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self) -> "SyncStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def put_object(self, bucket: str, key: str, data: bytes | Iterable[bytes], size: int | None = None,
                   opts=None) -> ObjectInfo:
        if isinstance(data, (bytes, bytearray, memoryview)):
            return self._call(self._store.put_object(bucket, key, bytes(data), len(data), opts))
        it = iter(data)

        async def agen():
            while True:
                chunk = await asyncio.get_running_loop().run_in_executor(None, next, it, None)
                if chunk is None:
                    return
                yield chunk

        return self._call(self._store.put_object(bucket, key, agen(), size, opts))

    def get_object(self, bucket: str, key: str, range=None) -> Iterator[bytes]:
        """Errors (NoSuchKey, InvalidRange) are raised here; the body streams lazily."""
        reader = self._call(self._store.get_object(bucket, key, range))
        return self._chunks(reader)

    def _chunks(self, reader) -> Iterator[bytes]:
        agen = reader.__aiter__()
        while True:
            try:
                yield self._call(agen.__anext__())
            except StopAsyncIteration:
                return

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            return self._call(attr(*args, **kwargs))

        return call
