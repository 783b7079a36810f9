"""The power-loss model itself (``buckets/storage/powerloss.py``): each rule of the
filesystem model on real recorded operations, the registry's sync settings, and the
engine's commit order as the model sees it.

Operations go through the same seam ``LocalDisk`` uses (the shims installed in
``buckets.storage.local``), so what is tested is what the campaigns rely on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from crash_harness import BUCKET, DISKS, body, record
from crash_scenarios import LARGE, SCENARIOS

from buckets import Store
from buckets.engine import paths
from buckets.errors import CorruptData
from buckets.registry import Op, Registry
from buckets.storage import local
from buckets.storage.local import LocalDisk
from buckets.storage.powerloss import BLOCK, CrashModel, ModelError, PowerLossDisk, PowerLossRecorder


def outcomes(rec: PowerLossRecorder, tmp: Path, cut: int | None = None) -> set[tuple]:
    """Every state the root can come back in, as a sorted tuple of (path, size or "dir")."""
    model = CrashModel(rec)
    cut = len(model.events) if cut is None else cut
    seen = set()
    for n, state in enumerate(model.states(cut, limit=1000, combos=1000)):
        dest = tmp / f"s{n}"
        model.materialize(state, [str(dest / f"d{i}") for i in range(len(state.roots))])
        items = []
        for dirpath, dirs, files in os.walk(dest / "d0"):
            for d in dirs:
                items.append((os.path.relpath(os.path.join(dirpath, d), dest / "d0"), "dir"))
            for f in files:
                full = os.path.join(dirpath, f)
                items.append((os.path.relpath(full, dest / "d0"), os.path.getsize(full)))
        seen.add(tuple(sorted(items)))
    return seen


def write(path: Path, data: bytes, *, fsync: bool = False) -> None:
    with local.open(str(path), "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            local.os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = local.os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        local.os.fsync(fd)
    finally:
        local.os.close(fd)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def recorder(root: Path) -> PowerLossRecorder:
    rec = PowerLossRecorder()
    rec.sync_delay = 0.0
    rec.add_root(str(root))
    return rec


def test_unsynced_data_may_be_lost_or_cut_at_any_block(root, tmp_path) -> None:
    size = 3 * BLOCK + 100
    with recorder(root) as rec:
        rec.checkpoint()
        write(root / "f", body("f", size))
    assert outcomes(rec, tmp_path / "o") == {(), *((("f", n),) for n in (0, BLOCK, 2 * BLOCK, 3 * BLOCK, size))}


def test_a_file_fsync_keeps_its_data_but_not_its_name(root, tmp_path) -> None:
    with recorder(root) as rec:
        rec.checkpoint()
        write(root / "f", body("f", 5000), fsync=True)
    assert outcomes(rec, tmp_path / "o") == {(), (("f", 5000),)}


def test_a_directory_fsync_keeps_its_entries(root, tmp_path) -> None:
    with recorder(root) as rec:
        rec.checkpoint()
        write(root / "f", body("f", 5000), fsync=True)
        fsync_dir(root)
    assert outcomes(rec, tmp_path / "o") == {(("f", 5000),)}


def test_a_directory_fsync_says_nothing_of_the_directory_itself(root, tmp_path) -> None:
    with recorder(root) as rec:
        rec.checkpoint()
        local.os.mkdir(str(root / "d"))
        write(root / "d" / "f", body("f", 100), fsync=True)
        fsync_dir(root / "d")  # d's entries are durable, d's own entry in the root is not
    assert outcomes(rec, tmp_path / "o") == {(), (("d", "dir"), ("d/f", 100))}


def test_a_rename_is_atomic(root, tmp_path) -> None:
    (root / "a").mkdir()
    (root / "b").mkdir()
    (root / "a" / "x").write_bytes(b"x" * 10)
    with recorder(root) as rec:
        rec.checkpoint()
        local.os.replace(str(root / "a" / "x"), str(root / "b" / "x"))
    assert outcomes(rec, tmp_path / "o") == {(("a", "dir"), ("a/x", 10), ("b", "dir")),
                                            (("a", "dir"), ("b", "dir"), ("b/x", 10))}


def test_a_replacement_renamed_before_its_data_is_durable_can_tear(root, tmp_path) -> None:
    """Rule 3: the rename may persist without the data (no reliance on auto_da_alloc)."""
    (root / "f").write_bytes(b"old")
    with recorder(root) as rec:
        rec.checkpoint()
        write(root / "t", b"new!")
        local.os.replace(str(root / "t"), str(root / "f"))
    assert outcomes(rec, tmp_path / "o") == {(("f", 3),), (("f", 0),), (("f", 4),),
                                            (("f", 3), ("t", 0)), (("f", 3), ("t", 4))}


def test_syncfs_makes_everything_before_it_durable(root, tmp_path) -> None:
    with recorder(root) as rec:
        rec.checkpoint()
        local.os.mkdir(str(root / "d"))
        write(root / "d" / "f", body("f", 3 * BLOCK))
        fd = local.os.open(str(root), os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert local._syncfs(fd) == 0
        finally:
            local.os.close(fd)
    assert outcomes(rec, tmp_path / "o") == {(("d", "dir"), ("d/f", 3 * BLOCK))}


def test_a_sync_covers_only_what_came_before_it_was_called(root, tmp_path) -> None:
    """A sync is recorded when it returns; what another thread did while it ran is not
    covered (here: the fsync of the root started between the two creations)."""
    with recorder(root) as rec:
        rec.checkpoint()
        write(root / "a", b"a", fsync=True)
        started = len(rec.events)
        write(root / "b", b"b", fsync=True)
        with rec._lock:
            rec._record_fsync(rec.roots[0], rec.roots[0].ino, started)
    assert outcomes(rec, tmp_path / "o") == {(("a", 1),), (("a", 1), ("b", 1))}


def test_a_change_the_model_did_not_see_is_refused(root) -> None:
    with recorder(root) as rec:
        rec.checkpoint()
        os.mkdir(root / "behind")  # not through the seam
        with pytest.raises(ModelError):
            write(root / "behind" / "f", b"x")


async def test_an_lmdb_commit_in_flight_may_go_either_way(root, tmp_path) -> None:
    (root / "reg").mkdir()
    with recorder(root) as rec:
        reg = Registry(str(root / "reg"), sync=True)
        reg.start()
        try:
            await reg.commit([Op("put_sys", "first", value=1)])
            rec.checkpoint([reg])
            await reg.commit([Op("put_sys", "second", value=2)])
        finally:
            await reg.close()
    model = CrashModel(rec)
    begin = next(i for i, ev in enumerate(model.events) if ev.kind == "lmdb_begin")
    commit = next(i for i, ev in enumerate(model.events) if ev.kind == "lmdb_commit")

    def second_values(cut: int) -> set:
        out = set()
        for n, state in enumerate(model.states(cut)):
            dest = tmp_path / f"c{cut}-{n}"
            model.materialize(state, [str(dest)])
            r = Registry(str(dest / "reg"), sync=False)
            try:
                assert r.get_sys("first") == 1
                out.add(r.get_sys("second"))
            finally:
                r.env.close()
        return out

    assert second_values(begin) == {None}
    assert second_values(commit) == {None, 2}  # in flight: old or new, never torn
    assert second_values(len(model.events)) == {2}


async def test_the_registry_syncs_what_the_engine_assumes(tmp_disks) -> None:
    """The engine answers after the registry commit returns: with ``sync`` on, LMDB must
    flush data and meta pages at every commit (sync, metasync) and not leave them to the
    OS (no map_async, no writemap); with ``sync`` off (documented as unsafe) it does not."""
    store = await Store.open(tmp_disks(4), sync=True, partitions=16)
    try:
        flags = store.registry.env.flags()
        assert (flags["sync"], flags["metasync"], flags["map_async"], flags["writemap"]) == (True, True, False, False)
    finally:
        await store.close()
    store = await Store.open(tmp_disks(4), sync=False, partitions=16)
    try:
        flags = store.registry.env.flags()
        assert (flags["sync"], flags["metasync"]) == (False, False)
    finally:
        await store.close()


async def test_a_new_registry_s_directory_entries_are_made_durable(root, tmp_path) -> None:
    """LMDB syncs its file, not its directory: the registry does that when it creates one."""
    (root / ".buckets.sys").mkdir()
    with recorder(root) as rec:
        rec.checkpoint()
        reg = Registry(str(root / ".buckets.sys" / "registry"), sync=True)
        reg.start()
        await reg.commit([Op("put_sys", "k", value=1)])
        await reg.close()
    names = {(ev.kind, ev.path) for ev in CrashModel(rec).events if ev.kind == "fsync"}
    assert names == {("fsync", ".buckets.sys/registry"), ("fsync", ".buckets.sys")}
    kept = outcomes(rec, tmp_path / "o", cut=len(rec.events))
    assert all(any(p == ".buckets.sys/registry/data.mdb" for p, _ in s) for s in kept)


async def test_the_registry_commit_follows_the_data_on_a_write_quorum(crash_dir) -> None:
    """The commit point, as the model sees it: at the moment the registry transaction of a
    streamed PUT begins, even if every unsynced change were lost, a write quorum of disks
    (3 of 4) already holds the new write's metadata and its whole shard."""
    run, model = await record(SCENARIOS["put-multiblock"], crash_dir / "rec")
    begin = next(i for i, ev in enumerate(model.events) if ev.kind == "lmdb_begin")
    lost_everything = next(model.states(begin))  # the "every unsynced change lost" extreme
    dest = [str(crash_dir / "state" / f"d{i}") for i in range(DISKS)]
    model.materialize(lost_everything, dest)
    holding = 0
    for d in dest:
        fan = Path(d) / paths.object_dir(BUCKET, "large")
        metas = list(fan.glob("*.meta")) if fan.is_dir() else []
        if len(metas) != 1:
            continue
        wid = metas[0].name.split(".")[1]
        shard = fan / f"{paths.key_hash('large')}.{wid}" / "part.1"
        if shard.is_file() and shard.stat().st_size > 0:
            holding += 1
    assert holding >= 3, f"only {holding} disks hold the write durably when its registry commit begins"
    assert LARGE > 2 * 16 * 1024  # several blocks


