"""``buckets.runtime.Workers``: the event loop's thread hand-off."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
import weakref

import pytest

from buckets import runtime
from buckets.runtime import Workers, run_in


async def test_results_errors_and_at_most_max_workers_threads() -> None:
    w = Workers(3, "t")
    seen: set[str] = set()

    def job(i: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.002)
        return i * 2

    assert await asyncio.gather(*(w.run(job, i) for i in range(50))) == [i * 2 for i in range(50)]
    assert 1 <= len(seen) <= 3 and all(n.startswith("t_") for n in seen)

    def boom() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        await w.run(boom)
    # run_in_executor (submit) works too
    assert await asyncio.get_running_loop().run_in_executor(w, job, 21) == 42
    assert await run_in(w, job, 1) == 2 and await run_in(None, job, 2) == 4
    w.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        w.run(job, 1)


async def test_a_cancelled_wait_drops_the_result_and_the_pool_goes_on() -> None:
    w = Workers(1, "t")
    gate = threading.Event()
    slow = w.run(gate.wait, 5)
    slow.cancel()
    gate.set()
    assert await w.run(lambda: "after") == "after"  # the cancelled one ran, its result dropped
    w.shutdown(wait=True)


async def test_shutdown_runs_what_is_queued_then_stops_the_threads() -> None:
    w = Workers(2, "t")
    done: list[int] = []
    futs = [w.run(lambda i=i: (time.sleep(0.001), done.append(i))) for i in range(20)]
    threads = list(w._threads)
    await asyncio.gather(*futs)
    w.shutdown(wait=True)
    assert sorted(done) == list(range(20))
    assert not any(t.is_alive() for t in threads)


def test_a_pool_nobody_shut_down_stops_its_threads_when_collected() -> None:
    w = Workers(2, "t")
    w.submit(lambda: None).result()
    threads = list(w._threads)
    ref = weakref.ref(w)
    del w
    gc.collect()
    assert ref() is None
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4096, 4097, 65536, 65537, 200_000])
def test_hash_update_in_pieces_gives_the_same_digests(size) -> None:
    import hashlib

    import blake3

    from buckets.checksums import new_checksum
    from buckets.runtime import hash_update

    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for make in (hashlib.md5, hashlib.sha256, blake3.blake3, lambda: new_checksum("crc32c")):
        whole, pieces = make(), make()
        whole.update(data)
        hash_update(pieces, data)
        assert pieces.digest() == whole.digest()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
@pytest.mark.parametrize("batch", [True, False])
async def test_helper_threads_are_batch_threads_unless_turned_off(monkeypatch, batch) -> None:
    """--batch-threads: a pool's threads run as SCHED_BATCH (never preempt the event loop on
    wake-up); off, as normal threads. The loop's own thread is never changed."""
    monkeypatch.setattr(runtime, "batch_threads", batch)
    pool = Workers(2, "sched-test")
    try:
        policies = await asyncio.gather(*(pool.run(os.sched_getscheduler, 0) for _ in range(4)))
    finally:
        pool.shutdown(wait=True)
    assert set(policies) == {os.SCHED_BATCH if batch else os.SCHED_OTHER}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
