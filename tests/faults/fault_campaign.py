"""A damage campaign: write objects, damage random shards of random objects, read everything
back over S3, let the server heal what the reads found, stop it, run the explicit heal
pass, and prove every fault was found and every damaged file rebuilt exactly.

Used by the bit-flip and the shard-deletion tests, which differ only in the damage they
do (``kinds``). A fault is *detected* when the engine found its slot bad: on-line (the
server's heal worker, after a read reported the object, logs the slots it rebuilt) or in
the offline heal pass. It is *repaired* when the damaged file is back exactly as it was
before the fault and the final deep check of the object is clean.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fault_disks import Fault, Shard, current_shards, restored
from fault_ledger import FaultTally
from fault_load import KiB, MiB, Ledger, LoadStats, check_read, content, content_digest
from fault_offline import heal_pass, verify
from fault_server import ServerProcess, server_bugs

BUCKET = "faults"
MIN_PART = 5 * MiB
HEALED = re.compile(r"healed (\S+?)/(\S+): rebuilt shards \[([0-9, ]*)\]")

# Sizes around every boundary: empty-ish, inline (<= 128 KiB), one block (1 MiB), several.
EDGE_SIZES = [1, 100, 4 * KiB, 64 * KiB, 128 * KiB, 128 * KiB + 1, 300 * KiB, MiB - 1, MiB, MiB + 1,
              2 * MiB + 12345, 3 * MiB]


def seed_from_env(default: int) -> int:
    return int(os.environ.get("BUCKETS_FAULT_SEED", default))


@dataclass
class Written:
    ledger: Ledger = field(default_factory=Ledger)
    keys: list[str] = field(default_factory=list)


def write_objects(client, sizes: list[int], multipart_sizes: list[int] = (), prefix: str = "obj") -> Written:
    """PUT one object per size (and multipart uploads of 5 MiB parts); return the ledger."""
    out = Written()
    for i, size in enumerate(sizes):
        key = f"{prefix}/{i:04d}-{size}"
        v = out.ledger.sent_put(key, size)
        client.put_object(Bucket=BUCKET, Key=key, Body=content(key, v, size))
        out.ledger.acked_put(key, v, size)
        out.keys.append(key)
    for i, size in enumerate(multipart_sizes):
        key = f"{prefix}/mp-{i:02d}-{size}"
        v = out.ledger.sent_put(key, size)
        data = content(key, v, size)
        up = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        parts = []
        for n, off in enumerate(range(0, size, MIN_PART), start=1):
            etag = client.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=n,
                                      Body=data[off:off + MIN_PART])["ETag"]
            parts.append({"PartNumber": n, "ETag": etag})
        client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up, MultipartUpload={"Parts": parts})
        out.ledger.acked_put(key, v, size)
        out.keys.append(key)
    return out


Damager = Callable[[Shard, random.Random], Fault]


def inject(disks, keys: list[str], rnd: random.Random, kinds: list[Damager], *, share: float,
           max_slots: int) -> list[Fault]:
    """Damage ``share`` of the objects, each on 1..max_slots distinct slots, one fault per slot."""
    faults: list[Fault] = []
    for key in rnd.sample(keys, max(1, int(len(keys) * share))):
        shards = current_shards(disks, BUCKET, key)
        assert len(shards) == len(disks), f"{key}: expected a shard on every disk, found {len(shards)}"
        for shard in rnd.sample(shards, rnd.randint(1, max_slots)):
            faults.append(rnd.choice(kinds)(shard, rnd))
    return faults


def online_repairs(server: ServerProcess, start: int = 0) -> set[tuple[str, int]]:
    """(key, slot) pairs the running server logged as rebuilt."""
    found = set()
    for bucket, key, slots in HEALED.findall(server.log_text()[start:]):
        if bucket == BUCKET:
            found |= {(key, int(s)) for s in slots.replace(" ", "").split(",") if s}
    return found


def found_bad(server: ServerProcess, report) -> dict[str, set[int]]:
    """Slots the engine found bad, per key: healed on-line by ``server`` or by the heal pass."""
    found: dict[str, set[int]] = {}
    for key, slot in online_repairs(server):
        found.setdefault(key, set()).add(slot)
    for (bucket, key), slots in report.bad.items():
        if bucket == BUCKET:
            found.setdefault(key, set()).update(slots)
    return found


def lost_keys(final, *written: Written, gone: tuple[str, ...] = ()) -> list[str]:
    """Acknowledged keys the final read-back did not return intact (``gone``: deleted on purpose)."""
    lost = []
    for w in written:
        for key in w.keys:
            if key in gone:
                continue
            if final.digests.get((BUCKET, key)) != content_digest(key, *w.ledger.state(key).acked):
                lost.append(key)
    return lost


def read_everything(client, written: Written, rnd: random.Random) -> LoadStats:
    """Full GET of every object, plus a random range of each multi-block one."""
    stats = LoadStats()
    for key in written.keys:
        check_read(client, written.ledger, stats, BUCKET, key)
        size = written.ledger.state(key).acked[1]
        if size > MiB:
            start = rnd.randrange(size - 1)
            check_read(client, written.ledger, stats, BUCKET, key, (start, min(size, start + MiB + 7)))
    return stats


def wait_quiet(server: ServerProcess, quiet: float = 1.5, timeout: float = 60.0) -> None:
    """Wait until the server log stops growing (the heal worker has drained its queue)."""
    deadline = time.monotonic() + timeout
    last, since = len(server.log_text()), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = len(server.log_text())
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def run_campaign(servers, tally: FaultTally, *, sizes: list[int], multipart_sizes: list[int] = (),
                 kinds: list[Damager], share: float, max_slots: int = 2, seed: int = 1) -> None:
    seed = seed_from_env(seed)
    rnd = random.Random(seed)
    tally.note(f"seed {seed} (BUCKETS_FAULT_SEED reproduces it)")
    disks = servers.disks(4)
    server = servers.start(disks)
    client = server.client()
    client.create_bucket(Bucket=BUCKET)
    written = write_objects(client, sizes, multipart_sizes)
    tally.objects_written += len(written.keys)

    faults = inject(disks, written.keys, rnd, kinds, share=share, max_slots=max_slots)
    tally.faults_injected += len(faults)
    by_kind: dict[str, int] = {}
    for f in faults:
        by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
    tally.note(f"{len(faults)} faults in {len({f.key for f in faults})} of {len(written.keys)} objects: {by_kind}")

    reads = read_everything(client, written, rnd)
    tally.wrong_bytes += len(reads.wrong)
    tally.note(f"reads over S3 with the damage in place: {reads.summary()}")
    wait_quiet(server)
    healed_online = online_repairs(server)
    assert server.stop() == 0, server.log_text()[-3000:]
    bugs = server_bugs(server.log_text())

    report = heal_pass(server.disk_paths)
    found_offline = {(key, slot) for (_b, key), slots in report.bad.items() for slot in slots}
    fault_slots = {(f.key, f.slot) for f in faults}
    detected = fault_slots & (healed_online | found_offline)
    spurious = (healed_online | found_offline) - fault_slots
    tally.faults_detected += sum(1 for f in faults if (f.key, f.slot) in detected)
    tally.note(f"found bad: {len(healed_online)} shards healed on-line after reads, {len(found_offline)} "
               f"by the offline pass (stats {report.stats}); not injected by us: {sorted(spurious)}")

    final = verify(server.disk_paths)
    not_restored = [f for f in faults if not restored(f)]
    tally.repaired += sum(1 for f in faults if restored(f) and (BUCKET, f.key) not in final.still_bad)
    lost = [k for k in written.keys
            if final.digests.get((BUCKET, k)) != content_digest(k, *written.ledger.state(k).acked)]
    tally.objects_lost += len(lost)
    tally.note(f"after the heal pass: {len(final.still_bad)} objects still bad, {len(not_restored)} files "
               f"not rebuilt exactly, {len(lost)} objects lost, server log bug lines: {len(bugs)}")

    assert not reads.wrong and not reads.lost and not reads.read_errors, reads.summary()
    assert not lost, f"objects lost: {lost[:5]} {final.read_errors}"
    assert fault_slots <= detected, f"faults never detected: {sorted(fault_slots - detected)[:10]}"
    assert not spurious, f"shards reported bad that were not damaged: {sorted(spurious)[:10]}"
    assert not report.failed and report.cycle_bad_after == 0, (report.failed, report.cycle_bad_after)
    assert not final.still_bad, f"still bad after the heal pass: {final.still_bad}"
    assert not not_restored, "not rebuilt exactly: " + "; ".join(
        f"{f.key} slot {f.slot} {f.kind} {f.path}" for f in not_restored[:5])
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
