"""Versioned buckets under disk faults: every version, not only the current one.

A versioned bucket gets several versions per key (inline, one-block and multi-block sizes,
so one key's versions differ in layout), delete markers, deletes of a version by id and
tags on some versions. Then the disks are damaged: bits flipped and shard or metadata files
deleted in random versions (noncurrent ones too), a disk wiped while the server runs, the
registry deleted. Every version is read back over S3 by its version id after each fault,
and ListObjectVersions must list exactly the versions acknowledged, in order (newest first,
the first one latest), delete markers included, with their tags. Lost: an acknowledged
version missing or another version's bytes; wrong: bytes no version of the key ever held.
"""

from __future__ import annotations

import functools
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from fault_campaign import EDGE_SIZES, HEALED, seed_from_env, wait_quiet
from fault_disks import (Shard, all_shards, delete_data_dir, delete_meta, delete_part, flip_meta, flip_piece,
                         restored, wipe)
from fault_ledger import FaultTally
from fault_load import KiB, MiB, content, content_digest, digest
from fault_offline import heal_pass
from fault_server import ServerProcess, server_bugs

from buckets.storage.format import REGISTRY_DIR

BUCKET = "faults-versions"
DAMAGE = [flip_piece, functools.partial(flip_piece, checksum=True), flip_meta, delete_part, delete_meta,
          delete_data_dir]


@dataclass
class Version:
    vid: str
    n: int = 0  # content(key, n, size); 0 for a delete marker
    size: int = 0
    marker: bool = False
    tags: dict = field(default_factory=dict)


@dataclass
class VersionLedger:
    """Every key's acknowledged versions, newest first; and the versions deleted by id."""

    keys: dict[str, list[Version]] = field(default_factory=dict)
    deleted: dict[str, list[Version]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)

    def put(self, client, key: str, size: int) -> Version:
        n = self.sent[key] = self.sent.get(key, 0) + 1
        vid = client.put_object(Bucket=BUCKET, Key=key, Body=content(key, n, size))["VersionId"]
        v = Version(vid, n, size)
        self.keys.setdefault(key, []).insert(0, v)
        return v

    def mark(self, client, key: str) -> Version:
        r = client.delete_object(Bucket=BUCKET, Key=key)
        assert r.get("DeleteMarker") is True, r
        v = Version(r["VersionId"], marker=True)
        self.keys.setdefault(key, []).insert(0, v)
        return v

    def delete_version(self, client, key: str, v: Version) -> None:
        client.delete_object(Bucket=BUCKET, Key=key, VersionId=v.vid)
        self.keys[key].remove(v)
        self.deleted.setdefault(key, []).append(v)

    def tag(self, client, key: str, v: Version, tags: dict) -> None:
        client.put_object_tagging(Bucket=BUCKET, Key=key, VersionId=v.vid,
                                  Tagging={"TagSet": [{"Key": k, "Value": val} for k, val in tags.items()]})
        v.tags = dict(tags)

    def versions(self) -> int:
        return sum(1 for vs in self.keys.values() for v in vs if not v.marker)


@dataclass
class Check:
    ok: int = 0
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.ok} versions read back exactly, {len(self.lost)} lost, {len(self.wrong)} wrong, "
                f"{len(self.errors)} errors {(self.lost + self.wrong + self.errors)[:3]}")


def _get(client, **kw) -> bytes:
    return client.get_object(Bucket=BUCKET, **kw)["Body"].read()


