"""Bring a node's disks up: format new ones, refuse foreign ones, find offline ones.

Rules: every disk's format file is read (``Disk.read_format``). All unformatted → a new
deployment is formatted (one deployment id, one disk id per disk, the erasure layout
fixed; missing roots are created then, and only then). Some formatted → the formatted ones
must agree on the deployment; an unformatted disk at a slot takes that slot's old
identity back (it was replaced or wiped, the healer refills it); a disk from another
deployment or a non-empty foreign directory is refused with a message; an unusable disk
is reported offline and tolerated while the read quorum holds.

Everything here goes through the ``Disk`` protocol, so the disks may be local or remote.
The one exception is the registry directory (``choose_registry``): an LMDB environment
lives on a local filesystem, so only disks with a ``local_path`` can hold it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass

from buckets.errors import CorruptData, DiskError, DiskInUse, ForeignDisk, FormatError, UnformattedDisk
from buckets.placement import cluster_layout, default_set_size, erasure_layout
from buckets.storage.disk import Disk
from buckets.storage.format import REGISTRY_DIR, REGISTRY_POINTER, SYS_DIR, DiskFormat, FORMAT_FILE, new_format, new_ids

log = logging.getLogger("buckets.engine")


class NotFormatted(FormatError):
    """A cluster node found no formatted disk and is not the one that formats: wait and retry."""


@dataclass(slots=True)
class Bootstrap:
    deployment_id: str
    k: int
    m: int
    block_size: int
    partitions: int
    disk_ids: list[str]
    new_deployment: bool = False

    def format_for(self, slot: int) -> DiskFormat:
        """The format file of slot ``slot`` (to re-format a wiped disk into it)."""
        return new_format(slot, self.disk_ids, self.deployment_id, self.k, self.m, self.block_size,
                          self.partitions)


# What reading one disk's format found: its format, None (unformatted: may be formatted),
# or why the disk cannot be used now (a string).
Probe = DiskFormat | None | str


async def read_disk_format(disk: Disk) -> Probe:
    """Classify a disk. ``FormatError`` for a foreign directory or an unreadable format file:
    both refuse the start rather than risk someone else's data."""
    try:
        raw = await disk.read_format()
    except UnformattedDisk:
        return None
    except ForeignDisk as exc:
        raise FormatError(str(exc)) from None
    except CorruptData as exc:
        raise FormatError(f"{disk.endpoint}: unreadable format file ({exc})") from None
    except DiskInUse as exc:
        if disk.local_path(SYS_DIR) is not None:  # ours: a second server on this node's disks
            raise FormatError(str(exc)) from None
        return str(exc)  # a peer's: that node refuses to start, and counts as offline here
    except DiskError as exc:
        return str(exc) or f"{disk.endpoint} is unusable"
    return DiskFormat.from_json(raw, f"{disk.endpoint}/{FORMAT_FILE}")


FSTAB = "/etc/fstab"


def fstab_mount_points(path: str | None = None) -> list[str]:
    """The mount points ``/etc/fstab`` lists (``BUCKETS_FSTAB`` names another file; tests),
    longest first, without ``/`` and swap; [] when there is no such file."""
    path = path or os.environ.get("BUCKETS_FSTAB") or FSTAB
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3 or fields[2] == "swap" or not fields[1].startswith("/"):
            continue
        point = os.path.normpath(fields[1].replace("\\040", " ").replace("\\011", "\t"))
        if point != "/":
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def not_mounted(disk: Disk) -> str | None:
    """Why a local disk's path is not on the file system meant for it, by ``/etc/fstab``: the
    path is (or is under) a mount point listed there that is not mounted now (a failed boot
    mount, a ``nofail`` device missing). Formatting there would put the data on the file system
    below, the system disk."""
    root = disk.local_path(SYS_DIR)
    if root is None:
        return None
    root = os.path.dirname(root)
    for point in fstab_mount_points():
        if root == point or root.startswith(point + os.sep):
            try:
                if os.path.ismount(point):
                    return None
            except OSError:
                return None
            return (f"{disk.endpoint} is not mounted: /etc/fstab mounts a file system at {point}, and none is "
                    f"mounted there now; mount it (formatting the directory below would put the data on the "
                    f"system disk)")
    return None


