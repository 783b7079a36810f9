"""Bring a node's disks up: format new ones, refuse foreign ones, find offline ones.

Rules: every disk root is probed. All empty → a new deployment is formatted (one
deployment id, one disk id per path, the erasure layout fixed). Some formatted → the
formatted ones must agree on the deployment; an empty disk at a slot takes that slot's
old identity back (it was replaced or wiped, the healer refills it); a disk from another
deployment or a non-empty foreign directory is refused with a message; an unreadable
path is reported offline and tolerated while the read quorum holds.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

from buckets.errors import FormatError
from buckets.placement import default_set_size, erasure_layout
from buckets.storage.format import DiskFormat, FORMAT_FILE, SYS_DIR, TMP_DIR, new_format, new_ids, probe

log = logging.getLogger("buckets.engine")


@dataclass(slots=True)
class DiskSlot:
    path: str
    fmt: DiskFormat | None
    online: bool
    fresh: bool = False  # formatted just now into an existing deployment (needs refill)
    error: str = ""


@dataclass(slots=True)
class Bootstrap:
    deployment_id: str
    k: int
    m: int
    block_size: int
    partitions: int
    disk_ids: list[str]
    slots: list[DiskSlot] = field(default_factory=list)
    new_deployment: bool = False


def _write_format(path: str, fmt: DiskFormat, sync: bool) -> None:
    if not os.path.isdir(path):  # never create a missing disk root (an unmounted disk)
        raise FileNotFoundError(f"{path} does not exist")
    os.makedirs(os.path.join(path, SYS_DIR), exist_ok=True)
    os.makedirs(os.path.join(path, TMP_DIR), exist_ok=True)
    final = os.path.join(path, FORMAT_FILE)
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        f.write(fmt.to_json())
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, final)
    if sync:
        fd = os.open(os.path.dirname(final), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def bootstrap(paths: list[str], *, parity: int | None, block_size: int, partitions: int,
              sync: bool) -> Bootstrap:
    if not paths:
        raise FormatError("no disk paths given")
    if len(set(os.path.abspath(p) for p in paths)) != len(paths):
        raise FormatError("the same disk path is given twice")
    probes: list[DiskFormat | None | str] = []
    for p in paths:
        try:
            probes.append(probe(p))
        except FormatError:
            raise
        except OSError as exc:
            probes.append(f"{p}: {exc.strerror or exc}")
    foreign = [r for r in probes if isinstance(r, str) and "refusing" in r]
    if foreign:
        raise FormatError(foreign[0])
    formats = [r for r in probes if isinstance(r, DiskFormat)]
    if not formats:
        return _new_deployment(paths, probes, parity, block_size, partitions, sync)

    deployments = Counter(f.deployment_id for f in formats)
    deployment_id, _ = deployments.most_common(1)[0]
    for p, r in zip(paths, probes):
        if isinstance(r, DiskFormat) and r.deployment_id != deployment_id:
            raise FormatError(f"{p} belongs to another deployment ({r.deployment_id}); "
                              f"this node's disks are in {deployment_id}")
    ref = next(f for f in formats if f.deployment_id == deployment_id)
    if len(ref.disks) != len(paths):
        raise FormatError(f"this deployment has {len(ref.disks)} disks but {len(paths)} paths were given")
    boot = Bootstrap(deployment_id, ref.k, ref.m, ref.block_size, ref.partitions, list(ref.disks))
    for slot, (p, r) in enumerate(zip(paths, probes)):
        if isinstance(r, DiskFormat):
            if r.slot != slot or r.disk_id != ref.disks[slot]:
                raise FormatError(f"{p} holds disk {r.disk_id} of slot {r.slot}, but is given at position {slot}; "
                                  "keep the disk order of the first start")
            boot.slots.append(DiskSlot(p, r, True))
        elif r is None:
            fmt = new_format(slot, ref.disks, deployment_id, ref.k, ref.m, ref.block_size, ref.partitions)
            try:
                _write_format(p, fmt, sync)
                boot.slots.append(DiskSlot(p, fmt, True, fresh=True))
                log.warning("disk %s was empty: formatted into slot %d of deployment %s; it will be refilled",
                            p, slot, deployment_id)
            except OSError as exc:
                log.error("disk %s is offline: %s", p, exc)
                boot.slots.append(DiskSlot(p, None, False, error=str(exc)))
        else:
            log.error("disk %s is offline: %s", p, r)
            boot.slots.append(DiskSlot(p, None, False, error=r))
    return boot


def _new_deployment(paths, probes, parity, block_size, partitions, sync) -> Bootstrap:
    offline = [r for r in probes if isinstance(r, str)]
    if offline:
        raise FormatError(f"cannot format a new deployment while a disk is unusable: {offline[0]}")
    set_size = default_set_size(len(paths))
    try:
        k, m = erasure_layout(set_size, parity)
    except ValueError as exc:
        raise FormatError(str(exc)) from None
    deployment_id, disk_ids = new_ids(len(paths))
    boot = Bootstrap(deployment_id, k, m, block_size, partitions, disk_ids, new_deployment=True)
    for slot, p in enumerate(paths):
        fmt = new_format(slot, disk_ids, deployment_id, k, m, block_size, partitions)
        os.makedirs(p, exist_ok=True)
        _write_format(p, fmt, sync)
        boot.slots.append(DiskSlot(p, fmt, True))
    return boot


REGISTRY_POINTER = f"{SYS_DIR}/registry.json"


def choose_registry(disks: list, sync: bool) -> tuple[str, bool]:
    """Pick the disk whose registry is authoritative; return (registry dir, rebuild needed).

    Every disk holds ``registry.json``: {epoch, disk_id} naming where the registry lived at
    the last start. The highest epoch wins. If that disk is offline, the registry moves to
    the first online disk and is rebuilt from the disks' metadata (a stale copy there,
    from an older epoch, is discarded). The new pointer, epoch + 1, is written to every
    online disk before the store serves, so a disk that returns later with an old registry
    can never shadow writes acknowledged meanwhile.
    """
    import json
    import shutil

    from buckets.storage.format import REGISTRY_DIR

    online = [d for d in disks if d.online]
    best: dict | None = None
    for d in online:
        try:
            with open(os.path.join(d.root, REGISTRY_POINTER), "rb") as f:
                ptr = json.loads(f.read())
            if best is None or ptr["epoch"] > best["epoch"]:
                best = ptr
        except (OSError, ValueError, KeyError, TypeError):
            continue
    by_id = {d.disk_id: d for d in online}
    rebuild = False
    if best is not None and best.get("disk_id") in by_id:
        home = by_id[best["disk_id"]]
    else:
        home = online[0]
        if best is not None:  # the authoritative registry is unreachable: start over from the disks
            log.warning("registry disk %s is unavailable: rebuilding the registry on %s",
                        best.get("disk_id"), home.endpoint)
            shutil.rmtree(os.path.join(home.root, REGISTRY_DIR), ignore_errors=True)
            rebuild = True
    epoch = (best["epoch"] + 1) if best else 1
    data = json.dumps({"epoch": epoch, "disk_id": home.disk_id}).encode()
    for d in online:
        try:
            tmp = os.path.join(d.root, REGISTRY_POINTER + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, os.path.join(d.root, REGISTRY_POINTER))
        except OSError as exc:
            log.warning("cannot write the registry pointer on %s: %s", d.endpoint, exc)
    return os.path.join(home.root, REGISTRY_DIR), rebuild
