"""The offline half of a fault test: open the stopped server's disks in-process and judge them.

``heal_pass`` is the explicit full heal: every object of the registry gets a deep
``heal_object`` (what the scanner's cycle does, but with the per-object result kept so
each injected fault can be matched to the slot the engine found bad), then one
``scanner.run_cycle(deep=True, paced=False)`` that must find nothing left. ``verify``
then re-checks every shard of every object (deep) and reads every object back through
the engine, comparing with what the test expects. The server must be stopped first: the
registry is one LMDB environment and the test should be its only user.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from buckets import Store
from buckets.engine.heal import heal_object
from buckets.errors import BucketsError


@dataclass
class HealPassReport:
    objects: int = 0
    bad: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # only objects with bad slots
    repaired: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    failed: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    cycle_bad_after: int = 0  # shards the scanner cycle still found bad after the pass
    stats: dict = field(default_factory=dict)

    @property
    def shards_bad(self) -> int:
        return sum(len(v) for v in self.bad.values())

    @property
    def shards_repaired(self) -> int:
        return sum(len(v) for v in self.repaired.values())


@dataclass
class VerifyReport:
    objects: int = 0
    still_bad: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    digests: dict[tuple[str, str], str] = field(default_factory=dict)  # sha256 of each object read back
    read_errors: dict[tuple[str, str], str] = field(default_factory=dict)
    staging_after_open: list[str] = field(default_factory=list)


async def _open(disk_paths: list[str]) -> Store:
    return await Store.open(disk_paths, background=False, sync=False)


async def _heal_pass(disk_paths: list[str]) -> HealPassReport:
    store = await _open(disk_paths)
    report = HealPassReport()
    try:
        for bucket, key, _entry in list(store.registry.walk_objects()):
            report.objects += 1
            res = await heal_object(store, bucket, key, deep=True)
            if res.bad:
                report.bad[(bucket, key)] = list(res.bad)
            if res.repaired:
                report.repaired[(bucket, key)] = list(res.repaired)
            if res.failed:
                report.failed[(bucket, key)] = list(res.failed)
        before = store.heal_stats.shards_bad
        await store.scanner.run_cycle(deep=True, paced=False)
        report.cycle_bad_after = store.heal_stats.shards_bad - before
        s = store.heal_stats
        report.stats = {"objects_checked": s.objects_checked, "shards_bad": s.shards_bad,
                        "shards_repaired": s.shards_repaired, "shards_failed": s.shards_failed,
                        "objects_unrecoverable": s.objects_unrecoverable}
    finally:
        await store.close()
    return report


async def _verify(disk_paths: list[str], staging: Callable[[], list[str]] | None) -> VerifyReport:
    store = await _open(disk_paths)
    report = VerifyReport()
    try:
        if staging is not None:
            report.staging_after_open = staging()
        for bucket, key, _entry in list(store.registry.walk_objects()):
            report.objects += 1
            res = await heal_object(store, bucket, key, deep=True)
            if res.bad:
                report.still_bad[(bucket, key)] = list(res.bad)
            try:
                h = hashlib.sha256()
                async for chunk in await store.get_object(bucket, key):
                    h.update(chunk)
                report.digests[(bucket, key)] = h.hexdigest()
            except BucketsError as exc:
                report.read_errors[(bucket, key)] = f"{type(exc).__name__}: {exc}"
    finally:
        await store.close()
    return report


def heal_pass(disk_paths: list[str]) -> HealPassReport:
    """Deep-check and repair every object of a stopped deployment (see module docstring)."""
    return asyncio.run(_heal_pass(disk_paths))


def verify(disk_paths: list[str], staging: Callable[[], list[str]] | None = None) -> VerifyReport:
    """Deep-check every object (repairing nothing is expected) and read each one back.

    ``staging``, if given, is called right after the store opened, to see what start-up
    left in the staging areas.
    """
    return asyncio.run(_verify(disk_paths, staging))


async def _sweep(disk_paths: list[str]) -> dict:
    store = await _open(disk_paths)
    try:
        return await store.scanner.sweep(grace=0)
    finally:
        await store.close()


def sweep_orphans(disk_paths: list[str]) -> dict:
    """The scanner's orphan sweep with no grace period (nothing is in flight offline)."""
    return asyncio.run(_sweep(disk_paths))
