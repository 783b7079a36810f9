"""Flipped bytes in random pieces of random objects, through a real server.

Every flip is detected (by the read that meets it, or by the deep heal pass for parity
and metadata the read never touches) and repaired (the shard file rebuilt byte for
byte); no read ever returns wrong bytes.
"""

from __future__ import annotations

import functools

import pytest
from fault_campaign import EDGE_SIZES, run_campaign
from fault_disks import flip_meta, flip_piece
from fault_load import KiB, MiB

FLIPS = [flip_piece, flip_piece, flip_piece, functools.partial(flip_piece, checksum=True), flip_meta]


def test_flipped_pieces_are_detected_and_repaired(servers, tally) -> None:
    """Fast: one object per edge size, two thirds of them damaged on 1..2 slots."""
    run_campaign(servers, tally, sizes=EDGE_SIZES * 2, kinds=FLIPS, share=0.67, max_slots=2, seed=101)


@pytest.mark.faults
def test_bitrot_campaign(servers, tally) -> None:
    """Many objects of random sizes plus multipart ones; most damaged, up to m slots each."""
    import random

    rnd = random.Random(7)
    sizes = EDGE_SIZES + [rnd.choice([rnd.randrange(1, 128 * KiB), rnd.randrange(128 * KiB, 3 * MiB)])
                          for _ in range(110)]
    run_campaign(servers, tally, sizes=sizes, multipart_sizes=[11 * MiB + 3, 5 * MiB + 1], kinds=FLIPS,
                 share=0.8, max_slots=2, seed=202)
