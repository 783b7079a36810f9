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
