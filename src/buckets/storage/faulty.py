"""``FaultyDisk``: a Disk that wraps another one and misbehaves on command, for tests.

MinIO's "naughty disk" (``cmd/naughty-disk_test.go``) is the model: it passes every call
through to the real disk until told otherwise, so the conformance suite runs over it
unchanged, and engine tests put it under a ``Store`` to see what the engine makes of a
disk that fails, stalls or tears its writes. The faults, each on any set of methods
(``"*"`` for all), after letting ``after`` calls through and for ``times`` calls (None:
until ``clear``):

- ``fail(...)``: raise a typed ``DiskError`` (an instance is copied, a class is
  instantiated); a ``DiskOffline`` one marks the disk offline, as a real one would;
- ``delay(...)``: sleep before the call (a slow disk, or a slow peer);
- ``tear(...)``: torn writes. ``write_file`` and the metadata of ``rename_data`` store only
  the first ``keep`` bytes (at most all but one); a ``create_file`` writer stores only
  its first ``keep`` bytes; ``append_records`` stores each record's payload cut the same
  way (a record whose frame checks but whose content does not: only the engine's decoding
  of the payload catches it). Then the call raises ``error``, or, with ``silent``, reports
  success: a disk that lies, which only checksums can catch.

Method names are the protocol's, plus ``shard.write`` and ``shard.close`` for the calls of
a ``ShardWriter``. ``calls`` counts every call by name.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from buckets.errors import DiskError, DiskFaulty, DiskOffline
from buckets.storage.disk import Disk, DiskInfo, FileStat, MAX_SMALL_FILE, ShardWriter

METHODS = frozenset({
    "info", "read_format", "write_format", "create_file", "write_file", "read_file", "read_range",
    "rename_data", "fsync_dir", "delete", "list_dir", "exists", "file_size", "stat", "walk_files",
    "walk_entries", "shard.write", "shard.close",
    "append_records", "read_record", "walk_records", "list_segments", "delete_segment",
})
TEARABLE = frozenset({"write_file", "create_file", "rename_data", "append_records"})


@dataclass(slots=True)
class _Rule:
    kind: str  # "fail", "delay" or "tear"
    methods: frozenset[str]
    after: int
    times: int | None
    error: DiskError | type[DiskError] | None = None
    seconds: float = 0.0
    keep: int = 0
    silent: bool = False

    def matches(self, name: str) -> bool:
        return "*" in self.methods or name in self.methods


def _methods(names: Iterable[str], allowed: frozenset[str]) -> frozenset[str]:
    chosen = frozenset(names) or frozenset({"*"})
    unknown = chosen - allowed - {"*"}
    if unknown:
        raise ValueError(f"no such disk method: {', '.join(sorted(unknown))}")
    return chosen


class FaultyDisk:
    """A pass-through ``Disk`` over ``inner`` with programmable faults (see the module doc)."""

    def __init__(self, inner: Disk) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self._rules: list[_Rule] = []

    def __repr__(self) -> str:
        return f"FaultyDisk({self.inner!r})"

    # -- commands ---------------------------------------------------------------------------
    def fail(self, *methods: str, error: DiskError | type[DiskError] = DiskFaulty, after: int = 0,
             times: int | None = None) -> None:
        self._rules.append(_Rule("fail", _methods(methods, METHODS), after, times, error=error))

    def delay(self, *methods: str, seconds: float, after: int = 0, times: int | None = None) -> None:
        self._rules.append(_Rule("delay", _methods(methods, METHODS), after, times, seconds=seconds))

    def tear(self, *methods: str, keep: int = 0, silent: bool = False,
             error: DiskError | type[DiskError] = DiskError, after: int = 0, times: int | None = None) -> None:
        chosen = _methods(methods, TEARABLE) if methods else TEARABLE
        self._rules.append(_Rule("tear", chosen, after, times, error=error, keep=keep, silent=silent))

    def clear(self) -> None:
        """Behave again (the disk's own state, e.g. offline, is left to the engine)."""
        self._rules.clear()

    # -- fault machinery ------------------------------------------------------------------------
    def _due(self, kind: str, name: str, *, first: bool = False) -> list[_Rule]:
        """The rules of ``kind`` that apply to this call (each counts the call once); with
        ``first``, only the first of them (later ones do not see the call)."""
        due = []
        for rule in list(self._rules):
            if rule.kind != kind or not rule.matches(name):
                continue
            if rule.after > 0:
                rule.after -= 1
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self._rules.remove(rule)
            due.append(rule)
            if first:
                break
        return due

    def _take(self, kind: str, name: str) -> _Rule | None:
        due = self._due(kind, name, first=True)
        return due[0] if due else None

    def _error(self, rule: _Rule, name: str, what: str = "injected fault") -> DiskError:
        proto = rule.error if rule.error is not None else DiskFaulty
        cls = proto if isinstance(proto, type) else type(proto)
        text = str(proto) if isinstance(proto, DiskError) and str(proto) else f"{what} in {name}"
        err = cls(f"{self.endpoint}: {text}")
        if isinstance(err, DiskOffline):
            self.inner.mark_offline(str(err))
        return err

    async def _before(self, name: str) -> None:
        self.calls[name] += 1
        for rule in self._due("delay", name):
            await asyncio.sleep(rule.seconds)
        rule = self._take("fail", name)
        if rule is not None:
            raise self._error(rule, name)

    # -- state, delegated --------------------------------------------------------------------
    @property
    def disk_id(self) -> str:
        return self.inner.disk_id

    @disk_id.setter
    def disk_id(self, value: str) -> None:
        self.inner.disk_id = value

    @property
    def endpoint(self) -> str:
        return self.inner.endpoint

    @property
    def online(self) -> bool:
        return self.inner.online

    @online.setter
    def online(self, value: bool) -> None:
        self.inner.online = value

    @property
    def healing(self) -> bool:
        return self.inner.healing

    @healing.setter
    def healing(self, value: bool) -> None:
        self.inner.healing = value

    @property
    def last_error(self) -> str:
        return self.inner.last_error

    @last_error.setter
    def last_error(self, value: str) -> None:
        self.inner.last_error = value

    def mark_offline(self, reason: str) -> None:
        self.inner.mark_offline(reason)

    def mark_online(self) -> None:
        self.inner.mark_online()

    def local_path(self, rel: str) -> str | None:
        return self.inner.local_path(rel)

    async def close(self) -> None:
        await self.inner.close()

    # -- the protocol ------------------------------------------------------------------------
    async def upkeep(self) -> None:
        await self.inner.upkeep()

    async def info(self) -> DiskInfo:
        try:
            await self._before("info")
        except DiskError as exc:
            return DiskInfo(self.disk_id, self.endpoint, False, error=str(exc), healing=self.healing)
        return await self.inner.info()

    async def read_format(self) -> bytes:
        await self._before("read_format")
        return await self.inner.read_format()

    async def write_format(self, data: bytes, *, create_root: bool, sync: bool) -> None:
        await self._before("write_format")
        await self.inner.write_format(data, create_root=create_root, sync=sync)

    async def create_file(self, path: str) -> ShardWriter:
        await self._before("create_file")
        torn = self._take("tear", "create_file")
        return _FaultyShardWriter(self, await self.inner.create_file(path), path, torn)

    async def write_file(self, path: str, data: bytes, *, sync: bool, new_data: bool = False) -> None:
        await self._before("write_file")
        torn = self._take("tear", "write_file")
        if torn is None:
            return await self.inner.write_file(path, data, sync=sync, new_data=new_data)
        await self.inner.write_file(path, data[:min(torn.keep, max(len(data) - 1, 0))], sync=sync, new_data=new_data)
        if not torn.silent:
            raise self._error(torn, "write_file", "torn write")

    async def read_file(self, path: str, *, max_size: int = MAX_SMALL_FILE) -> bytes:
        await self._before("read_file")
        return await self.inner.read_file(path, max_size=max_size)

    async def read_range(self, path: str, offset: int, length: int) -> bytes:
        await self._before("read_range")
        return await self.inner.read_range(path, offset, length)

    async def rename_data(self, moves: list[tuple[str, str]], meta: tuple[str, bytes] | None, *,
                          sync: bool, cleanup: str | None = None) -> None:
        await self._before("rename_data")
        torn = self._take("tear", "rename_data") if meta is not None else None
        if torn is None:
            return await self.inner.rename_data(moves, meta, sync=sync, cleanup=cleanup)
        path, data = meta
        cut = data[:min(torn.keep, max(len(data) - 1, 0))]
        await self.inner.rename_data(moves, (path, cut), sync=sync, cleanup=cleanup)
        if not torn.silent:
            raise self._error(torn, "rename_data", "torn write")

    async def fsync_dir(self, path: str) -> None:
        await self._before("fsync_dir")
        await self.inner.fsync_dir(path)

    async def delete(self, path: str, *, recursive: bool = False, prune: int = 0) -> None:
        await self._before("delete")
        await self.inner.delete(path, recursive=recursive, prune=prune)

    async def list_dir(self, path: str) -> list[str]:
        await self._before("list_dir")
        return await self.inner.list_dir(path)

    async def exists(self, path: str) -> bool:
        await self._before("exists")
        return await self.inner.exists(path)

    async def file_size(self, path: str) -> int:
        await self._before("file_size")
        return await self.inner.file_size(path)

    async def stat(self, path: str) -> FileStat:
        await self._before("stat")
        return await self.inner.stat(path)

    async def walk_files(self, path: str, suffix: str) -> AsyncIterator[str]:
        await self._before("walk_files")
        async for rel in self.inner.walk_files(path, suffix):
            yield rel

    async def walk_entries(self, path: str, depth: int) -> AsyncIterator[FileStat]:
        await self._before("walk_entries")
        async for entry in self.inner.walk_entries(path, depth):
            yield entry

    # -- the record log ------------------------------------------------------------------------
    async def append_records(self, records: list[bytes], *, sync: bool, data: bool = False) -> list[list[int]]:
        await self._before("append_records")
        torn = self._take("tear", "append_records")
        if torn is None:
            return await self.inner.append_records(records, sync=sync, data=data)
        cut = [r[:min(torn.keep, max(len(r) - 1, 0))] for r in records]
        locs = await self.inner.append_records(cut, sync=sync, data=data)
        if not torn.silent:
            raise self._error(torn, "append_records", "torn write")
        return locs

    async def read_record(self, location: list[int]) -> bytes:
        await self._before("read_record")
        return await self.inner.read_record(location)

    async def walk_records(self, segment: int | None = None) -> AsyncIterator[tuple[list[int], bytes]]:
        await self._before("walk_records")
        async for item in self.inner.walk_records(segment):
            yield item

    async def list_segments(self) -> list[list[int]]:
        await self._before("list_segments")
        return await self.inner.list_segments()

    async def release_records(self, wid: str, locations: list[list[int]]) -> int:
        await self._before("release_records")
        return await self.inner.release_records(wid, locations)

    async def delete_segment(self, segment: int) -> None:
        await self._before("delete_segment")
        await self.inner.delete_segment(segment)


class _FaultyShardWriter:
    def __init__(self, disk: FaultyDisk, inner: ShardWriter, path: str, torn: _Rule | None) -> None:
        self._disk, self._inner, self._path, self._torn = disk, inner, path, torn
        self._stored = 0
        self._cut = False

    async def write(self, data: "bytes | tuple[bytes | memoryview, ...]") -> None:
        await self._disk._before("shard.write")
        if isinstance(data, tuple):
            data = b"".join(data)
        if self._torn is not None:
            room = max(0, self._torn.keep - self._stored)
            if len(data) > room:
                self._cut = True
                data = data[:room]
        self._stored += len(data)
        if data:
            await self._inner.write(data)

    async def close(self, sync: bool) -> None:
        await self._disk._before("shard.close")
        await self._inner.close(sync)
        if self._cut and self._torn is not None and not self._torn.silent:
            raise self._disk._error(self._torn, "shard.close", f"torn write of {self._path}")

    async def abort(self) -> None:
        await self._inner.abort()
