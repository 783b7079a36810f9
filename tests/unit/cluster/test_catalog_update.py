"""``ClusterCatalog.update_version`` (tags, retention, legal hold, ACL of one version): the
change lands only while the key still holds that version.

Three index replicas in one process (the harness of test_index_replication.py), two
coordinators' catalogs over them: n1 changes a version while n2 writes the key."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from test_index_replication import NODES, entry, held, settle, start_trio, stop_trio

from buckets import errors
from buckets.cluster.catalog import DELETING, DELETING_SECONDS, ClusterCatalog


def control(settings: dict | None = None) -> SimpleNamespace:
    """What the catalog reads of the control plane here: bucket ``b``'s record."""
    bucket = SimpleNamespace(created=1.0, owner="", settings=settings or {})
    return SimpleNamespace(snapshot=SimpleNamespace(buckets={"b": bucket}))


@pytest.fixture
async def trio(tmp_path):
    net, idx, regs = await start_trio(tmp_path, leases=False)
    yield net, idx, regs
    await stop_trio(idx, regs)


def write_through_n2_first(net, write) -> list[asyncio.Future]:
    """At n1's first ``lock`` or ``merge`` call, ``write()`` through n2 starts, and that call
    reaches its replica once the write is acknowledged: a PUT landing after n1 read the key
    and before n1 writes it. (A checked write needs only a quorum of locks: n1 goes on with
    its own replica's and n3's, and the PUT then waits at those locked replicas.) The write,
    as a future, once started."""
    racing: list[asyncio.Future] = []

    async def before(src: str, node: str, method: str, args: dict) -> None:
        if src == "n1" and method in ("lock", "merge") and not racing:
            racing.append(asyncio.ensure_future(write()))
            await asyncio.wait({racing[0]}, timeout=10)

    net.before = before
    return racing


@pytest.mark.parametrize("clocks", ["real", "tied"])
async def test_a_change_of_a_version_replaced_meanwhile_leaves_the_new_object(tmp_path, clocks) -> None:
    """Before, the change was a quorum read of the key, then a put of the changed entry: a
    PUT acknowledged through another node between the two was replaced by the older object
    with its new tags (the acknowledged object lost: this test failed). Now the change is a
    checked write: it lands before the PUT (which waits for it), or finds the new object
    there and changes nothing (the engine then reads the key again and changes the new one).

    The PUT is written as the engine writes a blind PUT on a cluster: no read first, its
    order after the writes acknowledged before it coming from the replicas' refusals
    (``put_displacing``). ``tied``: every node's wall clock reads the same, so the PUT's first
    version ties with the old object's and loses the tie on the write id; n2's clock does not
    see the versions its replica merges, as when the writer's own replica had not received the
    old object yet (or the writer is not one of the bucket's replicas). (The test wrote a
    plain ``put`` without a read, which the engine never does: it failed in 2 of 150 runs on
    a loaded machine, the PUT acknowledged as older than the object it followed.)"""
    walls = {n: (lambda: 1000.0) for n in NODES} if clocks == "tied" else None
    net, idx, regs = await start_trio(tmp_path, walls, leases=False)
    if clocks == "tied":
        idx["n2"].local.observe = None
    try:
        ctl = control()
        through_n1, through_n2 = ClusterCatalog(ctl, idx["n1"]), ClusterCatalog(ctl, idx["n2"])
        await through_n1.put_object("b", "k", entry("old"))
        await settle(idx)
        seen_before = await through_n1.get_object("b", "k")
        racing = write_through_n2_first(net, lambda: through_n2.put_object("b", "k", entry("new"), displaced=True))
        await through_n1.update_version("b", "k", dict(seen_before, tg={"team": "a"}))
        assert racing, "the racing PUT never ran"
        await asyncio.wait_for(racing[0], 30)  # acknowledged
        net.before = None
        await settle(idx)
        for n in NODES:
            assert held(regs, n)[0] == "new", n
        for catalog in (through_n1, through_n2):
            assert (await catalog.get_object("b", "k"))["wid"] == "new"
    finally:
        await stop_trio(idx, regs)


async def test_a_change_of_the_current_version_lands_on_every_replica(trio) -> None:
    net, idx, regs = trio
    ctl = control()
    catalog = ClusterCatalog(ctl, idx["n1"])
    await catalog.put_object("b", "k", entry("w1"))
    current = await catalog.get_object("b", "k")
    assert await catalog.update_version("b", "k", dict(current, tg={"x": "1"}, lh=True)) is True
    await settle(idx)
    for n in NODES:
        got, _ = regs[n].get_version("b", "k")
        assert got["wid"] == "w1" and got["tg"] == {"x": "1"} and got["lh"] is True, n
    assert await catalog.update_version("b", "k", dict(current, wid="gone")) is False


