"""fsync without a thread: Linux AIO's ``IOCB_CMD_FSYNC``, completions read by the event loop.

A small PUT appends one record to each of its disks' logs and must fsync each before it is
acknowledged. Handing each batch's write and fsync to the disk's thread costs more than the
write: a queue put that wakes the thread (which, on a busy 2-core machine, often preempts
the event loop while the loop holds the GIL), the thread waiting for the GIL, and a
``call_soon_threadsafe`` back (~22 context switches and ~0.5 ms of kernel CPU per PUT over
four disks, measured). Linux has had an asynchronous fsync since 4.18: ``io_submit`` of an
``IOCB_CMD_FSYNC`` queues the fsync to a kernel worker and returns; its completion lands in
the context's ring and bumps an eventfd that the event loop watches. The record is written
(to the page cache) on the event loop, the fsync is submitted, and the loop carries on; no
Python thread is involved (4.8 context switches per PUT, half the kernel time).

One :class:`AioFsync` per event loop (:func:`for_loop`), shared by every disk of the
process: one eventfd and one ``io_getevents`` collect the completions of all of them.
Python has no binding for these calls; they go through libc's ``syscall`` with ctypes
(which releases the GIL around each call: nobody else wants it then, so that is cheap).

:func:`for_loop` returns None where this cannot work (not Linux on x86-64 or arm64, no
``io_setup`` in the kernel or a container that forbids it, the system's AIO slots used up);
callers then use their threads, as they do for a file system whose files refuse an
asynchronous fsync (``EINVAL``, raised as :class:`AioUnsupported`).

Must not: decide what to sync or when (the disk does), or know about records.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import platform
import struct
import sys
import weakref

log = logging.getLogger("buckets.storage")

# io_setup, io_destroy, io_getevents, io_submit
_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
IOCB_CMD_FSYNC, IOCB_CMD_FDSYNC = 2, 3
IOCB_FLAG_RESFD = 1  # signal the completion on aio_resfd (an eventfd)
# struct iocb (linux/aio_abi.h, little-endian): aio_data, aio_key, aio_rw_flags, aio_lio_opcode,
# aio_reqprio, aio_fildes, aio_buf, aio_nbytes, aio_offset, aio_reserved2, aio_flags, aio_resfd
_IOCB = struct.Struct("<QIIHhIQQqQII")
_EVENT = struct.Struct("<QQqq")  # struct io_event: data, obj, res, res2
DEPTH = 128  # fsyncs in flight per loop; more wait (in the caller's queue) for a slot
_BATCH = 64  # completions collected per io_getevents


class AioUnsupported(OSError):
    """This file cannot be fsynced asynchronously (its file system has no such operation)."""


class AioFsync:
    """Asynchronous fsyncs for one event loop. See the module's docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = DEPTH) -> None:
        numbers = _SYSCALLS.get(platform.machine()) if sys.platform == "linux" else None
        if numbers is None or sys.byteorder != "little":
            raise OSError(errno.ENOSYS, "asynchronous fsync needs Linux on x86-64 or arm64")
        # syscall(2) is variadic: every argument goes as a C long (or a pointer)
        self._setup, self._destroy, self._getevents, self._submit = (ctypes.c_long(n) for n in numbers)
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        self._syscall.restype = ctypes.c_long
        ctx = ctypes.c_ulong(0)
        if self._syscall(self._setup, ctypes.c_long(depth), ctypes.byref(ctx)) < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"io_setup: {os.strerror(code)}")
        self._ctx = ctypes.c_ulong(ctx.value)
        try:
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:
            self._syscall(self._destroy, self._ctx)
            raise
        self._depth = depth
        self._events = ctypes.create_string_buffer(_EVENT.size * _BATCH)
        self._no_wait = (ctypes.c_long * 2)(0, 0)  # a zero timeout: io_getevents never blocks
        self._inflight: dict[int, tuple[ctypes.Array, asyncio.Future]] = {}  # key -> (iocb, future)
        self._waiting: list[tuple[int, bool, asyncio.Future]] = []  # over the depth: submitted as slots free
        self._next = 1
        self._loop = weakref.ref(loop)
        self.closed = False
        # A context whose loop went away without close(): freed when this object is.
        self._free = weakref.finalize(self, _free, self._syscall, self._destroy, self._ctx, self._efd)
        loop.add_reader(self._efd, self._collect)

    def fsync(self, fd: int, *, datasync: bool = False) -> asyncio.Future:
        """A future that completes when ``fsync(fd)`` (``fdatasync`` with ``datasync``) has,
        or fails with its ``OSError`` (:class:`AioUnsupported` for ``EINVAL``). The caller
        keeps ``fd`` open until then (the kernel holds its own reference meanwhile anyway)."""
        if self.closed:
            raise OSError(errno.EBADF, "the asynchronous fsync context is closed")
        future = asyncio.get_running_loop().create_future()
        if len(self._inflight) >= self._depth:
            self._waiting.append((fd, datasync, future))
        else:
            self._start(fd, datasync, future)
        return future

    def _start(self, fd: int, datasync: bool, future: asyncio.Future) -> None:
        key = self._next
        self._next += 1
        opcode = IOCB_CMD_FDSYNC if datasync else IOCB_CMD_FSYNC
        iocb = ctypes.create_string_buffer(
            _IOCB.pack(key, 0, 0, opcode, 0, fd, 0, 0, 0, 0, IOCB_FLAG_RESFD, self._efd), _IOCB.size)
        pointers = (ctypes.c_void_p * 1)(ctypes.addressof(iocb))
        self._inflight[key] = (iocb, future)
        done = self._syscall(self._submit, self._ctx, ctypes.c_long(1), pointers)
        if done != 1:
            del self._inflight[key]
            code = ctypes.get_errno() if done < 0 else errno.EAGAIN
            future.set_exception(_error(code, "io_submit"))

    def _collect(self) -> None:
        """The eventfd is readable: resolve every completed fsync."""
        try:
            os.eventfd_read(self._efd)
        except (BlockingIOError, InterruptedError):
            pass
        while self._inflight:
            n = self._syscall(self._getevents, self._ctx, ctypes.c_long(0), ctypes.c_long(_BATCH),
                              self._events, self._no_wait)
            if n <= 0:
                break
            raw = self._events.raw
            for i in range(n):
                key, _obj, res, _res2 = _EVENT.unpack_from(raw, i * _EVENT.size)
                item = self._inflight.pop(key, None)
                if item is None or item[1].done():
                    continue
                if res < 0:
                    item[1].set_exception(_error(-res, "fsync"))
                else:
                    item[1].set_result(None)
            if n < _BATCH:
                break
        while self._waiting and len(self._inflight) < self._depth:
            fd, datasync, future = self._waiting.pop(0)
            if not future.done():
                self._start(fd, datasync, future)

    def close(self) -> None:
        """Stop watching and free the context (``io_destroy`` waits for fsyncs in flight)."""
        if self.closed:
            return
        self.closed = True
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._efd)
        self._free()
        for _iocb, future in self._inflight.values():
            if not future.done() and not future.get_loop().is_closed():
                future.set_exception(OSError(errno.ECANCELED, "the asynchronous fsync context closed"))
        self._inflight.clear()
        self._waiting.clear()

    def usable_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        return not self.closed and self._loop() is loop and not loop.is_closed()


