"""Engine fixtures: a 4-disk (2+2) store with small blocks, opened without fsync for speed."""

from __future__ import annotations

import pytest
from engine_testkit import BLOCK, INLINE

from buckets import Store


@pytest.fixture
def disk_paths(tmp_disks) -> list[str]:
    return tmp_disks(4)


@pytest.fixture
async def store(disk_paths):
    s = await Store.open(disk_paths, sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64)
    yield s
    await s.close()


@pytest.fixture
async def bucket(store) -> str:
    await store.make_bucket("bkt")
    return "bkt"