def looks_unmounted(disk: Disk, others: list[Disk]) -> str | None:
    """Why an empty directory in a slot of an existing deployment must not be formatted, or
    None. A disk whose file system did not mount (a failed fstab line, a device gone at boot)
    leaves its mount point: an empty directory on the parent's file system. Formatted and
    refilled there, it would fill the system disk. Told by the node's other local disks: when
    each of them is its own mount point and this one is not, it is taken for unmounted and
    stays offline until it is mounted (or made a mount point: a new disk)."""
    listed = not_mounted(disk)
    if listed is not None:
        return listed
    root = disk.local_path(SYS_DIR)
    if root is None:
        return None
    root = os.path.dirname(root)
    mounts = [os.path.dirname(p) for p in (o.local_path(SYS_DIR) for o in others if o is not disk) if p is not None]
    try:
        if not mounts or os.path.ismount(root) or not all(os.path.ismount(m) for m in mounts):
            return None
    except OSError:
        return None
    return (f"{disk.endpoint} looks unmounted: it is an empty directory on its parent's file system, while this "
            f"node's other disks are each mounted; mount its file system there (a new, empty one is formatted "
            f"and refilled)")


def refuse_unmounted(disks: list[Disk]) -> None:
    """A new deployment (or a joining node's empty disks) is never formatted on a disk that
    ``/etc/fstab`` says is not mounted: when every disk is, an existing store would look new
    and empty, and its clients' writes would land on the system disk."""
    for d in disks:
        why = not_mounted(d)
        if why is not None:
            raise FormatError(why)


def refuse_shared_directories(disks: list[Disk]) -> None:
    """Two local disk paths that are one directory (through a symlink or a bind mount) would
    put two shards of every object in one place, below the redundancy the layout promises:
    refused before anything is written. Told apart by the directory's (device, inode); a path
    that does not exist yet is skipped (it is created empty)."""
    seen: dict[tuple[int, int], str] = {}
    for d in disks:
        root = d.local_path(SYS_DIR)
        if root is None:
            continue
        try:
            st = os.stat(os.path.dirname(root))
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise FormatError(f"{d.endpoint} and {seen[key]} are the same directory (a symlink or a bind mount?): "
                              f"give each disk once, each on its own device")
        seen[key] = d.endpoint


async def bootstrap(disks: list[Disk], *, parity: int | None, block_size: int, partitions: int,
                    sync: bool, may_create: bool = True, known_ids: bool = False,
                    disks_per_node: list[int] | None = None) -> Bootstrap:
    """Format or check ``disks`` (in slot order); set each one's ``disk_id`` and state
    (offline with its error, or ``healing`` when it was formatted into an existing slot).

    ``known_ids``: a cluster member restarting, whose disks (its own and its peers') and their
    ids come from the control plane (its membership file, set on each disk as ``disk_id``), not
    from the format files' disk lists: a disk added or removed since the first start is no
    mismatch. Each format must still be this deployment's and name the disk id expected.

    ``disks_per_node``: a new cluster's disk count per node, which may narrow its set
    (``placement.cluster_layout``)."""
    if not disks:
        raise FormatError("no disk paths given")
    if len({d.endpoint for d in disks}) != len(disks):
        raise FormatError("the same disk path is given twice")
    refuse_shared_directories(disks)
    probes: list[Probe] = list(await asyncio.gather(*(read_disk_format(d) for d in disks)))
    formats = [r for r in probes if isinstance(r, DiskFormat)]
    if known_ids and formats:
        return await _bootstrap_known(disks, probes, formats, sync)
    if not formats:
        if not may_create:
            raise NotFormatted("no disk is formatted yet: waiting for the first node to format the cluster")
        refuse_unmounted(disks)
        return await _new_deployment(disks, probes, parity, block_size, partitions, sync, disks_per_node)

    deployments = Counter(f.deployment_id for f in formats)
    deployment_id, _ = deployments.most_common(1)[0]
    for d, r in zip(disks, probes):
        if isinstance(r, DiskFormat) and r.deployment_id != deployment_id:
            raise FormatError(f"{d.endpoint} belongs to another deployment ({r.deployment_id}); "
                              f"this node's disks are in {deployment_id}")
    ref = next(f for f in formats if f.deployment_id == deployment_id)
    if len(ref.disks) != len(disks):
        raise FormatError(f"this deployment has {len(ref.disks)} disks but {len(disks)} paths were given")
    boot = Bootstrap(deployment_id, ref.k, ref.m, ref.block_size, ref.partitions, list(ref.disks))
    for slot, (d, r) in enumerate(zip(disks, probes)):
        if isinstance(r, DiskFormat) and (r.slot != slot or r.disk_id != ref.disks[slot]):
            raise FormatError(f"{d.endpoint} holds disk {r.disk_id} of slot {r.slot}, but is given at "
                              f"position {slot}; keep the disk order of the first start")
    formatted = [d for d, r in zip(disks, probes) if isinstance(r, DiskFormat)]
    for slot, (d, r) in enumerate(zip(disks, probes)):
        d.disk_id = ref.disks[slot]
        if isinstance(r, DiskFormat):
            continue
        if r is None and (why := looks_unmounted(d, formatted)) is not None:
            d.mark_offline(why)
        elif r is None:
            try:
                await d.write_format(boot.format_for(slot).to_json(), create_root=False, sync=sync)
            except DiskError as exc:
                d.mark_offline(str(exc))
                continue
            d.healing = True
            log.warning("disk %s was empty: formatted into slot %d of deployment %s; it will be refilled",
                        d.endpoint, slot, deployment_id)
        else:
            d.mark_offline(r)
    return boot


