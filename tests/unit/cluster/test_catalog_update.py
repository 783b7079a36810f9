"""``ClusterCatalog.update_version`` (tags, retention, legal hold, ACL of one version): the
change lands only while the key still holds that version.

Three index replicas in one process (the harness of test_index_replication.py), two
coordinators' catalogs over them: n1 changes a version while n2 writes the key."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from test_index_replication import NODES, entry, held, settle, start_trio, stop_trio

from buckets.cluster.catalog import ClusterCatalog


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


async def test_a_change_of_a_version_replaced_meanwhile_leaves_the_new_object(trio) -> None:
    """Before, the change was a quorum read of the key, then a put of the changed entry: a
    PUT acknowledged through another node between the two was replaced by the older object
    with its new tags (the acknowledged object lost: this test failed). Now the change is a
    checked write: it lands before the PUT (which waits for it), or finds the new object
    there and changes nothing (the engine then reads the key again and changes the new one)."""
    net, idx, regs = trio
    ctl = control()
    through_n1, through_n2 = ClusterCatalog(ctl, idx["n1"]), ClusterCatalog(ctl, idx["n2"])
    await through_n1.put_object("b", "k", entry("old"))
    await settle(idx)
    seen_before = await through_n1.get_object("b", "k")
    racing = write_through_n2_first(net, lambda: through_n2.put_object("b", "k", entry("new")))
    await through_n1.update_version("b", "k", dict(seen_before, tg={"team": "a"}))
    assert racing, "the racing PUT never ran"
    await asyncio.wait_for(racing[0], 30)  # acknowledged
    net.before = None
    await settle(idx)
    for n in NODES:
        assert held(regs, n)[0] == "new", n
    for catalog in (through_n1, through_n2):
        assert (await catalog.get_object("b", "k"))["wid"] == "new"


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


async def test_removing_the_current_version_while_a_new_one_lands_keeps_the_new_one(trio) -> None:
    """DeleteObject with the current version's id: the next newest version became current
    with an unconditional put, over a version acknowledged meanwhile through another node
    (which, current and without a version record yet, was then gone: this test failed). Now
    the promotion is a checked write over the version removed; the new version stays
    current, and the record the new write made of the removed one goes too."""
    net, idx, regs = trio
    ctl = control({"versioning": "Enabled"})
    through_n1, through_n2 = ClusterCatalog(ctl, idx["n1"]), ClusterCatalog(ctl, idx["n2"])
    v1, v2, v3 = (dict(entry(w), vid=w) for w in ("v1", "v2", "v3"))
    await through_n1.put_version("b", "k", v1)
    await through_n1.put_version("b", "k", v2)  # v1 gets its record; v2 is current, without one
    await settle(idx)
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
