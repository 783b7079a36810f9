"""A GET's reader closed while it reads ahead (engine/reader.py): the span reads still in
flight are cancelled and waited for before the close returns (before, the plain path's inner
generator was dropped, not closed, and its reads went on until the loop finalized it, after
the write was unpinned). A cancel of the task closing it neither cuts those reads' cleanup
short nor is lost: it is raised once they ended (before, ``await`` of each read inside
``except BaseException: pass`` passed the cancel on to the read and swallowed it)."""

from __future__ import annotations

import asyncio

from engine_testkit import content


async def test_a_cancel_of_the_task_closing_a_reader_is_raised_after_its_reads_end(store, bucket) -> None:
    size = 3 << 20  # three spans of 1 MiB (2 data shards of 16 KiB blocks)
    await store.put_object(bucket, "k", content("k", size), size)
    reader = await store.get_object(bucket, "k")
    ended: list[str] = []
    started, cleaning, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    read_span = reader._read_span

    async def slow_span(*args):
        if args[2] == 0:  # the first span reads as usual
            return await read_span(*args)
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()  # letting go of its shard streams takes a while
            ended.append("span")
            raise

    reader._read_span = slow_span
    chunks = reader.__aiter__()
    first = await chunks.__anext__()
    await asyncio.wait_for(started.wait(), 30)
    assert first and ended == []  # the second span's read is in flight

    closing = asyncio.ensure_future(chunks.aclose())
    await asyncio.wait_for(cleaning.wait(), 30)  # the reader cancelled the read and waits for it
    assert not closing.done()
    closing.cancel()  # delivered before the read is released (its wake-up is queued first)
    release.set()
    try:
        await closing
    except asyncio.CancelledError:
        pass
    assert ended == ["span"]  # the read ended before the closing task did
    assert closing.cancelled()  # and the cancel reached the closing task


async def test_closing_a_reader_whose_consumer_stopped_ends_its_read_ahead_first(store, bucket) -> None:
    """A copy's writer that failed stops iterating its source without closing the iteration:
    the reader's own ``aclose`` (the handler's ``finally``) closes it, so the span read ahead
    ends before the write is unpinned."""
    size = 3 << 20
    await store.put_object(bucket, "k", content("k", size), size)
    reader = await store.get_object(bucket, "k")
    ended: list[str] = []
    read_span = reader._read_span

    started = asyncio.Event()

    async def slow_span(*args):
        if args[2] == 0:
            return await read_span(*args)
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            ended.append("span")
            raise

    reader._read_span = slow_span

    async def consume_one() -> None:  # as a writer that failed after its first block
        async for _chunk in reader:
            break

    await consume_one()
    await asyncio.wait_for(started.wait(), 30)
    ident = (bucket, "k", reader.entry["wid"])
    assert ended == [] and ident in store._active_reads  # the write is pinned, a span in flight
    await reader.aclose()
    assert ended == ["span"]  # the read ahead ended before the close returned
    assert ident not in store._active_reads