async def _two_versions(idx) -> tuple[ClusterCatalog, ClusterCatalog, dict]:
    """A versioned bucket whose key ``k`` has v1 (with its version record) and v2 (current,
    without one yet); catalogs through n1 and n2; the entry of a third version, v3."""
    ctl = control({"versioning": "Enabled"})
    through_n1, through_n2 = ClusterCatalog(ctl, idx["n1"]), ClusterCatalog(ctl, idx["n2"])
    v1, v2, v3 = (dict(entry(w), vid=w) for w in ("v1", "v2", "v3"))
    await through_n1.put_version("b", "k", v1)
    await through_n1.put_version("b", "k", v2)
    await settle(idx)
    return through_n1, through_n2, v3


async def test_removing_the_current_version_while_a_new_one_lands_keeps_the_new_one(trio) -> None:
    """DeleteObject with the current version's id: the next newest version became current
    with an unconditional put, over a version acknowledged meanwhile through another node
    (which, current and without a version record yet, was then gone: this test failed). Now
    the promotion is a checked write over the version removed; the new version stays
    current, and the record the new write made of the removed one goes too."""
    net, idx, regs = trio
    through_n1, through_n2, v3 = await _two_versions(idx)
    racing = write_through_n2_first(net, lambda: through_n2.put_version("b", "k", v3))
    removed = await through_n1.delete_version("b", "k", "v2")
    assert removed is not None and removed["wid"] == "v2"
    assert racing, "the racing PUT never ran"
    await asyncio.wait_for(racing[0], 30)
    net.before = None
    await settle(idx)
    for catalog in (through_n1, through_n2):
        assert (await catalog.get_object("b", "k"))["wid"] == "v3"
        assert await catalog.get_version("b", "k", "v2") is None
        assert (await catalog.get_version("b", "k", "v1"))["wid"] == "v1"


async def test_a_version_removed_after_a_new_write_read_the_key_stays_removed(trio) -> None:
    """A versioned PUT through n2 reads the key (v2 current, without a version record yet),
    then DeleteObject of v2 through n1 runs, then the PUT writes its records: it found no
    record of v2 and wrote one, after the removal had deleted what was there. The removed
    version came back, in the listing and to a GET by its id (this test failed). Now the PUT
    reads the key and writes its records under the key's lock on its replicas (a checked write
    that judges nothing), so the removal's promotion waits for it and then removes that record."""
    net, idx, regs = trio
    through_n1, through_n2, v3 = await _two_versions(idx)
    removal: list[asyncio.Future] = []

    async def before(src: str, node: str, method: str, args: dict) -> None:
        # n2's first look at the key's version records: the PUT has read the key already.
        if src == "n2" and method == "scan" and not removal:
            removal.append(asyncio.ensure_future(through_n1.delete_version("b", "k", "v2")))
            await asyncio.wait({removal[0]}, timeout=1.5)  # done, or waiting for the PUT's lock

    net.before = before
    await through_n2.put_version("b", "k", v3)
    assert removal, "the removal never ran"
    removed = await asyncio.wait_for(removal[0], 30)
    net.before = None
    assert removed is not None and removed["wid"] == "v2"
    await settle(idx)
    for catalog in (through_n1, through_n2):
        assert (await catalog.get_object("b", "k"))["wid"] == "v3"
        assert await catalog.get_version("b", "k", "v2") is None
        assert (await catalog.get_version("b", "k", "v1"))["wid"] == "v1"
        assert [e["vid"] for e in await catalog.noncurrent_versions("b", "k")] == ["v1"]


# -- writes into a bucket that a DeleteBucket through another node is deleting ------------------
def _mark(ctl: SimpleNamespace) -> None:
    ctl.snapshot.buckets["b"].settings[DELETING] = time.time() + DELETING_SECONDS


def _then(ctl: SimpleNamespace, outcome: str) -> None:
    """The deletion's outcome as this node applies it: the bucket stays (its mark removed:
    it was not empty) or goes."""
    if outcome == "stays":
        ctl.snapshot.buckets["b"].settings.pop(DELETING)
    else:
        del ctl.snapshot.buckets["b"]


