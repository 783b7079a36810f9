"""The ``Disk`` protocol: everything the engine may do to one disk.

Paths are always relative to the disk root and built by the engine from its own
generated names (hashes, uuids, validated bucket names); implementations still refuse
anything that would escape the root.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class DiskInfo:
    disk_id: str
    endpoint: str
    online: bool
    total: int = 0
    free: int = 0
    used: int = 0
    error: str = ""
    healing: bool = False


class ShardWriter(Protocol):
    """A file being written in the staging area."""

    async def write(self, data: bytes) -> None: ...
    async def close(self, sync: bool) -> None: ...
    async def abort(self) -> None: ...


class Disk(Protocol):
    disk_id: str
    endpoint: str
    online: bool

    async def info(self) -> DiskInfo: ...
    async def create_file(self, path: str) -> ShardWriter: ...
    async def write_file(self, path: str, data: bytes, *, sync: bool) -> None:
        """Write a whole small file atomically (temp file, fsync, rename, fsync dir)."""
    async def read_file(self, path: str, *, max_size: int = ...) -> bytes: ...
    async def read_range(self, path: str, offset: int, length: int) -> bytes: ...
    async def rename(self, src: str, dst: str, *, sync: bool) -> None:
        """Rename a file or directory, creating dst's parents; fsync the directories touched."""
    async def move_all(self, moves: list[tuple[str, str]], last: tuple[str, str] | None, *,
                       sync: bool) -> None:
        """Rename each (src, dst), fsync the directories, then rename ``last`` (the metadata)."""
    async def fsync_dir(self, path: str) -> None: ...
    async def delete(self, path: str, *, recursive: bool = False, prune: int = 0) -> None: ...
    async def list_dir(self, path: str) -> list[str]: ...
    async def exists(self, path: str) -> bool: ...
    async def file_size(self, path: str) -> int: ...
    def walk_files(self, path: str, suffix: str) -> AsyncIterator[str]: ...
