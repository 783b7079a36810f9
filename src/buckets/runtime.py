"""Process-wide tuning for a storage server: malloc, garbage collector, GIL switching.

Called once by ``buckets server`` before the event loop starts (embedded users may call
``tune_process()`` themselves). Each setting is a measured fix (bench/README.md):

- glibc returns the few MiB of per-block temporary buffers (pieces, parity, frames) to
  the kernel after every block and faults them back in for the next one: ~740 page faults
  per 1 MiB encode, halving codec throughput. Raising the mmap and trim thresholds keeps
  those buffers in the heap.
- The registry cache holds up to a million small dicts; every full collection walks all
  of them. Larger generation thresholds make full collections rare, and ``gc.freeze()``
  moves everything allocated at start-up out of the collector's way.
- Worker threads (disk I/O, hashing) hold the GIL between system calls; a shorter switch
  interval lets the event loop get it back sooner after each of its own system calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import queue
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


_M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 4 << 20, trim_threshold: int = 16 << 20, arenas: int = 4) -> bool:
    """Keep block-sized buffers (1-3 MiB) in the heap, but bound what the heap may hoard:
    a 16 MiB trim threshold and 4 arenas keep RSS flat under many concurrent transfers
    (measured: tests/slow/test_rss_large_upload.py)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    results = [mallopt(_M_MMAP_THRESHOLD, mmap_threshold), mallopt(_M_TRIM_THRESHOLD, trim_threshold),
               mallopt(_M_ARENA_MAX, arenas)]
    return all(r == 1 for r in results)


def tune_process() -> None:
    tune_malloc()
    gc.set_threshold(50_000, 50, 100)
    sys.setswitchinterval(0.001)


def freeze_startup_objects() -> None:
    """Call once the server is initialised: start-up objects are never collected anyway."""
    gc.collect()
    gc.freeze()


# -- thread hand-offs -------------------------------------------------------------------------


class Workers(concurrent.futures.Executor):
    """A thread pool for the event loop's hand-offs (disk I/O, registry commits, hashing).

    ``await workers.run(fn, *args)`` queues the call and returns an asyncio future that the
    worker resolves through ``loop.call_soon_threadsafe``. ``loop.run_in_executor`` on a
    ``ThreadPoolExecutor`` builds a concurrent future (with its Condition), a work item, and an
    asyncio future chained to it by two callbacks: measured on this machine's uvloop, ~25-28 µs
    of the event loop's CPU per hand-off against ~5 µs here, and a small PUT makes several
    (its disks' log appends, the registry's commit). ``submit`` still returns a concurrent
    future, so ``loop.run_in_executor(workers, ...)`` works too (the slow way).

    Threads start on demand, up to ``max_workers``; ``shutdown`` runs what is queued, then
    stops them. They are daemon threads: a pool nobody shut down does not hold the process at
    exit (the work they do is crash-safe by design: a write is durable when its fsync
    returned, not when the process exits cleanly), and one that is garbage-collected stops its
    threads. A call already running cannot be cancelled (as with ``run_in_executor``): a
    cancelled ``run`` only drops its result.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "workers") -> None:
        self._max = max(1, int(max_workers))
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = [0]  # threads waiting for work (under _lock; read unlocked as a hint)
        self._lock = threading.Lock()
        self._closed = False
        weakref.finalize(self, _stop_workers, self._queue, self._threads)

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """``fn(*args)`` in a worker thread; call from the event loop's thread."""
        if self._closed:
            raise RuntimeError("cannot schedule new work after shutdown")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((fn, args, loop, fut))
        if not self._idle[0] and len(self._threads) < self._max:
            self._spawn()
        return fut

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        if self._closed:
            raise RuntimeError("cannot schedule new work after shutdown")
        cf: concurrent.futures.Future = concurrent.futures.Future()
        call = functools.partial(fn, *args, **kwargs) if kwargs else fn
        self._queue.put((call, args if not kwargs else (), None, cf))
        if not self._idle[0] and len(self._threads) < self._max:
            self._spawn()
        return cf

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    _cancel(item)
        _stop_workers(self._queue, self._threads)
        if wait:
            for t in list(self._threads):
                if t is not threading.current_thread():
                    t.join()

    def _spawn(self) -> None:
        t = threading.Thread(target=_work, args=(self._queue, self._idle, self._lock),
                             name=f"{self._prefix}_{len(self._threads)}", daemon=True)
        self._threads.append(t)
        t.start()


def _stop_workers(q: queue.SimpleQueue, threads: list[threading.Thread]) -> None:
    for _ in threads:
        q.put(None)


def _cancel(item: tuple) -> None:
    _fn, _args, loop, fut = item
    if loop is None:
        fut.cancel()
    else:
        try:
            loop.call_soon_threadsafe(fut.cancel)
        except RuntimeError:  # its loop is closed
            pass


