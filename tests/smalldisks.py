"""Small real filesystems for tests of a store that fills up: a tmpfs of a few MiB mounted on
each disk directory (needs root and mount; the test is skipped where that is not allowed)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _unmount(mounted: list[Path]) -> None:
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@contextlib.contextmanager
def small_disks(paths: list[Path], size_mib: int | list[int]) -> Iterator[list[Path]]:
    """Mount a ``size_mib`` MiB tmpfs (one size, or one per path) on each of ``paths``
    (created), unmounted on exit."""
    sizes = size_mib if isinstance(size_mib, list) else [size_mib] * len(paths)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []
    try:
        for disk, size in zip(paths, sizes):
            disk.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(disk)],
                                  capture_output=True)
            if done.returncode != 0:
                pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode(errors='replace').strip()}")
            mounted.append(disk)
        yield mounted
    finally:
        _unmount(mounted)


def put_once_freed(s3, bucket: str, key: str, body: bytes, *, wait: float = 10.0) -> None:
    """PUT, retried for ``wait`` seconds while it is refused for space (``507 StorageFull``): a
    deletion's data goes just after its answer, so the space is free a moment later."""
    import time

    from botocore.exceptions import ClientError

    deadline = time.monotonic() + wait
    while True:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            return
        except ClientError as refused:
            code = (refused.response["Error"]["Code"], refused.response["ResponseMetadata"]["HTTPStatusCode"])
            if code != ("StorageFull", 507) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
