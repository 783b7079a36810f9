"""Memory stays bounded by blocks in flight, not by object size: PUT and GET of 1 GiB."""

from __future__ import annotations

import gc
import hashlib
import threading
import time

import psutil
import pytest

from buckets import Store

MiB = 1024 * 1024
SIZE = 1024 * MiB
LIMIT = 100 * MiB


class PeakRSS:
    """Samples this process's RSS every few milliseconds in a thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base


@pytest.mark.slow
async def test_one_gib_put_and_get_in_bounded_memory(tmp_disks) -> None:
    store = await Store.open(tmp_disks(4), sync=False, partitions=64)
    try:
        await store.make_bucket("mem")
        chunk = bytes(range(256)) * (MiB // 256)
        # warm up: imports, thread pools, codec tables
        await store.put_object("mem", "warm", chunk * 3, 3 * MiB)
        async for _ in await store.get_object("mem", "warm"):
            pass
        gc.collect()

        async def body():
            for _ in range(SIZE // MiB):
                yield chunk

        expected = hashlib.md5()
        for _ in range(SIZE // MiB):
            expected.update(chunk)

        t0 = time.monotonic()
        with PeakRSS() as put_rss:
            info = await store.put_object("mem", "big", body(), SIZE)
        put_s = time.monotonic() - t0
        assert info.size == SIZE and info.etag == expected.hexdigest()
        gc.collect()

        t0 = time.monotonic()
        got = hashlib.md5()
        total = 0
        with PeakRSS() as get_rss:
            async for part in await store.get_object("mem", "big"):
                got.update(part)
                total += len(part)
        get_s = time.monotonic() - t0
        assert total == SIZE and got.hexdigest() == expected.hexdigest()

        print(f"\nPUT 1 GiB: RSS {put_rss.base / MiB:.0f} MiB -> peak {put_rss.peak / MiB:.0f} MiB "
              f"(+{put_rss.growth / MiB:.1f} MiB), {put_s:.1f} s")
        print(f"GET 1 GiB: RSS {get_rss.base / MiB:.0f} MiB -> peak {get_rss.peak / MiB:.0f} MiB "
              f"(+{get_rss.growth / MiB:.1f} MiB), {get_s:.1f} s")
        assert put_rss.growth < LIMIT, f"PUT grew RSS by {put_rss.growth / MiB:.1f} MiB"
        assert get_rss.growth < LIMIT, f"GET grew RSS by {get_rss.growth / MiB:.1f} MiB"
        overall = max(put_rss.peak, get_rss.peak) - put_rss.base
        assert overall < LIMIT, f"PUT+GET grew RSS by {overall / MiB:.1f} MiB in all"
    finally:
        await store.close()