@pytest.mark.parametrize("outcome", ["stays", "goes"])
@pytest.mark.parametrize("when", ["before", "during"])
async def test_a_write_that_meets_a_deletion_waits_for_its_outcome(trio, when, outcome) -> None:
    """The mark applied before the write starts, or while its entry is being stored (at its
    first merge): the write waits. The bucket stays: the write is acknowledged (session 30
    answered 409 OperationAborted or 503 SlowDown although a DeleteBucket that finds the bucket
    not empty changes nothing; the cluster fuzz found those 503s). The bucket goes:
    NoSuchBucket, and the write is not acknowledged."""
    net, idx, regs = trio
    ctl = control()
    catalog = ClusterCatalog(ctl, idx["n1"])
    await _meets_deletion(net, ctl, when, outcome, lambda: catalog.put_object("b", "k", entry("w1")))
    if outcome == "stays":
        assert (await catalog.get_object("b", "k"))["wid"] == "w1"


async def _meets_deletion(net, ctl: SimpleNamespace, when: str, outcome: str, write) -> None:
    """``write()`` with a DeleteBucket's mark applied ``before`` it or ``during`` it (at its
    first lock or merge), the deletion's ``outcome`` 0.2 s later: the write waits for it, and
    is acknowledged if the bucket stays, ``NoSuchBucket`` if it goes."""
    loop = asyncio.get_running_loop()
    if when == "before":
        _mark(ctl)
    else:
        marked: list[bool] = []

        async def before(src: str, node: str, method: str, args: dict) -> None:
            if method in ("lock", "merge") and not marked:
                marked.append(True)
                _mark(ctl)

        net.before = before
    later = loop.call_later(0.2, _then, ctl, outcome)
    started = loop.time()
    try:
        if outcome == "stays":
            await write()
        else:
            with pytest.raises(errors.NoSuchBucket):
                await write()
    finally:
        later.cancel()
        net.before = None
    assert loop.time() - started >= 0.15  # it waited for the outcome


async def test_a_write_waits_for_a_deletion_only_so_long(trio, monkeypatch) -> None:
    """A deletion whose node died mid-way leaves its mark until it expires: a write that meets
    it answers 503 SlowDown after ``DELETING_WAIT`` rather than wait the mark out."""
    import buckets.cluster.catalog as catalog_module

    net, idx, regs = trio
    monkeypatch.setattr(catalog_module, "DELETING_WAIT", 0.1)
    ctl = control()
    _mark(ctl)
    with pytest.raises(errors.SlowDown):
        await ClusterCatalog(ctl, idx["n1"]).put_object("b", "k", entry("w1"))
    assert held(regs, "n1")[0] is None


CHANGES = {
    "tags": lambda c, current: c.update_version("b", "k", dict(current, tg={"x": "1"})),
    "version removal": lambda c, current: c.delete_version("b", "k", current["vid"]),
}


@pytest.mark.parametrize("outcome", ["stays", "goes"])
@pytest.mark.parametrize("when", ["before", "during"])
@pytest.mark.parametrize("kind", sorted(CHANGES))
async def test_a_change_of_an_object_that_meets_a_deletion_waits_for_its_outcome(trio, kind, when, outcome) -> None:
    """A change of an object's entry (its tags; the removal of its current version, which
    makes the one before current) while a DeleteBucket's mark stands on every node: each
    replica refuses the changed entry. The change waits for the deletion's outcome as a new
    object does. The bucket stays (it was not empty): the change lands. The bucket goes:
    NoSuchBucket. Before, it answered 503 "Index quorum lost" at once (the cluster HTTP
    fuzzer found a DeleteObjectTagging racing a DeleteBucket)."""
    net, idx, regs = trio
    ctl = control({"versioning": "Enabled"} if kind == "version removal" else None)

    async def read(*, linearizable: bool = False, timeout: float | None = None) -> SimpleNamespace:
        return ctl.snapshot  # (this node applied the mark as its replicas did: nothing to catch up)

    ctl.read = read
    catalog = ClusterCatalog(ctl, idx["n1"])
    if kind == "version removal":
        for w in ("v1", "v2"):
            await catalog.put_version("b", "k", dict(entry(w), vid=w))
    else:
        await catalog.put_object("b", "k", entry("w1"))
    await settle(idx)
    current = await catalog.get_object("b", "k")
    for n in NODES:
        net.replicas[n].bucket_deleting = lambda name: "b" in ctl.snapshot.buckets and \
            DELETING in ctl.snapshot.buckets["b"].settings
    await _meets_deletion(net, ctl, when, outcome, lambda: CHANGES[kind](catalog, current))
    if outcome == "stays":
        now = await catalog.get_object("b", "k")
        assert (now["wid"] == "v1") if kind == "version removal" else (now["tg"] == {"x": "1"})


