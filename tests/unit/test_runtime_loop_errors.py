"""The event loop's handler for errors nobody retrieved (``runtime.quiet_body_writer_errors``):
aiohttp's request-body writer failing because the peer closed the connection is not a bug to
log with its traceback; any other unretrieved error still is."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from buckets.runtime import quiet_body_writer_errors


class ClientRequest:  # named as aiohttp's, whose body writer task this stands for
    async def write_bytes(self) -> None:
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")


async def other_work() -> None:
    raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")


async def unretrieved(loop: asyncio.AbstractEventLoop, coro) -> dict:
    task = loop.create_task(coro)
    await asyncio.sleep(0)
    assert task.done()
    return {"message": "Task exception was never retrieved", "exception": task.exception(), "future": task}


async def test_a_cut_off_request_body_is_not_logged_as_a_bug(caplog) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    quiet_body_writer_errors(loop)
    try:
        handler = loop.get_exception_handler()
        with caplog.at_level(logging.DEBUG):
            handler(loop, await unretrieved(loop, ClientRequest().write_bytes()))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("request body was cut off" in r.getMessage() for r in caplog.records)
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            handler(loop, await unretrieved(loop, other_work()))
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and "never retrieved" in errors[0].getMessage()
    finally:
        loop.set_exception_handler(previous)