def _resolve(fut: asyncio.Future, ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


# The server's --batch-threads / BUCKETS_BATCH_THREADS: helper threads run as SCHED_BATCH.
batch_threads = True


def helper_thread_started() -> None:
    """Called first by every helper thread (the pools', the log flusher): with
    ``batch_threads``, the thread becomes ``SCHED_BATCH`` (Linux; a no-op elsewhere or where
    refused). The kernel then never lets it preempt the running task when it is woken. The
    event loop wakes a helper (a queue put) while it holds the GIL; a normal thread woken on
    the loop's CPU often preempts the loop there and then, runs until it needs the GIL, and
    waits for the loop, which waits to be scheduled back: two context switches and the GIL
    idle in between. A batch thread waits for the loop to block or for the other CPU. Its
    share of the CPU is unchanged (the same nice level and weight). Measured on a 4 x 4
    loopback cluster under 4 KiB PUTs: +11-20% PUT/s in four alternated pairs."""
    if not batch_threads:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # 0: this thread
    except (AttributeError, OSError):
        pass


def _work(q: queue.SimpleQueue, idle: list, lock: threading.Lock) -> None:
    helper_thread_started()
    while True:
        with lock:
            idle[0] += 1
        item = q.get()
        with lock:
            idle[0] -= 1
        if item is None:
            return
        fn, args, loop, fut = item
        del item
        if loop is None:  # submit(): a concurrent future
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(exc)
        else:
            try:
                result, ok = fn(*args), True
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                result, ok = exc, False
            try:
                loop.call_soon_threadsafe(_resolve, fut, ok, result)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting
                pass
            del result
        del fn, args, loop, fut


def run_in(executor: concurrent.futures.Executor | None, fn: Callable[..., Any], *args: Any) -> "asyncio.Future":
    """``fn(*args)`` in ``executor``: the quick hand-off of a :class:`Workers`, else
    ``run_in_executor``."""
    if isinstance(executor, Workers):
        return executor.run(fn, *args)
    return asyncio.get_running_loop().run_in_executor(executor, fn, *args)


# -- hashing small bodies on the event loop -----------------------------------------------------

# hashlib, blake3 and zfec release the GIL for an input of 2048 bytes or more. On the event loop,
# with disk and commit threads waiting for the GIL, each release hands it over, and the loop
# waits until that thread gives it back: measured against one busy thread, an md5 of 4 KiB took
# ~370 µs instead of ~10. A small body is hashed in pieces too short to release it.
GIL_RELEASE_MIN = 2048
_PIECE = GIL_RELEASE_MIN - 1
_INLINE_MAX = 64 * 1024  # above this, the hash's own time dwarfs a hand-over (and the big
                          # bodies are hashed in the cpu pool anyway)


def hash_update(hasher: Any, data: bytes | bytearray | memoryview) -> None:
    """``hasher.update(data)``, in pieces of under 2048 bytes when ``data`` is small, so the
    event loop keeps the GIL (see above); the digest is the same."""
    n = len(data)
    if n < GIL_RELEASE_MIN or n > _INLINE_MAX:
        hasher.update(data)
        return
    view = memoryview(data)
    for i in range(0, n, _PIECE):
        hasher.update(view[i:i + _PIECE])


def quiet_body_writer_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Do not log, as a bug with its traceback, the failure of aiohttp's request-body writer
    task when a peer closed the connection while a body was still going out: aiohttp (3.14)
    re-raises it from that task, which nobody awaits, so asyncio reports "Task exception was
    never retrieved". The same failure reaches the caller through the response (the peer call
    fails and is handled there): this is its duplicate. Logged at debug level instead; every
    other unhandled error keeps the default handling."""
    import aiohttp

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        task = context.get("future") or context.get("task")
        coro = task.get_coro() if isinstance(task, asyncio.Task) else None
        if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError)) and \
                getattr(coro, "__qualname__", "") == "ClientRequest.write_bytes":
            logging.getLogger("buckets.runtime").debug("a request body was cut off: %s", exc)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def cancel_and_wait(task: "asyncio.Future", attempts: int = 20, patience: float = 1.0) -> None:
    """Cancel ``task`` and wait for it to end: how a background loop is stopped. On Python
    3.11 ``asyncio.wait_for`` swallows a cancel that arrives as its inner call finishes (it
    returns that call's result instead), and a loop task then goes on into its next round:
    a single ``cancel()`` and ``await task`` then waits forever (a cluster's migration never
    finished so: its checkpoint ticker went on after a cancel swallowed by a control-plane
    commit). So cancel again, every ``patience`` seconds, until it ends; after ``attempts``
    cancels it is logged and left. Never raises the task's own exception or cancellation (a
    cancellation of the caller still propagates)."""
    for _ in range(attempts):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=patience)
        if done:
            break
    else:
        logging.getLogger(__name__).warning("a background task did not stop after %d cancels: %r", attempts, task)
        return
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).debug("background task ended with %r while stopping", task.exception())


async def cancel_all_and_wait(futures: Iterable[asyncio.Future]) -> None:
    """Cancel ``futures`` and wait until every one has ended (its own cleanup done), retrieving
    their outcomes: how a reader lets go of the reads it started ahead. A cancel of the caller
    that arrives meanwhile is raised once they have all ended, not lost (a bare ``await`` of
    each inside ``except BaseException: pass`` swallowed it: the caller went on as if it had
    not been cancelled)."""
    futures = list(futures)
    for f in futures:
        f.cancel()
    cancelled = False
    for f in futures:
        while not f.done():
            try:
                await asyncio.wait({f})
            except asyncio.CancelledError:
                cancelled = True  # ours: the reads still end first
        if not f.cancelled():
            f.exception()  # retrieved: not logged as never retrieved
    if cancelled:
        raise asyncio.CancelledError


async def wait_for(aw: Any, timeout: float | None) -> Any:
    """``asyncio.wait_for`` as Python 3.12 has it (on ``asyncio.timeout``): the result of
    ``aw``, or ``TimeoutError`` after ``timeout`` seconds (None: no limit). Python 3.11's own
    returns the call's result instead of raising a cancel of the caller that lands as the call
    finishes: the cancel is lost, and a loop cancelled so goes on (a migration's checkpoint
    ticker did, and its run waited for it forever). Here a cancel of the caller is always
    raised. ``aw`` runs in the caller's task (3.11's wraps a coroutine in a task of its own)."""
    if timeout is None:
        return await aw
    async with asyncio.timeout(timeout):
        return await aw