async def _bootstrap_known(disks: list[Disk], probes: list[Probe], formats: list[DiskFormat],
                           sync: bool) -> Bootstrap:
    deployments = Counter(f.deployment_id for f in formats)
    deployment_id, _ = deployments.most_common(1)[0]
    ref = next(f for f in formats if f.deployment_id == deployment_id)
    boot = Bootstrap(deployment_id, ref.k, ref.m, ref.block_size, ref.partitions, [d.disk_id for d in disks])
    for d, r in zip(disks, probes):
        if not d.disk_id:
            raise FormatError(f"{d.endpoint}: no disk id for it in the membership file")
        if isinstance(r, DiskFormat):
            if r.deployment_id != deployment_id:
                raise FormatError(f"{d.endpoint} belongs to another deployment ({r.deployment_id}); "
                                  f"this node's disks are in {deployment_id}")
            if r.disk_id != d.disk_id:
                raise FormatError(f"{d.endpoint} holds disk {r.disk_id}, but the cluster knows this path as disk "
                                  f"{d.disk_id}: keep each disk at the path it was added with")
        elif r is None and (why := looks_unmounted(d, [o for o, p in zip(disks, probes)
                                                           if isinstance(p, DiskFormat)])) is not None:
            d.mark_offline(why)
        elif r is None:
            fmt = new_format(0, [d.disk_id], deployment_id, ref.k, ref.m, ref.block_size, ref.partitions)
            try:
                await d.write_format(fmt.to_json(), create_root=False, sync=sync)
            except DiskError as exc:
                d.mark_offline(str(exc))
                continue
            d.healing = True
            log.warning("disk %s was empty: formatted as disk %s of deployment %s; it will be refilled",
                        d.endpoint, d.disk_id, deployment_id)
        else:
            d.mark_offline(r)
    return boot


async def _new_deployment(disks: list[Disk], probes: list[Probe], parity: int | None, block_size: int,
                          partitions: int, sync: bool, disks_per_node: list[int] | None) -> Bootstrap:
    offline = [r for r in probes if isinstance(r, str)]
    if offline:
        raise FormatError(f"cannot format a new deployment while a disk is unusable: {offline[0]}")
    try:
        if disks_per_node is not None:
            k, m = cluster_layout(disks_per_node, parity)
        else:
            k, m = erasure_layout(default_set_size(len(disks)), parity)
    except ValueError as exc:
        raise FormatError(str(exc)) from None
    deployment_id, disk_ids = new_ids(len(disks))
    boot = Bootstrap(deployment_id, k, m, block_size, partitions, disk_ids, new_deployment=True)
    for slot, d in enumerate(disks):
        d.disk_id = disk_ids[slot]
        try:
            await d.write_format(boot.format_for(slot).to_json(), create_root=True, sync=sync)
        except DiskError as exc:
            raise FormatError(f"cannot format {d.endpoint}: {exc}") from None
    return boot