def check_versions(client, ledger: VersionLedger) -> Check:
    """Every acknowledged version by id (bytes, tags), the deleted ones gone, the listing in
    order, and the plain GET of each key answering its latest version."""
    out = Check()
    for key, versions in sorted(ledger.keys.items()):
        history = {content_digest(key, v.n, v.size) for vs in (versions, ledger.deleted.get(key, [])) for v in vs
                   if not v.marker}
        for v in versions:
            try:
                if v.marker:
                    client.head_object(Bucket=BUCKET, Key=key, VersionId=v.vid)
                    out.wrong.append(f"{key} {v.vid[:8]}: the delete marker answers as an object")
                    continue
                got = digest(_get(client, Key=key, VersionId=v.vid))
                tags = client.get_object_tagging(Bucket=BUCKET, Key=key, VersionId=v.vid)["TagSet"]
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                if v.marker and status == 405:
                    out.ok += 1
                elif code in ("NoSuchVersion", "NoSuchKey"):
                    out.lost.append(f"{key} {v.vid[:8]}: {code}")
                else:
                    out.errors.append(f"{key} {v.vid[:8]}: {status} {code}")
                continue
            if got == content_digest(key, v.n, v.size):
                if {t["Key"]: t["Value"] for t in tags} != v.tags:
                    out.lost.append(f"{key} {v.vid[:8]}: tags {tags}, expected {v.tags}")
                else:
                    out.ok += 1
            elif got in history:
                out.lost.append(f"{key} {v.vid[:8]}: another version's bytes")
            else:
                out.wrong.append(f"{key} {v.vid[:8]}: bytes this key never held")
        for v in ledger.deleted.get(key, []):
            try:
                _get(client, Key=key, VersionId=v.vid)
                out.wrong.append(f"{key} {v.vid[:8]}: a version deleted by id is back")
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "NoSuchVersion":
                    out.errors.append(f"{key} {v.vid[:8]} (deleted): {exc.response['Error']['Code']}")
        listed = client.list_object_versions(Bucket=BUCKET, Prefix=key)
        items = sorted([(x["Key"], x["VersionId"], x["IsLatest"], x["LastModified"], False)
                        for x in listed.get("Versions", [])] +
                       [(x["Key"], x["VersionId"], x["IsLatest"], x["LastModified"], True)
                        for x in listed.get("DeleteMarkers", [])], key=lambda x: (x[0], -x[3].timestamp()))
        mine = [(vid, latest, marker) for k, vid, latest, _, marker in items if k == key]
        want = [(v.vid, i == 0, v.marker) for i, v in enumerate(versions)]
        if {m[0] for m in mine} != {w[0] for w in want} or dict((m[0], m[1:]) for m in mine) != dict(
                (w[0], w[1:]) for w in want):
            out.lost.append(f"{key}: ListObjectVersions lists {mine}, expected {want}")
        try:
            body = _get(client, Key=key)
            if versions[0].marker or digest(body) != content_digest(key, versions[0].n, versions[0].size):
                out.lost.append(f"{key}: GET without a version id answers another version")
        except ClientError as exc:
            if not (versions[0].marker and exc.response["Error"]["Code"] == "NoSuchKey"):
                out.lost.append(f"{key}: GET without a version id answers {exc.response['Error']['Code']}")
    return out


