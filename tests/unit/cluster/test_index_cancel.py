"""A quorum call cancelled midway (its request or the scanner stopped) leaves no orphaned calls:
the replica calls still running finish in the background and their failures are consumed,
not logged as "Task exception was never retrieved" (seen in the cluster fault suite as
tracebacks in the logs of nodes whose peers had died)."""

from __future__ import annotations

import asyncio
import gc

from buckets import errors
from buckets.cluster.index import IndexReplica, ReplicatedIndex
from buckets.registry import Op, Registry


async def test_cancelled_read_leaves_no_unretrieved_failures(tmp_path) -> None:
    reg = Registry(str(tmp_path / "n1"), cache_size=10, sync=False)
    reg.start()
    await reg.commit([Op("put_bucket", "b", value={"created": 1.0})])
    release = asyncio.Event()
    called = asyncio.Event()

    async def transport(node: str, method: str, args: dict):
        called.set()
        await release.wait()
        raise errors.ServiceUnavailable(f"{node} went away")

    idx = ReplicatedIndex("n1", IndexReplica(reg), transport, lambda bucket: ["n1", "n2", "n3"])
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        read = asyncio.ensure_future(idx.get("b", "k"))
        await asyncio.wait_for(called.wait(), 5)
        read.cancel()
        try:
            await read
        except asyncio.CancelledError:
            pass
        release.set()  # the orphaned call to n2 now fails
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
        assert [c.get("message") for c in reported] == []
        assert idx._background == set()  # the call was kept until it ended, then forgotten
    finally:
        loop.set_exception_handler(previous)
        await idx.close()
        await reg.close()


async def test_a_cancel_landing_as_a_replica_call_finishes_is_raised(tmp_path) -> None:
    """A cancel of the caller that arrives in the same step as its replica call's answer is
    raised, not swallowed: with Python 3.11's ``asyncio.wait_for`` around each call the answer
    was returned instead, and the cancelled caller went on as if nothing had happened."""
    reg = Registry(str(tmp_path / "n1"), cache_size=10, sync=False)
    reg.start()
    caller: list[asyncio.Task] = []

    async def transport(node: str, method: str, args: dict):
        await asyncio.sleep(0)
        caller[0].cancel()  # the caller is cancelled as this call answers
        return {"answered": node}

    idx = ReplicatedIndex("n1", IndexReplica(reg), transport, lambda bucket: ["n1", "n2", "n3"])
    went_on = asyncio.Event()

    async def call() -> None:
        await idx._call("n2", "get", {}, timeout=5)
        await asyncio.sleep(0)  # the caller's next suspension: its cancel is raised here at the latest
        went_on.set()

    try:
        caller.append(asyncio.ensure_future(call()))
        try:
            await caller[0]
        except asyncio.CancelledError:
            pass
        assert caller[0].cancelled()
        assert not went_on.is_set()
    finally:
        await idx.close()
        await reg.close()
