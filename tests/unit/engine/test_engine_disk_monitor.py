"""The disk monitor's probe (``Scanner.check_disks``): what it does with a disk whose
format file is gone, foreign, or another disk's, while the node runs."""

from __future__ import annotations

import json
import os
import shutil

from engine_testkit import BLOCK, INLINE, content, eventually, get_bytes

from buckets import Store
from buckets.engine.heal import heal_object
from buckets.storage.format import FORMAT_FILE

OPTS = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64, background=False)


async def test_a_foreign_directory_mounted_at_runtime_is_left_alone(tmp_disks) -> None:
    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    try:
        await store.make_bucket("bkt")
        data = content("x", 2 * BLOCK)
        await store.put_object("bkt", "x", data, len(data))
        shutil.rmtree(disks[1])
        os.makedirs(disks[1])
        with open(os.path.join(disks[1], "family-photos.jpg"), "wb") as f:
            f.write(b"precious")
        await store.scanner.check_disks()
        assert not store.disks[1].online and "foreign" in store.disks[1].last_error
        assert os.listdir(disks[1]) == ["family-photos.jpg"]  # never formatted over
        assert await get_bytes(store, "bkt", "x") == data
    finally:
        await store.close()


async def test_another_disk_mounted_in_a_slot_is_refused_until_the_right_one_returns(tmp_disks) -> None:
    ours, theirs = tmp_disks(4), tmp_disks(4)
    other = await Store.open(theirs, **OPTS)
    await other.close()
    store = await Store.open(ours, **OPTS)
    try:
        await store.make_bucket("bkt")
        before = content("before", 3 * BLOCK + 1)
        await store.put_object("bkt", "before", before, len(before))
        saved = ours[2] + ".saved"
        os.rename(ours[2], saved)
        shutil.copytree(theirs[2], ours[2])  # a disk of another deployment, mounted in slot 2
        their_format = open(os.path.join(ours[2], FORMAT_FILE), "rb").read()
        await store.scanner.check_disks()
        assert not store.disks[2].online
        assert json.loads(their_format)["deployment_id"] in store.disks[2].last_error
        during = content("during", 2 * BLOCK)
        await store.put_object("bkt", "during", during, len(during))  # 3 of 4: still the quorum
        assert open(os.path.join(ours[2], FORMAT_FILE), "rb").read() == their_format  # untouched
        shutil.rmtree(ours[2])
        os.rename(saved, ours[2])  # the right disk is back
        await store.scanner.check_disks()
        assert store.disks[2].online
        await eventually(lambda: not store.disks[2].healing, timeout=30)
        # the refill wrote what the disk missed: nothing is left to heal
        assert (await heal_object(store, "bkt", "during", deep=True)).bad == []
        assert await get_bytes(store, "bkt", "before") == before
        assert await get_bytes(store, "bkt", "during") == during
    finally:
        await store.close()