async def registry_unreadable(path: str) -> str | None:
    """Why the registry at ``path`` cannot be opened safely, or None: a part of its files that
    the disk cannot read (``registry.store.read_through``: opened, LMDB's map would end the
    process with SIGBUS there), or a read that stopped answering for ``--disk-timeout``
    (abandoned: its thread stays blocked in the disk). Read in a thread; nothing is read when
    ``registry.store.needs_read_through`` says so."""
    from buckets.registry import store as registry_store
    from buckets.storage import local

    loop = asyncio.get_running_loop()
    progress = [0]

    def job() -> float | None:
        needed, left_by = registry_store.needs_read_through(path)
        if left_by is not None:
            log.warning("registry %s was not closed by the last process to open it (pid %s: killed, crashed, or "
                        "the power was cut): reading it through before it is opened", path, left_by)
        if not needed:
            return None
        started = time.monotonic()
        registry_store.read_through(path, progress)
        return time.monotonic() - started

    reading = loop.run_in_executor(None, job)
    seen = -1
    while True:
        done, _ = await asyncio.wait({reading}, timeout=local.disk_timeout if local.disk_timeout > 0 else None)
        if done:
            break
        if progress[0] == seen:
            return f"a read of it has not answered for {local.disk_timeout:g} s"
        seen = progress[0]
    try:
        took = reading.result()
    except OSError as exc:
        return exc.strerror or str(exc)
    if took is not None and took > 2:
        log.info("registry %s read through before it was opened: %.1f MB in %.1f s", path, progress[0] / 1e6, took)
    return None


async def choose_registry(disks: list[Disk], sync: bool, avoid: frozenset[str] = frozenset()) -> tuple[Disk, bool]:
    """Pick the disk whose registry is authoritative; return (its disk, rebuild needed).

    Only online disks with a ``local_path`` count: the registry is an LMDB environment of
    this node, on one of its own disks, and the pointer beside it is this node's too.
    Every such disk holds ``registry.json``: {epoch, disk_id} naming where the registry
    lived at the last start. The highest epoch wins. If that disk is offline, the registry
    moves to the first local online disk and is rebuilt from the disks' metadata (a stale
    copy there, from an older epoch, is discarded). The new pointer, epoch + 1, is written
    to every local online disk before the store serves, so a disk that returns later with
    an old registry can never shadow writes acknowledged meanwhile.

    ``avoid``: ids of disks whose registry failed while this process ran (the server restarted
    in place to move it, ``buckets.cli.server``): such a disk counts as unavailable here even
    where it still answers, and the registry is rebuilt on another.
    """
    local = [d for d in disks if d.online and d.local_path(REGISTRY_DIR) is not None]
    if not any(d.disk_id not in avoid for d in local):
        raise FormatError("no online local disk can hold this node's registry")
    best: dict | None = None
    for d in local:
        try:
            ptr = json.loads(await d.read_file(REGISTRY_POINTER, max_size=4096))
            if best is None or ptr["epoch"] > best["epoch"]:
                best = ptr
        except (DiskError, ValueError, KeyError, TypeError):
            continue
    by_id = {d.disk_id: d for d in local if d.disk_id not in avoid}
    rebuild = False
    epoch = (best["epoch"] + 1) if best else 1
    while True:
        if not by_id:
            raise FormatError("no online local disk can hold this node's registry")
        if best is not None and best.get("disk_id") in by_id and not rebuild:
            home = by_id[best["disk_id"]]
        else:
            home = next(iter(by_id.values()))
            if best is not None:  # the authoritative registry is unreachable: start over from the disks
                log.warning("registry disk %s is %s: rebuilding the registry on %s", best.get("disk_id"),
                            "failed" if best.get("disk_id") in avoid else "unavailable", home.endpoint)
                rebuild = True
        # The home's own pointer first: a disk that fails or hangs (``--disk-timeout``) here
        # would hold the registry, so another disk takes it, rebuilt from the disks' metadata.
        # Each attempt takes a new epoch: a hung write that lands later names its disk at an
        # epoch below the one the other disks are given.
        data = json.dumps({"epoch": epoch, "disk_id": home.disk_id}).encode()
        try:
            await home.write_file(REGISTRY_POINTER, data, sync=sync)
        except DiskError as exc:
            log.warning("cannot write the registry pointer on %s: %s; the registry goes elsewhere", home.endpoint, exc)
            del by_id[home.disk_id]
            epoch += 1
            if best is not None and home.disk_id == best.get("disk_id"):
                rebuild = True
            continue
        if rebuild:  # start over from the disks: a stale copy here, from an older epoch, goes
            try:
                await home.delete(REGISTRY_DIR, recursive=True)
            except DiskError as exc:
                raise FormatError(f"cannot clear the stale registry on {home.endpoint}: {exc}") from None
        break
    for d in local:
        if d is home or not d.online:  # one that failed or hung above is offline now
            continue
        try:
            await d.write_file(REGISTRY_POINTER, data, sync=sync)
        except DiskError as exc:
            log.warning("cannot write the registry pointer on %s: %s", d.endpoint, exc)
    return home, rebuild
