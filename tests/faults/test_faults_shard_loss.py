"""Shard files deleted at random, up to m per object, through a real server.

All objects read back byte for byte with the files gone; after a heal pass every shard
(shard files and metadata files) is back, verifies, and equals what was there before.
"""

from __future__ import annotations

import random

import pytest
from fault_campaign import EDGE_SIZES, run_campaign
from fault_disks import delete_data_dir, delete_meta, delete_part
from fault_load import KiB, MiB

DELETES = [delete_part, delete_part, delete_meta, delete_data_dir]


def test_deleted_shards_read_back_and_are_rebuilt(servers, tally) -> None:
    """Fast: one object per edge size, every one of them missing 1..m shards."""
    run_campaign(servers, tally, sizes=EDGE_SIZES * 2, kinds=DELETES, share=1.0, max_slots=2, seed=303)


@pytest.mark.faults
def test_shard_loss_campaign(servers, tally) -> None:
    """Many objects plus multipart ones; every object loses 1..m of its shards."""
    rnd = random.Random(11)
    sizes = EDGE_SIZES + [rnd.choice([rnd.randrange(1, 128 * KiB), rnd.randrange(128 * KiB, 3 * MiB)])
                          for _ in range(110)]
    run_campaign(servers, tally, sizes=sizes, multipart_sizes=[10 * MiB + 17], kinds=DELETES,
                 share=1.0, max_slots=2, seed=404)