def fill(client, rnd: random.Random, sizes: list[int]) -> VersionLedger:
    """One key per size: 2..4 versions of sizes around it, a marker on every third key (a
    version after it on every sixth), a noncurrent version deleted by id on every fourth, tags
    on every fifth."""
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    ledger = VersionLedger()
    for i, size in enumerate(sizes):
        key = f"v/{i:03d}-{size}"
        for _ in range(rnd.randint(2, 4)):
            ledger.put(client, key, rnd.choice([size, max(1, size // 3), size + rnd.randrange(200 * KiB)]))
        if i % 4 == 1:
            ledger.delete_version(client, key, ledger.keys[key][1])
        if i % 5 == 2:
            ledger.tag(client, key, ledger.keys[key][-1], {"i": str(i), "kind": "oldest"})
        if i % 3 == 0:
            ledger.mark(client, key)
            if i % 6 == 0:
                ledger.put(client, key, size)
    return ledger


def version_shards(disks: list[Path], key: str, vid: str) -> list[Shard]:
    """Every readable shard of version ``vid`` of ``key`` (metadata files or log records)."""
    return sorted((s for s in all_shards(disks, BUCKET, key) if s.meta.get("vid") == vid), key=lambda s: s.slot)


def judge(tally: FaultTally, check: Check, what: str) -> None:
    tally.objects_lost += len(check.lost)
    tally.wrong_bytes += len(check.wrong)
    tally.note(f"{what}: {check.summary()}")
    assert not check.lost and not check.wrong and not check.errors, check.summary()


def damage_versions(servers, tally: FaultTally, sizes: list[int], seed: int) -> tuple[ServerProcess, VersionLedger]:
    """Fill, damage one random version (any, noncurrent too) of most keys on 1..m slots, read
    every version back with the damage in place, heal offline, check every file rebuilt."""
    seed = seed_from_env(seed)
    rnd = random.Random(seed)
    tally.note(f"seed {seed} (BUCKETS_FAULT_SEED reproduces it)")
    disks = servers.disks(4)
    server = servers.start(disks)
    client = server.client()
    ledger = fill(client, rnd, sizes)
    tally.objects_written += ledger.versions()
    faults = []
    for key, versions in ledger.keys.items():
        data = [v for v in versions if not v.marker]
        if not data or rnd.random() > 0.8:
            continue
        shards = version_shards(disks, key, rnd.choice(data).vid)
        assert len(shards) == len(disks), f"{key}: a shard on every disk expected, found {len(shards)}"
        faults += [rnd.choice(DAMAGE)(s, rnd) for s in rnd.sample(shards, rnd.randint(1, 2))]
    tally.faults_injected += len(faults)
    tally.note(f"{ledger.versions()} versions of {len(ledger.keys)} keys; {len(faults)} faults in "
               f"{len({f.key for f in faults})} keys")
    judge(tally, check_versions(client, ledger), "every version by id with the damage in place")
    wait_quiet(server)
    healed = {(key, int(s)) for b, key, slots in HEALED.findall(server.log_text())
              if b == BUCKET for s in slots.replace(" ", "").split(",") if s}
    assert server.stop() == 0
    bugs = server_bugs(server.log_text())
    report = heal_pass(server.disk_paths)
    found = healed | {(key, slot) for (_b, key), slots in report.bad.items() for slot in slots}
    tally.faults_detected += sum(1 for f in faults if (f.key, f.slot) in found)
    not_restored = [f for f in faults if not restored(f)]
    tally.repaired += len(faults) - len(not_restored)
    tally.note(f"heal: {len(healed)} slots healed on-line, offline pass {report.stats}; "
               f"{len(not_restored)} damaged files not rebuilt exactly")
    assert not not_restored, [(f.key, f.slot, f.kind, str(f.path)) for f in not_restored[:5]]
    assert {(f.key, f.slot) for f in faults} <= found
    assert not report.failed and report.cycle_bad_after == 0, (report.failed, report.cycle_bad_after)
    assert not bugs, "server logged bugs:\n" + "\n".join(bugs[:10])
    server = servers.restart(server)
    judge(tally, check_versions(server.client(), ledger), "every version by id after the heal pass")
    return server, ledger


def rebuild_registry(servers, tally: FaultTally, server: ServerProcess, ledger: VersionLedger) -> ServerProcess:
    """Stop, delete the registry, restart: the rebuild restores every version, marker and tag."""
    assert server.stop() == 0
    registry = [d / REGISTRY_DIR for d in server.disks]
    gone = [r for r in registry if r.is_dir()]
    assert gone, f"no registry found under {registry}"
    for r in gone:
        shutil.rmtree(r)
    tally.faults_injected += 1
    server = servers.restart(server)
    rebuilt = server.wait_log(r"registry was missing: rebuilt from disk metadata \((.*)\)", timeout=30)
    tally.faults_detected += 1
    tally.note(f"registry deleted; the restart rebuilt it: {rebuilt.group(1)}")
    judge(tally, check_versions(server.client(), ledger), "every version by id after the registry rebuild")
    tally.repaired += 1
    return server


# inline, around the inline limit, one block, several blocks (each key's versions vary around it)
FAST_SIZES = [100, 4 * KiB, 128 * KiB + 1, 300 * KiB, MiB + 1, 64 * KiB]


def test_versions_survive_damage_and_a_registry_rebuild(servers, tally) -> None:
    """Fast: one key per edge size, versions damaged by flips and deletions, then the
    registry deleted and rebuilt."""
    server, ledger = damage_versions(servers, tally, FAST_SIZES, seed=505)
    server = rebuild_registry(servers, tally, server, ledger)
    assert server.stop() == 0
    assert not server_bugs(server.log_text())


@pytest.mark.faults
def test_versions_campaign_with_a_disk_wipe(servers, tally) -> None:
    """Many keys of random sizes; versions damaged; a disk wiped under the running server
    and refilled (every version's shards); the registry deleted and rebuilt."""
    rnd = random.Random(13)
    sizes = EDGE_SIZES + [rnd.choice([rnd.randrange(1, 128 * KiB), rnd.randrange(128 * KiB, 3 * MiB)])
                          for _ in range(40)]
    server, ledger = damage_versions(servers, tally, sizes, seed=606)
    victim = server.disks[2]
    mark = len(server.log_text())
    destroyed = wipe(victim, BUCKET)
    tally.faults_injected += 1
    tally.note(f"wiped {victim.name}: {destroyed} shards destroyed")
    judge(tally, check_versions(server.client(), ledger), "every version by id right after the wipe")
    refilled = server.wait_log(rf"refill of {re.escape(str(victim))} (finished: (\d+) shards rebuilt|failed)",
                               timeout=120, start=mark)
    assert refilled.group(1) != "failed", server.log_text()[mark:][-3000:]
    tally.faults_detected += 1
    tally.note(f"refill: {refilled.group(2)} shards rebuilt")
    want = sum(len(version_shards([d], k, v.vid)) for d in server.disks[:1] for k, vs in ledger.keys.items()
               for v in vs)
    have = sum(len(version_shards([victim], k, v.vid)) for k, vs in ledger.keys.items() for v in vs)
    assert have == want, f"the refill restored {have} version shards on the wiped disk, disk 1 holds {want}"
    tally.repaired += 1
    judge(tally, check_versions(server.client(), ledger), "every version by id after the refill")
    server = rebuild_registry(servers, tally, server, ledger)
    assert server.stop() == 0
    assert not server_bugs(server.log_text())
