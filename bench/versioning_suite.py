"""Versioning suite: the same S3 load on an unversioned bucket and a versioned (Enabled) one.

One real server (``python -m buckets server --sync on`` on four fresh temporary disks) holds
both buckets, ``plain`` (never versioned) and ``versioned`` (PutBucketVersioning Enabled);
the client is the http suite's (aiohttp, every request signed by botocore's S3SigV4Auth).
Each phase runs on ``plain`` first, then on ``versioned``, from 16 concurrent clients:

- 4 KiB PUT of new keys, then two rounds of overwrites of the same keys (the versioned
  bucket then holds 2, then 3 versions of every key; the plain one keeps 1);
- GET of the latest version; GET by versionId (versioned only) of each key's oldest
  (noncurrent) version and of its current version;
- DELETE without a version id (the versioned bucket gets a delete marker on top of the
  3 versions; the plain one removes the object);
- one "hot" key overwritten sequentially (one client) in each bucket, so the versioned one
  ends with hundreds of versions of it: PUT latency of the first and the last writes, and GET
  by versionId of its oldest version. A cost that grows with the number of versions of a key
  shows here, not in the 3-version phases.

Listing, on a second server (``--sync off``, its own disks): N keys (as the http suite's
listing, 100k) in each bucket, 3 versions of each key in ``versioned``. The entries are filed
straight into the stopped server's registry, in the order real writes make them (3 rounds
of ``put_version`` over all keys), exactly as ``--http-populate registry`` does for the http
suite: 400k real PUTs would take far longer than this suite's budget. Listing reads only the
registry, so it measures the same path. Then ListObjectsV2 keys/s on both buckets and
ListObjectVersions versions/s on both (pages of 1000, every page's XML parsed; median of runs).

Every server is stopped by its pid. If a server cannot start the suite is skipped, not failed.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

from bench.http_suite import (ACCESS_KEY, POPULATE_CONCURRENCY, SECRET_KEY, ServerProcess, ServerUnavailable,
                              _add_run, _Phase, _wait_ready)
from bench.measure import KiB, LatencyRun, ScratchDir, payload, run_async, run_concurrently
from bench.report import SuiteResult

PLAIN = "plain"
VERSIONED = "versioned"
CONCURRENCY = 16
VERSIONS_PER_KEY = 3
LIST_RUNS = 3
LIST_RUN_BUDGET = 20.0  # seconds: no further run of a listing once its runs took this long


async def _serve(server: ServerProcess, body) -> None:
    """Start ``server``, create both buckets (versioning Enabled on one), run ``body(client)``,
    always stop the server by pid."""
    import aiohttp

    from bench.s3client import SignedS3Client

    server.start()
    try:
        connector = aiohttp.TCPConnector(limit=POPULATE_CONCURRENCY + 4)
        timeout = aiohttp.ClientTimeout(total=600, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
            client = SignedS3Client(session, server.endpoint, ACCESS_KEY, SECRET_KEY)
            await _wait_ready(server, client)
            await client.create_bucket(PLAIN)
            await client.create_bucket(VERSIONED)
            await client.put_bucket_versioning(VERSIONED, "Enabled")
            await body(client)
    finally:
        server.stop()


def _label(bucket: str) -> str:
    return "versioned" if bucket == VERSIONED else "unversioned"


def _ratio(result: SuiteResult, name: str, plain: LatencyRun, versioned: LatencyRun) -> None:
    if plain.ops and versioned.ops and plain.ops_per_second > 0:
        result.add(f"  {name}: versioned / unversioned", versioned.ops_per_second / plain.ops_per_second, "x",
                   note="" if not versioned.p50_ms() else
                   f"p50 {versioned.p50_ms() / plain.p50_ms():.2f}x, p99 {versioned.p99_ms() / plain.p99_ms():.2f}x")


async def _timed(result: SuiteResult, server: ServerProcess, client, name: str, fn, count: int) -> LatencyRun:
    phase = _Phase(server, client)
    run = await run_concurrently(fn, count, CONCURRENCY)
    _add_run(result, name, run, "ops/s", run.ops_per_second, note=phase.note(run.ops))
    return run


async def _small_ops(result: SuiteResult, server: ServerProcess, client, count: int, hot: int) -> None:
    body = payload(4 * KiB)
    ids: list[list[str | None]] = []  # ids[round][i]: version id of small/i written in that round

    def key(i: int) -> str:
        return f"small/{i:07d}"

    rounds = ("PUT new keys", "overwrite (2nd version)", "overwrite (3rd version)")
    for rnd, what in enumerate(rounds):
        runs = {}
        for bucket in (PLAIN, VERSIONED):
            got: list[str | None] = [None] * count

            async def put(i: int, bucket=bucket, got=got) -> None:
                got[i] = await client.put_versioned(bucket, key(i), body)

            runs[bucket] = await _timed(result, server, client, f"4 KiB {what}, {_label(bucket)}", put, count)
            if bucket == VERSIONED:
                missing = sum(1 for v in got if not v or v == "null")
                if missing > runs[bucket].failures:
                    result.notes.append(f"round {rnd + 1}: {missing} versioned PUTs answered no version id")
                ids.append(got)
        _ratio(result, f"4 KiB {what}", runs[PLAIN], runs[VERSIONED])

    async def check(n: int) -> None:
        if n != len(body):
            raise AssertionError(f"GET: {n} bytes, expected {len(body)}")

    runs = {}
    for bucket in (PLAIN, VERSIONED):
        async def get(i: int, bucket=bucket) -> None:
            await check(await client.get(bucket, key(i)))

        runs[bucket] = await _timed(result, server, client, f"4 KiB GET latest, {_label(bucket)}", get, count)
    _ratio(result, "4 KiB GET latest", runs[PLAIN], runs[VERSIONED])

    oldest, current = ids[0], ids[-1]

    async def get_oldest(i: int) -> None:
        await check(await client.get(VERSIONED, key(i), oldest[i]))

    async def get_current(i: int) -> None:
        await check(await client.get(VERSIONED, key(i), current[i]))

    by_id = await _timed(result, server, client, f"4 KiB GET by versionId, oldest of {VERSIONS_PER_KEY}",
                         get_oldest, count)
    await _timed(result, server, client, "4 KiB GET by versionId, current", get_current, count)
    if runs[PLAIN].ops and by_id.ops:
        result.add("  GET by versionId (oldest) / unversioned GET", by_id.ops_per_second / runs[PLAIN].ops_per_second,
                   "x")

    runs = {}
    for bucket in (PLAIN, VERSIONED):
        async def delete(i: int, bucket=bucket) -> None:
            _, marker = await client.delete(bucket, key(i))
            if marker != (bucket == VERSIONED):
                raise AssertionError(f"DELETE {bucket}/{key(i)}: x-amz-delete-marker {marker}")

        runs[bucket] = await _timed(result, server, client, f"DELETE, {_label(bucket)}"
                                    + (" (adds a delete marker)" if bucket == VERSIONED else ""), delete, count)
    _ratio(result, "DELETE", runs[PLAIN], runs[VERSIONED])

    await _hot_key(result, client, body, hot, [(key(i), oldest[i]) for i in range(count) if oldest[i]])


async def _hot_key(result: SuiteResult, client, body: bytes, hot: int, few: list[tuple[str, str]]) -> None:
    """One key overwritten ``hot`` times in a row, one client: does a PUT, or a GET of the oldest
    version by id, get slower as the key's versions pile up?"""
    window = max(10, hot // 10)
    for bucket in (PLAIN, VERSIONED):
        lat: list[float] = []
        vids: list[str | None] = []
        for n in range(hot):
            t0 = time.perf_counter()
            vids.append(await client.put_versioned(bucket, "hot", body))
            lat.append(time.perf_counter() - t0)
        head, tail = LatencyRun(latencies=lat[:window]), LatencyRun(latencies=lat[-window:])
        name = f"hot key, {_label(bucket)}: sequential PUT p50"
        result.add(f"{name}, writes 1-{window}", head.p50_ms(), "ms")
        result.add(f"{name}, writes {hot - window + 1}-{hot}", tail.p50_ms(), "ms",
                   note=f"{tail.p50_ms() / head.p50_ms():.2f}x the first writes; the key then has "
                        f"{hot if bucket == VERSIONED else 1} version(s)")
        if bucket == VERSIONED and hot >= 3 and all(vids):
            # Noncurrent versions all: the current one's bytes come from the registry's copy of
            # small objects, a noncurrent one's from the disks. The baseline is the oldest version
            # of keys with 3 versions and a delete marker (the 4 KiB phases' keys).
            p50 = {}
            for which, targets in ((f"oldest of a key's {VERSIONS_PER_KEY} (+ marker)", few[:window]),
                                   (f"newest noncurrent of {hot}", [("hot", vids[-2])] * window),
                                   (f"oldest of {hot}", [("hot", vids[0])] * window)):
                gets = LatencyRun()
                for name, version_id in targets:
                    t0 = time.perf_counter()
                    if await client.get(bucket, name, version_id) != len(body):
                        raise AssertionError(f"GET {name} by version id: wrong length")
                    gets.latencies.append(time.perf_counter() - t0)
                p50[which] = gets.p50_ms()
                first = next(iter(p50.values()))
                result.add(f"hot key, versioned: sequential GET by versionId, {which}, p50", p50[which], "ms",
                           note=f"{p50[which] / first:.2f}x a key with {VERSIONS_PER_KEY} versions" if len(p50) > 1 else "")


async def _populate_registry(result: SuiteResult, disks: list[str], count: int) -> None:
    """File ``count`` keys into ``plain`` and ``VERSIONS_PER_KEY`` versions of the same keys into
    ``versioned``, straight into the stopped server's registry, as the engine's writes do:
    ``put_object`` for the plain bucket, one ``put_version`` per write (id, order) for the other."""
    from buckets.registry import Op, Registry
    from buckets.storage.format import REGISTRY_DIR

    paths = [os.path.join(d, REGISTRY_DIR) for d in disks if os.path.exists(os.path.join(d, REGISTRY_DIR, "data.mdb"))]
    if len(paths) != 1:
        raise RuntimeError(f"expected one registry under the server's disks, found {len(paths)}")
    registry = Registry(paths[0], cache_size=0, sync=False)
    registry.start()
    try:
        now = time.time()
        vs0 = time.time_ns()
        for label, bucket, rounds, kind in (("unversioned", PLAIN, 1, "put_object"),
                                            ("versioned", VERSIONED, VERSIONS_PER_KEY, "put_version")):
            start = time.perf_counter()
            for rnd in range(rounds):
                for base in range(0, count, 1000):
                    ops = []
                    for i in range(base, min(count, base + 1000)):
                        entry = _entry(i, now, vs0 + rnd * count + i, kind == "put_version")
                        ops.append(Op(kind, bucket, _listing_key(i), entry))
                    await registry.commit(ops)
            result.add(f"populate {label}: registry entries filed directly", rounds * count /
                       (time.perf_counter() - start), "entries/s",
                       note="server stopped meanwhile; entries only, no object data")
    finally:
        await registry.close()


def _entry(i: int, now: float, vs: int, versioned: bool) -> dict:
    """The registry suite's realistic entry (as ``Store.put_object`` builds it for a 2+2 object),
    with its version order and, in the versioned bucket, a version id as the engine makes them.
    Ids come from one ``os.urandom`` call per entry: ``uuid4`` eight times over cost as much CPU
    as filing the entry, which on a busy 2-core machine doubles the populate time."""
    hexes = os.urandom(112).hex()
    size = 4 * KiB + i % 997
    etag = hexes[32:64]
    return {
        "vid": hexes[:32] if versioned else "null", "vs": vs, "wid": hexes[64:96], "mt": now, "size": size,
        "etag": etag, "h": {"content-type": "application/json"}, "um": {"source": "bench"}, "ck": {},
        "ckt": None, "ch": hexes[96:160], "sc": "STANDARD", "k": 2, "m": 2, "bs": 1 << 20,
        "disks": [hexes[160 + 16 * d:176 + 16 * d] for d in range(4)], "gen": 1, "inline": True,
        "parts": [[1, size, etag, {}, now]],
    }


def _listing_key(i: int) -> str:
    return f"logs/host-{i % 100:02d}/event-{i:08d}.json"


async def _list_runs(fn) -> tuple[list[float], list[float], float, int]:
    """Run one full listing ``fn()`` -> (items, page seconds, parse seconds) up to LIST_RUNS
    times (fewer once LIST_RUN_BUDGET has passed); returns (rates, page seconds, parse seconds, items per run)."""
    rates: list[float] = []
    pages: list[float] = []
    parse = 0.0
    items = 0
    began = time.perf_counter()
    for _ in range(LIST_RUNS):
        start = time.perf_counter()
        items, run_pages, run_parse = await fn()
        rates.append(items / (time.perf_counter() - start))
        pages += run_pages
        parse += run_parse
        if time.perf_counter() - began > LIST_RUN_BUDGET:
            break
    return rates, pages, parse, items


async def _listings(result: SuiteResult, server: ServerProcess, client, count: int) -> None:
    async def objects_v2(bucket: str):
        token, keys, pages, parse = None, 0, [], 0.0
        while True:
            t0 = time.perf_counter()
            page = await client.list_page(bucket, token)
            pages.append(time.perf_counter() - t0)
            parse += page.parse_seconds
            keys += len(page.keys)
            token = page.next_token
            if token is None:
                return keys, pages, parse

    async def versions(bucket: str):
        key_marker = vid_marker = None
        n, pages, parse = 0, [], 0.0
        while True:
            t0 = time.perf_counter()
            page = await client.list_versions_page(bucket, key_marker, vid_marker)
            pages.append(time.perf_counter() - t0)
            parse += page.parse_seconds
            n += page.versions + page.delete_markers
            key_marker, vid_marker = page.next_key_marker, page.next_version_id_marker
            if key_marker is None:
                return n, pages, parse

    for op, fn, unit, per_key in (("ListObjectsV2", objects_v2, "keys/s", {PLAIN: 1, VERSIONED: 1}),
                                  ("ListObjectVersions", versions, "versions/s",
                                   {PLAIN: 1, VERSIONED: VERSIONS_PER_KEY})):
        medians = {}
        for bucket in (PLAIN, VERSIONED):
            phase = _Phase(server, client)
            rates, pages, parse, items = await _list_runs(lambda: fn(bucket))
            expected = count * per_key[bucket]
            note = (phase.note(len(rates) * items, unit.split("/")[0][:-1])
                    + f"; client XML parse {parse / max(1, len(rates) * items) * 1e6:.1f} µs/item; "
                      f"{items:,} items, {len(rates)} run(s)")
            if items != expected:
                note += f"; WRONG COUNT: expected {expected:,}"
            name = f"{op} pages of 1000, {_label(bucket)}"
            medians[bucket] = statistics.median(rates)
            result.add(name, medians[bucket], unit, note=note, runs=[round(r) for r in rates], items=items)
            lrun = LatencyRun(latencies=pages)
            result.add(f"  {name} page p50", lrun.p50_ms(), "ms")
            result.add(f"  {name} page p99", lrun.p99_ms(), "ms")
        result.add(f"  {op}: versioned / unversioned", medians[VERSIONED] / medians[PLAIN], "x")


async def _suite(result: SuiteResult, base_dir: str | None, quick: bool) -> None:
    small = 300 if quick else 2000
    hot = 60 if quick else 1000
    listed = 2000 if quick else 100_000
    result.params.update(small_ops=small, small_object_bytes=4 * KiB, concurrency=CONCURRENCY,
                         hot_key_versions=hot, listing_keys=listed, listing_versions_per_key=VERSIONS_PER_KEY,
                         listing_populate="registry", client="aiohttp + botocore S3SigV4Auth",
                         buckets={PLAIN: "never versioned", VERSIONED: "versioning Enabled"})
    with ScratchDir(base_dir, "buckets-bench-versioning-") as scratch:
        synced = ServerProcess(scratch.sub("on1", "on2", "on3", "on4"), True, os.path.join(scratch.path, "on.log"))
        await _serve(synced, lambda c: _small_ops(result, synced, c, small, hot))

        disks = scratch.sub("off1", "off2", "off3", "off4")

        async def nothing(client) -> None:
            pass

        await _serve(ServerProcess(disks, False, os.path.join(scratch.path, "off.log")), nothing)
        await _populate_registry(result, disks, listed)
        lister = ServerProcess(disks, False, os.path.join(scratch.path, "off2.log"))
        await _serve(lister, lambda c: _listings(result, lister, c, listed))
    result.notes.append(
        f"one server (sync on, 4 disks) holds both buckets; each phase runs on the unversioned bucket first; "
        f"{CONCURRENCY} clients; after the overwrites the versioned bucket holds {VERSIONS_PER_KEY} versions of "
        f"each of the {small:,} keys, and the DELETE phase adds a delete marker on top")
    result.notes.append(f"listing: {listed:,} keys per bucket filed into a sync=off server's registry "
                        f"({VERSIONS_PER_KEY} versions each in the versioned bucket), no object data")


def run(quick: bool = False, base_dir: str | None = None, **_: object) -> SuiteResult:
    result = SuiteResult("versioning")
    try:
        run_async(_suite(result, base_dir, quick))
    except ServerUnavailable as exc:
        return SuiteResult("versioning", status="skipped", reason=f"server unavailable: {exc}", params=result.params)
    return result