# -- a node that a DeleteBucket did not wait for -----------------------------------------------
# The deleting node waits for every node that answers it to apply its mark, then checks the
# bucket is empty. A node that does not answer it (partitioned from it, or too slow) is not
# waited for, and may not have applied the mark: here n1, writing through replicas n2 and n3,
# which applied it. Their refusal of new entries is what keeps such a write from being
# acknowledged into a bucket the check found empty (before, every one of these writes was).
WRITES = {
    "put": lambda c: c.put_object("b", "k", entry("w1")),
    "displacing": lambda c: c.put_object("b", "k", entry("w1"), displaced=True),
    "checked": lambda c: c.put_object_checked("b", "k", entry("w1"), lambda current: None),
    "version": lambda c: c.put_version("b", "k", dict(entry("w1"), vid="w1")),
    "upload": lambda c: c.create_upload("b", "k", {"init": 1.0}),
}


def _stored(regs, node: str, kind: str) -> bool:
    space = "b\x01uploads" if kind == "upload" else "b"
    got, _ = regs[node].get_version(space, "k")
    return got is not None


def _lagging(net, kind: str, on_read) -> tuple[SimpleNamespace, dict[str, bool]]:
    """n1's control plane without the mark (``on_read(ctl)`` runs at its linearizable read);
    which replicas' nodes applied it (n2 and n3), changeable by the test."""
    ctl = control({"versioning": "Enabled"} if kind == "version" else None)

    async def read(*, linearizable: bool = False, timeout: float | None = None) -> SimpleNamespace:
        await on_read(ctl)
        return ctl.snapshot

    ctl.read = read
    marked = {"n1": False, "n2": True, "n3": True}
    for n in NODES:
        net.replicas[n].bucket_deleting = lambda name, n=n: marked[n]
    return ctl, marked


@pytest.mark.parametrize("kind", sorted(WRITES))
async def test_a_node_cut_off_from_a_deletion_has_no_write_acknowledged_into_the_bucket(trio, kind) -> None:
    """n1 cannot reach the control plane either (its read fails): 503, and the entry is on
    no replica that applied the mark."""
    net, idx, regs = trio

    async def cut_off(ctl: SimpleNamespace) -> None:
        raise errors.ServiceUnavailable("no quorum reachable")

    ctl, _ = _lagging(net, kind, cut_off)
    with pytest.raises(errors.SlowDown):
        await WRITES[kind](ClusterCatalog(ctl, idx["n1"]))
    await settle(idx)
    assert not _stored(regs, "n2", kind) and not _stored(regs, "n3", kind)


@pytest.mark.parametrize("outcome", ["stays", "goes", "under way"])
@pytest.mark.parametrize("kind", sorted(WRITES))
async def test_a_node_behind_a_deletion_catches_up_and_writes_again(trio, kind, outcome) -> None:
    """n1 reads the control plane once refused: the deletion failed (the bucket stays: the
    write is acknowledged, written again), the bucket went (``NoSuchBucket``), or it is still
    under way (n1 now has the mark: it waits for the outcome, the bucket stays, then writes)."""
    net, idx, regs = trio
    reads: list[float] = []
    loop = asyncio.get_running_loop()

    async def catch_up(ctl: SimpleNamespace) -> None:
        reads.append(loop.time())
        if outcome == "stays":
            marked.update(n2=False, n3=False)
        elif outcome == "goes":
            del ctl.snapshot.buckets["b"]
        else:
            _mark(ctl)

            def ends() -> None:
                marked.update(n2=False, n3=False)
                _then(ctl, "stays")
            loop.call_later(0.2, ends)

    ctl, marked = _lagging(net, kind, catch_up)
    catalog = ClusterCatalog(ctl, idx["n1"])
    if outcome == "goes":
        with pytest.raises(errors.NoSuchBucket):
            await WRITES[kind](catalog)
    else:
        await WRITES[kind](catalog)
        await settle(idx)
        assert all(_stored(regs, n, kind) for n in NODES)
        if outcome == "under way":
            assert loop.time() - reads[0] >= 0.15  # it waited for the outcome
    assert len(reads) == 1


