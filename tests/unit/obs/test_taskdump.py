"""The task dump (obs/taskdump.py): each pending task's chain of awaits, grouped."""

from __future__ import annotations

import asyncio
import contextlib

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


async def test_a_chain_goes_on_into_the_tasks_it_waits_for() -> None:
    event = asyncio.Event()
    first = asyncio.create_task(outer(event), name="first-inner")
    second = asyncio.create_task(outer(event), name="second-inner")

    async def waits_for_either() -> None:
        await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)

    async def gathers() -> None:
        await asyncio.gather(waits_for(first), asyncio.sleep(30))

    waiting = asyncio.create_task(waits_for_either())
    gathering = asyncio.create_task(gathers())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    chain = await_chain(waiting)
    text = "\n".join(chain)
    assert "-> awaits task first-inner:" in text and "-> awaits task second-inner:" in text, text
    assert any(line.startswith("    ") and line.endswith(" innermost") for line in chain), text
    text = "\n".join(await_chain(gathering))
    # gather wraps each coroutine in a task of its own: both are followed, down to the sleep
    assert text.count("-> awaits task ") == 3 and " waits_for" in text and " sleep" in text, text
    event.set()
    await asyncio.gather(waiting, first, second)
    gathering.cancel()


async def test_a_chain_goes_into_an_async_context_manager() -> None:
    event = asyncio.Event()

    @contextlib.asynccontextmanager
    async def held():
        await middle(event)
        yield

    async def enters() -> None:
        async with held():
            pass

    task = asyncio.create_task(enters())
    await asyncio.sleep(0)
    names = [line.rsplit(" ", 1)[-1] for line in await_chain(task)[:-1]]
    assert names == ["enters", "__aenter__", "held", "middle", "innermost", "wait"], names
    event.set()
    await task


class Peer:
    endpoint = "http://127.0.0.3:9000"

    async def call(self, event: asyncio.Event) -> None:
        await event.wait()


async def test_a_frame_of_an_object_with_an_endpoint_names_it() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(Peer().call(event))
    await asyncio.sleep(0)
    assert any(line.endswith(" call [http://127.0.0.3:9000]") for line in await_chain(task)), await_chain(task)
    event.set()
    await task


async def test_a_dump_leaves_no_value_pinned_to_a_frame() -> None:
    import weakref

    class Big:
        pass

    loop = asyncio.get_running_loop()
    first, moved_on = loop.create_future(), asyncio.Event()
    refs: list = []

    async def holds() -> None:
        value = Big()
        refs.append(weakref.ref(value))
        await first  # the innermost frame: the dump reads its locals (what it may wait on)
        value = None  # the coroutine drops it and goes on waiting
        moved_on.set()
        await loop.create_future()

    task = asyncio.create_task(holds())
    await asyncio.sleep(0)
    format_dump()  # reads the frame's locals while it holds the value
    first.set_result(None)
    await moved_on.wait()
    assert refs[0]() is None, "the dump's snapshot of the frame's locals kept the value alive"
    task.cancel()
