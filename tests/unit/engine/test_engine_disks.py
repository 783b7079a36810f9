"""Disks at open: one offline, a foreign directory, a disk of another deployment, a wiped
disk, disks given in another order; and the registry when the disk holding it is missing."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from engine_testkit import BLOCK, INLINE, content, eventually, get_bytes, staging_files

from buckets import Store, errors
from buckets.engine import paths
from buckets.storage.format import FORMAT_FILE, TMP_DIR

OPTS = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64)
OBJECTS = {f"obj{i}": content(f"obj{i}", s) for i, s in enumerate([0, 10, INLINE + 1, 3 * BLOCK + 7, 70000])}


async def populate(paths_: list[str]) -> None:
    store = await Store.open(paths_, **OPTS)
    try:
        await store.make_bucket("bkt")
        for key, data in OBJECTS.items():
            await store.put_object("bkt", key, data, len(data))
    finally:
        await store.close()


async def check_objects(store) -> None:
    for key, data in OBJECTS.items():
        assert await get_bytes(store, "bkt", key) == data, key
    assert [o.key for o in (await store.list_objects("bkt")).objects] == sorted(OBJECTS)


def make_offline(path: str) -> None:
    """A dead disk: its mount point is not a directory any more."""
    shutil.rmtree(path)
    with open(path, "w") as f:
        f.write("not a disk")


def restore(path: str, saved: str) -> None:
    os.unlink(path)
    shutil.move(saved, path)


@pytest.mark.parametrize("slot", [0, 1, 3])
async def test_one_disk_offline_at_open(tmp_disks, slot) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    saved = disks[slot] + ".saved"
    shutil.copytree(disks[slot], saved)
    make_offline(disks[slot])
    store = await Store.open(disks, **OPTS)
    try:
        assert store.layout == (2, 2) and store.disk_count == 4
        assert [d.online for d in store.disks] == [i != slot for i in range(4)]
        assert store.disks[slot].last_error
        infos = await store.disk_infos()
        assert [i.online for i in infos] == [i != slot for i in range(4)]
        await check_objects(store)
        # writes still work with 3 of 4 disks (write quorum k+1 = 3 for 2+2)
        fresh = content("fresh", 2 * BLOCK + 3)
        await store.put_object("bkt", "fresh", fresh, len(fresh))
        await store.put_object("bkt", "fresh-small", b"tiny", 4)
        assert await get_bytes(store, "bkt", "fresh") == fresh
    finally:
        await store.close()


@pytest.mark.parametrize("slot", [0, 1])
async def test_writes_made_while_a_disk_was_offline_survive_its_return(tmp_disks, slot) -> None:
    """Slot 0 holds the registry: while it is offline the store opens a new registry on the
    next disk; when it comes back, what was acknowledged meanwhile must still be visible."""
    disks = tmp_disks(4)
    await populate(disks)
    saved = disks[slot] + ".saved"
    shutil.copytree(disks[slot], saved)
    make_offline(disks[slot])
    store = await Store.open(disks, **OPTS)
    try:
        fresh = content("fresh", 2 * BLOCK + 3)
        await store.put_object("bkt", "fresh", fresh, len(fresh))
        await store.put_object("bkt", "fresh-small", b"tiny", 4)
        await store.delete_object("bkt", "obj1")
        await store.make_bucket("newbucket")
    finally:
        await store.close()
    restore(disks[slot], saved)
    store = await Store.open(disks, **OPTS)
    try:
        assert all(d.online for d in store.disks)
        assert await get_bytes(store, "bkt", "fresh") == fresh
        assert await get_bytes(store, "bkt", "fresh-small") == b"tiny"
        assert await store.bucket_exists("newbucket")
        with pytest.raises(errors.NoSuchKey):
            await store.head_object("bkt", "obj1")
    finally:
        await store.close()


async def test_two_disks_offline_is_still_readable_but_not_writable(tmp_disks) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    make_offline(disks[1])
    make_offline(disks[2])
    store = await Store.open(disks, **OPTS)
    try:
        await check_objects(store)
        with pytest.raises(errors.WriteQuorumLost) as exc:
            await store.put_object("bkt", "new", content("n", 3 * BLOCK), 3 * BLOCK)
        assert exc.value.status == 503
        with pytest.raises(errors.WriteQuorumLost):
            await store.put_object("bkt", "new-small", b"x", 1)
        with pytest.raises(errors.NoSuchKey):
            await store.head_object("bkt", "new")
        assert staging_files([disks[0], disks[3]]) == []
    finally:
        await store.close()


async def test_too_many_disks_offline_refuses_to_open(tmp_disks) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    for i in (0, 1, 2):
        make_offline(disks[i])
    with pytest.raises(errors.FormatError, match="usable|needed"):
        await Store.open(disks, **OPTS)


async def test_new_deployment_needs_every_disk(tmp_disks) -> None:
    disks = tmp_disks(4)
    os.makedirs(os.path.dirname(disks[2]), exist_ok=True)
    with open(disks[2], "w") as f:
        f.write("x")
    with pytest.raises(errors.FormatError, match="not a directory"):
        await Store.open(disks, **OPTS)


async def test_foreign_non_empty_directory_is_refused(tmp_disks) -> None:
    disks = tmp_disks(4)
    os.makedirs(disks[2])
    with open(os.path.join(disks[2], "family-photos.jpg"), "w") as f:
        f.write("precious")
    with pytest.raises(errors.FormatError) as exc:
        await Store.open(disks, **OPTS)
    msg = str(exc.value)
    assert disks[2] in msg and "family-photos.jpg" in msg and "not empty" in msg
    # nothing was written anywhere, and the foreign file is untouched
    assert os.listdir(disks[2]) == ["family-photos.jpg"]
    for p in (disks[0], disks[1], disks[3]):
        assert not os.path.exists(os.path.join(p, FORMAT_FILE))


async def test_foreign_directory_replacing_a_member_disk_is_refused(tmp_disks) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    shutil.rmtree(disks[1])
    os.makedirs(os.path.join(disks[1], "home"))
    with pytest.raises(errors.FormatError, match="refusing"):
        await Store.open(disks, **OPTS)
    assert os.listdir(disks[1]) == ["home"]


async def test_disk_from_another_deployment_is_refused(tmp_disks) -> None:
    ours, theirs = tmp_disks(4), tmp_disks(4)
    await populate(ours)
    await populate(theirs)
    shutil.rmtree(ours[3])
    shutil.copytree(theirs[3], ours[3])
    with pytest.raises(errors.FormatError, match="another deployment") as exc:
        await Store.open(ours, **OPTS)
    their_id = json.loads(open(os.path.join(theirs[3], FORMAT_FILE)).read())["deployment_id"]
    assert their_id in str(exc.value)


async def test_disks_in_another_order_are_refused(tmp_disks) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    with pytest.raises(errors.FormatError, match="order|position"):
        await Store.open([disks[1], disks[0], disks[2], disks[3]], **OPTS)


async def test_wrong_number_of_disks_is_refused(tmp_disks) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    with pytest.raises(errors.FormatError, match="4 disks"):
        await Store.open(disks[:3], **OPTS)
    extra = tmp_disks(1)
    with pytest.raises(errors.FormatError):
        await Store.open(disks + extra, **OPTS)


async def test_same_path_twice_is_refused(tmp_disks) -> None:
    disks = tmp_disks(3)
    with pytest.raises(errors.FormatError, match="twice"):
        await Store.open([disks[0], disks[1], disks[0] + "/"], **OPTS)


async def test_one_directory_under_two_paths_is_refused(tmp_disks) -> None:
    """A symlink (or a bind mount) giving one directory as two disks would hold two shards of
    every object in one place: refused before anything is written."""
    disks = tmp_disks(4)
    for d in disks[:3]:
        os.makedirs(d)
    os.symlink(disks[0], disks[3])
    with pytest.raises(errors.FormatError, match="same directory") as exc:
        await Store.open(disks, **OPTS)
    assert disks[3] in str(exc.value) and disks[0] in str(exc.value)
    for d in disks[:3]:
        assert not os.path.exists(os.path.join(d, FORMAT_FILE))


async def test_unreadable_format_file_is_a_clear_error(tmp_disks) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    with open(os.path.join(disks[2], FORMAT_FILE), "w") as f:
        f.write("{ not json")
    with pytest.raises(errors.FormatError, match="format"):
        await Store.open(disks, **OPTS)


@pytest.mark.parametrize("slot", [0, 2])
async def test_wiped_disk_is_reformatted_into_its_old_slot(tmp_disks, slot) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    old_fmt = json.loads(open(os.path.join(disks[slot], FORMAT_FILE)).read())
    shutil.rmtree(disks[slot])
    os.makedirs(disks[slot])  # a replacement disk: empty, same mount point
    store = await Store.open(disks, background=False, **OPTS)  # no refill yet: observe the state
    try:
        assert store.disks[slot].healing is True
        assert [d.healing for i, d in enumerate(store.disks) if i != slot] == [False] * 3
        assert all(d.online for d in store.disks)
        new_fmt = json.loads(open(os.path.join(disks[slot], FORMAT_FILE)).read())
        for field in ("deployment_id", "disk_id", "slot", "disks", "k", "m", "block_size", "partitions"):
            assert new_fmt[field] == old_fmt[field], field
        assert store.disks[slot].disk_id == old_fmt["disk_id"]
        await check_objects(store)  # read around the empty disk (and, for slot 0, the registry is rebuilt)
    finally:
        await store.close()


async def test_wiped_disk_is_refilled_in_the_background(tmp_disks) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    shutil.rmtree(disks[2])
    os.makedirs(disks[2])
    store = await Store.open(disks, **OPTS)
    try:
        await eventually(lambda: not store.disks[2].healing, timeout=20)
        for key in OBJECTS:
            entry = store.registry.get_object("bkt", key)
            if "disks" in entry and store.disks[2].disk_id in entry["disks"]:
                assert os.path.exists(os.path.join(disks[2], paths.meta_path("bkt", key, entry["wid"]))), key
        assert os.path.exists(os.path.join(disks[2], paths.bucket_meta("bkt")))
        await check_objects(store)
    finally:
        await store.close()


async def test_staging_is_emptied_at_open(tmp_disks) -> None:
    disks = tmp_disks(4)
    await populate(disks)
    for p in disks:
        os.makedirs(os.path.join(p, TMP_DIR, "crashed-txid", "wid"), exist_ok=True)
        with open(os.path.join(p, TMP_DIR, "crashed-txid", "wid", "part.1"), "wb") as f:
            f.write(b"half a shard")
        with open(os.path.join(p, TMP_DIR, "abc.w"), "wb") as f:
            f.write(b"half a meta")
    store = await Store.open(disks, **OPTS)
    try:
        assert staging_files(disks) == []
        await check_objects(store)
    finally:
        await store.close()


async def test_single_disk_deployment(tmp_disks) -> None:
    [disk] = tmp_disks(1)
    store = await Store.open([disk], **OPTS)
    try:
        assert store.layout == (1, 0) and store.disk_count == 1
        await store.make_bucket("bkt")
        for key, data in OBJECTS.items():
            await store.put_object("bkt", key, data, len(data))
        await check_objects(store)
    finally:
        await store.close()


@pytest.mark.parametrize("n,layout", [(2, (1, 1)), (3, (2, 1)), (4, (2, 2)), (5, (3, 2)), (6, (3, 3)), (8, (4, 4))])
async def test_default_layouts(tmp_disks, n, layout) -> None:
    store = await Store.open(tmp_disks(n), **OPTS)
    try:
        assert store.layout == layout
    finally:
        await store.close()


async def test_parity_override(tmp_disks) -> None:
    store = await Store.open(tmp_disks(6), parity=1, **OPTS)
    try:
        assert store.layout == (5, 1)
    finally:
        await store.close()
    with pytest.raises(errors.FormatError):
        await Store.open(tmp_disks(4), parity=3, **OPTS)


def break_staging(disk_root: str) -> None:
    """Make every new file on this disk fail: its staging directory becomes a regular file."""
    tmp = os.path.join(disk_root, TMP_DIR)
    shutil.rmtree(tmp)
    with open(tmp, "w") as f:
        f.write("broken")


async def test_disks_failing_at_runtime(tmp_disks) -> None:
    from engine_testkit import key_files

    disks = tmp_disks(4)
    store = await Store.open(disks, background=False, **OPTS)
    try:
        await store.make_bucket("bkt")
        break_staging(disks[3])
        big = content("big", 3 * BLOCK + 5)
        await store.put_object("bkt", "big", big, len(big))  # 3 of 4: still the write quorum
        await store.put_object("bkt", "small", b"small", 5)
        assert await get_bytes(store, "bkt", "big") == big
        assert await get_bytes(store, "bkt", "small") == b"small"
        reported = set()
        while not store.heal_queue.empty():
            reported.add(store.heal_queue.get_nowait()[1])
        assert reported == {"big", "small"}, "an incomplete write must be queued for heal"
        break_staging(disks[2])
        for key, data in (("big2", big), ("small2", b"s")):
            with pytest.raises(errors.WriteQuorumLost):
                await store.put_object("bkt", key, data, len(data))
            with pytest.raises(errors.NoSuchKey):
                await store.head_object("bkt", key)
            assert key_files(disks, "bkt", key) == []
        assert staging_files(disks[:2]) == []
        assert store.registry.usage["bkt"] == [2, len(big) + 5]
    finally:
        await store.close()


async def test_read_tries_disks_marked_offline_when_too_few_are_online(tmp_disks) -> None:
    """A stale offline mark (a peer slow to answer a probe under load) must not fail a read
    the disks could serve: with fewer than k disks online, the marked ones are asked too.
    With enough online, the marked ones are left alone."""
    disks = tmp_disks(4)
    await populate(disks)
    store = await Store.open(disks, **OPTS)
    try:
        for d in store.disks[:3]:
            d.mark_offline("probe timed out (test)")
        assert sum(d.online for d in store.disks) == 1
        await check_objects(store)
        entry = await store.catalog.get_object("bkt", "obj3")
        assert all(d is not None for d in store.disks_for_read(entry["disks"], entry["k"]))
        store.disks[0].mark_online()
        store.disks[1].mark_online()
        chosen = store.disks_for_read([d.disk_id for d in store.disks], 2)
        assert [d is not None for d in chosen] == [True, True, False, True]
    finally:
        await store.close()


def test_fstab_mount_points_are_read_as_mount_does(tmp_path) -> None:
    from buckets.engine.bootstrap import fstab_mount_points

    fstab = tmp_path / "fstab"
    fstab.write_text("# static file system information\nUUID=1 / ext4 defaults 0 1\n"
                     "/dev/sdb1 /srv/disk\\0401 xfs defaults,nofail 0 2  # a comment\n"
                     "/dev/sdc1 none swap sw 0 0\nLABEL=d2 /srv/disk2/ xfs defaults 0 2\n\nbroken line\n")
    assert fstab_mount_points(str(fstab)) == ["/srv/disk 1", "/srv/disk2"]
    assert fstab_mount_points(str(tmp_path / "missing")) == []


async def test_a_new_store_is_not_formatted_under_a_mount_point_that_is_not_mounted(tmp_disks, tmp_path,
                                                                                   monkeypatch) -> None:
    """/etc/fstab mounts a file system where the disks are, and none is mounted: the disks are
    the bare directories below, and a new deployment there would put the data on the system
    disk (and hide an existing store). Refused, nothing written."""
    disks = tmp_disks(4)
    for d in disks:
        os.makedirs(d)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"/dev/sdb1 {os.path.dirname(disks[0])} xfs defaults,nofail 0 2\n")
    monkeypatch.setenv("BUCKETS_FSTAB", str(fstab))
    with pytest.raises(errors.FormatError, match="is not mounted: /etc/fstab mounts a file system at"):
        await Store.open(disks, **OPTS)
    for d in disks:
        assert not os.path.exists(os.path.join(d, FORMAT_FILE))