async def test_a_part_written_again_after_a_deletions_refusal_replaced_nothing(trio) -> None:
    """A part's record refused by n2 and n3 (they applied a DeleteBucket's mark, n1 had not) but
    taken by n1's own replica; n1 catches up (the bucket stays) and writes it again. That
    second write read the record the first had left on n1 and answered it as the part it
    replaced: the engine then removed the files of the part it had just recorded (found by the
    cluster HTTP fuzzer: an acknowledged part, then a Complete that found none of its files)."""
    net, idx, regs = trio

    async def catch_up(ctl: SimpleNamespace) -> None:
        marked.update(n2=False, n3=False)

    ctl, marked = _lagging(net, "upload", catch_up)
    catalog = ClusterCatalog(ctl, idx["n1"])
    first, second = ["pwid-1", 100, "etag-1", {}, 1.0], ["pwid-2", 200, "etag-2", {}, 2.0]
    for _ in range(5):  # (whichever two replicas the second attempt's read asks)
        assert await catalog.put_part("b", "upl", 1, first) is None
        assert await catalog.put_part("b", "upl", 1, second) == first  # a real replacement is named
        await catalog.delete_upload("b", "upl")
        marked.update(n2=True, n3=True)


async def test_a_deletions_emptiness_check_lists_only_replicas_that_applied_its_mark(trio) -> None:
    net, idx, regs = trio
    marked = {"n1": True, "n2": False, "n3": False}
    for n in NODES:
        net.replicas[n].bucket_deleting = lambda name, n=n: marked[n]
    with pytest.raises((errors.ReadQuorumLost, errors.ServiceUnavailable)):
        await idx["n1"].list("b", limit=1, markers=True, deleting=True)
    assert await idx["n1"].list("b", limit=1, markers=True) == ([], [], False)  # (other listings: as before)
    marked["n2"] = True
    assert await idx["n1"].list("b", limit=1, markers=True, deleting=True) == ([], [], False)


async def test_a_checked_write_locked_before_the_mark_and_refused_at_commit_is_not_written_again(trio) -> None:
    """Its commit may stand where it was not refused: its outcome is open (503), and it is not
    written again as a new write (a retry would judge the key holding its own first commit)."""
    net, idx, regs = trio
    reads: list[int] = []

    async def catch_up(ctl: SimpleNamespace) -> None:
        reads.append(1)

    ctl, marked = _lagging(net, "checked", catch_up)
    marked.update(n2=False, n3=False)

    async def before(src: str, node: str, method: str, args: dict) -> None:
        if method == "merge":
            marked.update(n2=True, n3=True)  # applied between the locks and the commit

    net.before = before
    with pytest.raises(errors.WriteQuorumLost) as raised:
        await WRITES["checked"](ClusterCatalog(ctl, idx["n1"]))
    net.before = None
    assert not isinstance(raised.value, errors.BucketBeingDeleted) and reads == []


async def test_a_versioned_write_refused_after_its_record_leaves_no_version(trio, monkeypatch) -> None:
    """A versioned PUT writes its version record under the key's locks, then commits. Refused
    between the two (the locks held too long, or the bucket's index moving: 503 SlowDown),
    nothing is committed and the engine removes the write's data; its record stayed, and
    ListObjectVersions listed a version that no GET could read and no migration could move
    (tests/cluster/test_growth_versions.py). Now the record goes with the refusal."""
    from buckets.cluster import index as index_module
    from buckets.cluster.catalog import VERSIONS

    _net, idx, _regs = trio
    catalog = ClusterCatalog(control({"versioning": "Enabled"}), idx["n1"])
    first = dict(entry("w1"), vid="v1")
    await catalog.put_version("b", "k", first)
    monkeypatch.setattr(index_module, "KEY_LOCK_SECONDS", 0.4)
    write_records = catalog._put_version_records

    async def slow_records(*args):  # the records written, then the commit too late for the locks
        replaced = await write_records(*args)
        await asyncio.sleep(0.3)
        return replaced

    monkeypatch.setattr(catalog, "_put_version_records", slow_records)
    with pytest.raises(errors.SlowDown):
        await catalog.put_version("b", "k", dict(entry("w2"), vid="v2"))
    monkeypatch.undo()
    records, _, _ = await idx["n2"].list("b" + VERSIONS, "k\0", "", "", 10, full=True, markers=True)
    assert [e["wid"] for _, e in records] == ["w1"]
    assert (await idx["n3"].get("b", "k"))["wid"] == "w1"