def _free(syscall, destroy: int, ctx: ctypes.c_ulong, efd: int) -> None:
    syscall(destroy, ctx)
    os.close(efd)


def _error(code: int, what: str) -> OSError:
    if code == errno.EINVAL:
        return AioUnsupported(code, f"{what}: {os.strerror(code)}")
    return OSError(code, f"{what}: {os.strerror(code)}")


_BY_LOOP: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AioFsync | None]" = weakref.WeakKeyDictionary()
_warned = False
_last: "tuple[weakref.ref, AioFsync | None] | None" = None  # the last loop asked about, and its answer


def for_loop() -> AioFsync | None:
    """The running loop's :class:`AioFsync`, created on first use; None where Linux AIO is
    not available (then every call says so at once, without trying again)."""
    global _warned, _last
    loop = asyncio.get_running_loop()
    last = _last
    if last is not None and last[0]() is loop:  # the common case, without a weak-key lookup
        return last[1]
    try:
        aio = _BY_LOOP[loop]
    except KeyError:
        pass
    else:
        _last = (weakref.ref(loop), aio)
        return aio
    _sweep()
    try:
        aio: AioFsync | None = AioFsync(loop)
    except OSError as error:
        if not _warned:
            _warned = True
            log.info("asynchronous fsync unavailable (%s): record-log syncs use the disks' threads", error)
        aio = None
    _BY_LOOP[loop] = aio
    _last = (weakref.ref(loop), aio)
    return aio


def _sweep() -> None:
    """Free the contexts of loops that were closed (tests run many loops in one process)."""
    for loop, aio in list(_BY_LOOP.items()):
        if loop.is_closed():
            if aio is not None:
                aio.close()
            _BY_LOOP.pop(loop, None)
    global _last
    if _last is not None and (_last[0]() is None or _last[0]().is_closed()):
        _last = None
