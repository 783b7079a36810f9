"""SyncStore: the embedded engine for code that is not async."""

from __future__ import annotations

import threading

import pytest

from buckets import SyncStore, errors
from buckets.engine.types import PutOptions


def test_sync_store_round_trip(tmp_disks) -> None:
    disks = tmp_disks(4)
    store = SyncStore.open(disks, sync=False, partitions=32, block_size=16384, inline_threshold=4096)
    try:
        assert store.layout == (2, 2) and store.disk_count == 4
        store.make_bucket("sync")
        info = store.put_object("sync", "small", b"hello")
        assert info.size == 5
        big = bytes(range(256)) * 400  # 100 KiB: several blocks

        def pieces():
            for off in range(0, len(big), 7000):
                yield big[off:off + 7000]

        info = store.put_object("sync", "dir/big", pieces(), len(big), PutOptions(user_meta={"a": "b"}))
        assert info.size == len(big)
        it = store.get_object("sync", "dir/big")
        assert not isinstance(it, (bytes, bytearray)) and iter(it) is it  # an iterator of chunks
        assert b"".join(it) == big
        assert b"".join(store.get_object("sync", "small")) == b"hello"
        assert b"".join(store.get_object("sync", "dir/big", range=(10, 19))) == big[10:20]
        assert store.head_object("sync", "dir/big").user_meta == {"a": "b"}
        listing = store.list_objects("sync", prefix="", delimiter="/")
        assert [o.key for o in listing.objects] == ["small"] and listing.prefixes == ["dir/"]
        assert [b.name for b in store.list_buckets()] == ["sync"]
        with pytest.raises(errors.NoSuchKey):
            store.head_object("sync", "absent")
        with pytest.raises(errors.NoSuchKey):
            b"".join(store.get_object("sync", "absent"))
        assert store.delete_object("sync", "small").deleted is True
    finally:
        store.close()
    # closed cleanly: the loop thread is gone and the data is durable for the next open
    assert not any(t.name == "buckets-store" and t.is_alive() for t in threading.enumerate())
    with SyncStore.open(disks, sync=False) as again:
        assert b"".join(again.get_object("sync", "dir/big")) == big
        assert [o.key for o in again.list_objects("sync").objects] == ["dir/big"]