async def test_power_loss_disk_passes_calls_through(tmp_path) -> None:
    rec = PowerLossRecorder()
    with rec:
        disk = PowerLossDisk(str(tmp_path / "d"), rec)
        (tmp_path / "d").mkdir()
        rec.checkpoint()
        await disk.write_file("a/b", b"hello", sync=True)
        assert await disk.read_file("a/b") == b"hello"
        w = await disk.create_file(".buckets.sys/tmp/x/part.1")
        await w.write(b"data")
        await w.close(sync=True)
        await disk.rename_data([(".buckets.sys/tmp/x", "obj/x")], ("obj/x.meta", b"m"), sync=True)
        assert sorted(await disk.list_dir("obj")) == ["x", "x.meta"]
        assert disk.pending() == []  # a committed write: nothing a power cut could undo
        await disk.delete("obj/x.meta")
        assert [(e.kind, e.path) for e in disk.pending()] == [("unlink", "obj/x.meta")]
        await disk.close()
    await asyncio.sleep(0)


def contents(rec: PowerLossRecorder, tmp: Path, cut: int | None = None) -> set[bytes | None]:
    """What file ``f`` of the root holds in each state it can come back in (None: no file)."""
    model = CrashModel(rec)
    cut = len(model.events) if cut is None else cut
    out = set()
    for n, state in enumerate(model.states(cut, limit=1000, combos=1000)):
        dest = tmp / f"s{n}"
        model.materialize(state, [str(dest / "d0")])
        f = dest / "d0" / "f"
        out.add(f.read_bytes() if f.exists() else None)
    return out


