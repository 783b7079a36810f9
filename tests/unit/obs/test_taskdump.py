"""The task dump (obs/taskdump.py): each pending task's chain of awaits, grouped."""

from __future__ import annotations

import asyncio

from buckets.obs.taskdump import await_chain, format_dump


async def innermost(event: asyncio.Event) -> None:
    await event.wait()


async def middle(event: asyncio.Event) -> None:
    await innermost(event)


async def outer(event: asyncio.Event) -> None:
    await middle(event)


async def waits_for(task: asyncio.Task) -> None:
    await task


async def test_a_chain_names_every_coroutine_down_to_what_it_waits_on() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(outer(event), name="the-waiter")
    await asyncio.sleep(0)
    chain = await_chain(task)
    names = [line.rsplit(" ", 1)[-1] for line in chain[:-1]]
    assert names == ["outer", "middle", "innermost", "wait"], chain
    assert chain[-1] == "-> awaits Future", chain
    event.set()
    await task


async def test_identical_chains_are_grouped_and_a_task_awaited_is_named() -> None:
    event = asyncio.Event()
    waiters = [asyncio.create_task(outer(event)) for _ in range(5)]
    first = asyncio.create_task(outer(event), name="awaited-one")
    watcher = asyncio.create_task(waits_for(first), name="watcher")
    await asyncio.sleep(0)
    text = format_dump()
    assert "- 6 x (e.g. " in text, text  # the five waiters and the awaited task share one chain
    assert "-> awaits task awaited-one" in text, text
    assert "other threads" in text
    event.set()
    await asyncio.gather(*waiters, first, watcher)
