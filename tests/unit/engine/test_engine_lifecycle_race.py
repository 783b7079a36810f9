"""The lifecycle worker against a real store: an expiry removes only the version it judged."""

from __future__ import annotations

import pytest
from engine_testkit import get_bytes

from buckets import errors
from buckets.lifecycle.worker import LifecycleSettings, LifecycleWorker

DAY = 10.0  # seconds in a lifecycle "day" here


def expire_after_one_day() -> list[dict]:
    return [{"id": "one-day", "status": "Enabled", "filter": {}, "expiration": {"days": 1}}]


@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
async def test_a_put_that_lands_while_the_expiry_runs_is_not_what_expires(store, bucket, versioned) -> None:
    """The worker judged the old version from its listing; a PUT lands before its delete
    commits (here: just before the delete call, the last moment a look from outside the engine
    could have had). The new object stays; the next cycle judges it on its own age."""
    if versioned:
        await store.set_versioning(bucket, "Enabled")
    await store.update_bucket(bucket, set={"lifecycle": expire_after_one_day()})
    old = await store.put_object(bucket, "k", b"old", 3)
    clock = [old.last_modified + 5 * DAY]  # long past its expiry
    worker = LifecycleWorker(store, LifecycleSettings(day=DAY, objects_per_sec=1e9), clock=lambda: clock[0])
    real_delete = store.delete_object
    landed = []

    async def a_put_lands_first(*args, **kwargs):
        if not landed:
            landed.append(await store.put_object(bucket, "k", b"new", 3))
        return await real_delete(*args, **kwargs)

    store.delete_object = a_put_lands_first
    await worker.run_cycle()
    store.delete_object = real_delete
    assert landed and await get_bytes(store, bucket, "k") == b"new"
    assert worker.stats.expired == 0
    # Once the new object is old enough itself, it expires like any.
    clock[0] = landed[0].last_modified + 5 * DAY
    await worker.run_cycle()
    assert worker.stats.expired == 1
    with pytest.raises(errors.NoSuchKey):
        await store.head_object(bucket, "k")