def punch(path: Path, offset: int, length: int, *, fsync: bool = False) -> None:
    """A hole punched as ``LocalDisk.release_records`` punches it (``O_RDWR``, ``local._punch``)."""
    fd = local.os.open(str(path), os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            local._punch(fd, offset, length)
        except local._CannotPunch:
            pytest.skip("this file system does not punch holes")
        if fsync:
            local.os.fsync(fd)
    finally:
        local.os.close(fd)


def zeroed(data: bytes, *spans: tuple[int, int]) -> bytes:
    out = bytearray(data)
    for a, b in spans:
        b = min(b, len(out))
        out[a:b] = bytes(b - a)
    return bytes(out)


def test_a_punched_hole_is_durable_only_once_its_file_is_synced(root, tmp_path) -> None:
    """Rule 6, in a file from before the checkpoint: a punch shows as zeros in the states it
    happened in and the bytes it took (the baseline's: the real file's are zeros by then) in
    the others; the file's fsync makes every punch before it durable, and each punch after the
    last sync may or may not have happened, independently of the others."""
    if local._FALLOCATE is None:
        pytest.skip("no fallocate")
    data = body("f", 3 * BLOCK)
    (root / "f").write_bytes(data)
    a, b, c = (100, 300), (BLOCK, 2 * BLOCK), (2 * BLOCK + 10, 2 * BLOCK + 60)
    with recorder(root) as rec:
        rec.checkpoint()
        first = len(rec.events)
        punch(root / "f", a[0], a[1] - a[0])
        punch(root / "f", b[0], b[1] - b[0], fsync=True)
        synced = len(rec.events) - 1
        punch(root / "f", c[0], c[1] - c[0])
    assert (root / "f").read_bytes() == zeroed(data, a, b, c)  # the real file: every hole
    assert [e.kind for e in rec.events] == ["punch", "punch", "fsync", "punch"]
    assert contents(rec, tmp_path / "o1", cut=first) == {data}  # a punch after the cut never shows
    assert contents(rec, tmp_path / "o2", cut=synced) == {data, zeroed(data, a), zeroed(data, b), zeroed(data, a, b)}
    assert contents(rec, tmp_path / "o3") == {zeroed(data, a, b), zeroed(data, a, b, c)}


def test_a_hole_in_unsynced_data_is_cut_with_the_file(root, tmp_path) -> None:
    """A file written in the window: the punch zeros what the file holds of its range in each
    state (a hole past a state's length is no data), and ``syncfs`` makes it durable too."""
    if local._FALLOCATE is None:
        pytest.skip("no fallocate")
    data = body("f", 3 * BLOCK)
    with recorder(root) as rec:
        rec.checkpoint()
        with local.open(str(root / "f"), "wb") as f:
            f.write(data[:2 * BLOCK])
            f.flush()
            local.os.fsync(f.fileno())
            f.write(data[2 * BLOCK:])
        fsync_dir(root)
        hole = (BLOCK + 100, 2 * BLOCK + 100)  # across the durable end
        punch(root / "f", hole[0], hole[1] - hole[0])
        before_syncfs = len(rec.events)
        fd = local.os.open(str(root), os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert local._syncfs(fd) == 0
        finally:
            local.os.close(fd)
    assert contents(rec, tmp_path / "o1", cut=before_syncfs) == {
        data[:2 * BLOCK], data, zeroed(data[:2 * BLOCK], hole), zeroed(data, hole)}
    assert contents(rec, tmp_path / "o2") == {zeroed(data, hole)}


def test_writes_through_a_read_write_descriptor_are_refused(root) -> None:
    """``O_RDWR`` is followed for the holes it punches, nothing else."""
    (root / "f").write_bytes(b"x" * 100)
    with recorder(root) as rec:
        rec.checkpoint()
        fd = local.os.open(str(root / "f"), os.O_RDWR)
        try:
            with pytest.raises(ModelError):
                local.os.pwrite(fd, b"y", 0)
            with pytest.raises(ModelError):
                local.os.ftruncate(fd, 10)
        finally:
            local.os.close(fd)
        with pytest.raises(ModelError):
            local.os.open(str(root / "f"), os.O_RDWR | os.O_TRUNC)
    assert (root / "f").read_bytes() == b"x" * 100


async def test_released_records_are_punches_the_model_follows(tmp_path) -> None:
    """``PowerLossDisk.release_records`` releases for real, and what it punched is zeros only
    in the states where the punch happened: the record reads back whole in the others."""
    if local._FALLOCATE is None:
        pytest.skip("no fallocate")
    rec = PowerLossRecorder()
    rec.sync_delay = 0.0
    with rec:
        disk = PowerLossDisk(str(tmp_path / "d"), rec)
        (tmp_path / "d").mkdir()
        rec.checkpoint()
        payloads = [b"write " + wid.encode() + b" " + body(wid, 1500) for wid in ("w-dead", "w-live")]
        dead, live = await disk.append_records(payloads, sync=True)
        freed = await disk.release_records("w-dead", [dead])
        if not any(e.kind == "punch" for e in rec.events):
            pytest.skip("this file system does not punch holes")
        assert freed >= 0
        assert [(e.kind, e.offset, e.length) for e in disk.pending() if e.kind == "punch"] == [
            ("punch", dead[1], dead[2])]  # not durable: nothing synced the segment since
        with pytest.raises(CorruptData):
            await disk.read_record(dead)
        await disk.close()
    model = CrashModel(rec)
    seen = set()
    for n, state in enumerate(model.states(len(model.events), limit=1000, combos=1000)):
        dest = str(tmp_path / "s" / str(n))
        model.materialize(state, [dest])
        check = LocalDisk(dest)
        try:
            assert await check.read_record(live) == payloads[1]
            try:
                seen.add(await check.read_record(dead) == payloads[0])
            except CorruptData:
                seen.add("zeros")
        finally:
            await check.close()
    assert seen == {True, "zeros"}
