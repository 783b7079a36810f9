"""Registry rebuild: delete the registry, reopen, and every object and bucket comes back
from the disks' self-describing metadata files."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
from engine_testkit import BLOCK, INLINE, MiB, content, get_bytes

from buckets import Store, errors
from buckets.engine.types import CompletePart, PutOptions
from buckets.storage.format import REGISTRY_DIR

OPTS = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64)


async def fill(store) -> dict[tuple[str, str], bytes]:
    """~200 objects: inline, streamed, multipart, overwritten, deleted; three buckets."""
    want: dict[tuple[str, str], bytes] = {}
    for b in ("alpha", "beta", "empty-bucket"):
        await store.make_bucket(b)
    for i in range(190):
        bucket = "alpha" if i % 3 else "beta"
        key = f"dir{i % 7}/obj-{i:04d}" + ("-é" if i % 11 == 0 else "")
        size = [0, 1, 100, INLINE, INLINE + 1, BLOCK, 2 * BLOCK + 5, 40000][i % 8]
        data = content(key, size)
        opts = PutOptions(headers={"content-type": f"x/{i}"}, user_meta={"n": str(i)},
                          checksum_algorithms=("CRC32",) if i % 5 == 0 else ())
        await store.put_object(bucket, key, data, size, opts)
        want[(bucket, key)] = data
    for i in range(3):  # multipart objects
        key = f"mp/{i}"
        bodies = [content(f"{key}.1", 5 * MiB), content(f"{key}.2", 1000 + i)]
        up = await store.create_multipart_upload("alpha", key)
        done = []
        for n, body in enumerate(bodies, 1):
            p = await store.put_part("alpha", key, up.upload_id, n, body, len(body))
            done.append(CompletePart(n, p.etag))
        await store.complete_multipart_upload("alpha", key, up.upload_id, done)
        want[("alpha", key)] = b"".join(bodies)
    for i in range(0, 30, 3):  # overwrites (newest wins) and deletes (stay deleted)
        bucket = "alpha" if i % 3 else "beta"
        key = f"dir{i % 7}/obj-{i:04d}" + ("-é" if i % 11 == 0 else "")
        if i % 2:
            await store.delete_object(bucket, key)
            del want[(bucket, key)]
        else:
            data = content(key + "v2", 3000 + i)
            await store.put_object(bucket, key, data, len(data))
            want[(bucket, key)] = data
    await store.put_object("beta", "1024/" + "k" * 1019, b"long key", 8)
    want[("beta", "1024/" + "k" * 1019)] = b"long key"
    return want


@pytest.mark.parametrize("how", ["deleted", "emptied"])
async def test_registry_rebuild_restores_everything(tmp_disks, how) -> None:
    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    want = await fill(store)
    before = {}
    for bucket in ("alpha", "beta"):
        for o in (await store.list_objects(bucket, limit=10**4)).objects:
            before[(bucket, o.key)] = o
    heads = {bk: await store.head_object(*bk) for bk in want}
    usage = {b: list(u) for b, u in store.registry.usage.items()}
    buckets = [(b.name, b.created) for b in await store.list_buckets()]
    await store.close()
    assert set(before) == set(want)

    reg = os.path.join(disks[0], REGISTRY_DIR)
    assert os.path.isdir(reg)
    if how == "deleted":
        shutil.rmtree(reg)
    else:
        for name in os.listdir(reg):
            os.unlink(os.path.join(reg, name))
    # what a rebuild gathers goes to a scratch LMDB beside the registry: one left by a rebuild
    # cut short is replaced, and the rebuild removes its own when done
    os.makedirs(reg + ".rebuild")
    with open(os.path.join(reg + ".rebuild", "data.mdb"), "wb") as junk:
        junk.write(b"left by a rebuild that was cut short")

    store = await Store.open(disks, **OPTS)
    try:
        assert not os.path.exists(reg + ".rebuild")
        assert [(b.name, b.created) for b in await store.list_buckets()] == buckets
        after = {}
        for bucket in ("alpha", "beta"):
            for o in (await store.list_objects(bucket, limit=10**4)).objects:
                after[(bucket, o.key)] = o
        assert set(after) == set(want)
        for bk, data in want.items():
            h = await store.head_object(*bk)
            old = heads[bk]
            assert (h.size, h.etag, h.headers, h.user_meta, h.checksums, h.content_hash, h.last_modified) == (
                old.size, old.etag, old.headers, old.user_meta, old.checksums, old.content_hash, old.last_modified), bk
            assert [(p.number, p.size, p.etag) for p in h.parts] == [(p.number, p.size, p.etag) for p in old.parts]
            got = await get_bytes(store, *bk)
            assert hashlib.md5(got).hexdigest() == hashlib.md5(data).hexdigest(), bk
        assert {b: list(u) for b, u in store.registry.usage.items() if u != [0, 0]} == \
            {b: u for b, u in usage.items() if u != [0, 0]}
        assert (await store.list_objects("empty-bucket")).objects == []
        with pytest.raises(errors.BucketNotEmpty):
            await store.delete_bucket("alpha")
        await store.delete_bucket("empty-bucket")
        # the rebuilt registry is a normal one: writes and a further reopen keep working
        await store.put_object("alpha", "after-rebuild", b"ok", 2)
    finally:
        await store.close()
    store = await Store.open(disks, **OPTS)
    try:
        assert await get_bytes(store, "alpha", "after-rebuild") == b"ok"
        assert not await store.bucket_exists("empty-bucket")
        assert len((await store.list_objects("alpha", limit=10**4)).objects) == \
            sum(1 for b, _ in want if b == "alpha") + 1
    finally:
        await store.close()


async def test_rebuild_with_a_disk_missing(tmp_disks) -> None:
    """Any k disks are enough to rebuild: lose the registry and a disk at the same time."""
    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    await store.make_bucket("bkt")
    data = {f"k{i}": content(f"k{i}", (i * 5003) % (3 * BLOCK)) for i in range(30)}
    for k, v in data.items():
        await store.put_object("bkt", k, v, len(v))
    await store.close()
    shutil.rmtree(disks[0])  # the registry's disk dies
    with open(disks[0], "w") as f:
        f.write("dead")
    store = await Store.open(disks, **OPTS)
    try:
        assert not store.disks[0].online
        for k, v in data.items():
            assert await get_bytes(store, "bkt", k) == v
    finally:
        await store.close()


async def test_rebuild_ignores_writes_on_fewer_than_k_disks(tmp_disks) -> None:
    """A write whose metadata made it to fewer than k disks was never acknowledged."""
    from buckets.engine import paths

    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    await store.make_bucket("bkt")
    await store.put_object("bkt", "k", b"v1", 2)
    entry_v1 = store.registry.get_object("bkt", "k")
    await store.put_object("bkt", "k", b"version2", 8)
    entry_v2 = store.registry.get_object("bkt", "k")
    await store.close()
    # leave v2's metadata on a single disk only (as if the crash came mid-write), and put v1's back
    for i, p in enumerate(disks):
        if i > 0:
            os.unlink(os.path.join(p, paths.meta_path("bkt", "k", entry_v2["wid"])))
    assert entry_v1["wid"] != entry_v2["wid"]
    shutil.rmtree(os.path.join(disks[0], REGISTRY_DIR))
    store = await Store.open(disks, **OPTS)
    try:
        with pytest.raises(errors.NoSuchKey):  # v1's files were removed after v2 committed
            await store.head_object("bkt", "k")
    finally:
        await store.close()


async def test_users_survive_the_loss_of_the_registry_disk(tmp_disks) -> None:
    """Users are mirrored to every disk: a rebuild after the registry's disk died restores
    them, secrets still sealed and usable; removals are mirrored too."""
    from buckets.engine.users import derive_kek

    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    kek = derive_kek("root", "root-password", store.deployment_id)
    store.users.set_kek(kek)
    await store.users.put("alice", "alice-secret-1")
    await store.users.put("bob", "bob-secret-22")
    await store.users.set_enabled("bob", False)
    await store.users.put("carol", "carol-secret-3")
    await store.users.remove("carol")
    await store.close()
    shutil.rmtree(disks[0])  # the registry's disk dies
    with open(disks[0], "w") as f:
        f.write("dead")
    store = await Store.open(disks, **OPTS)
    try:
        store.users.set_kek(kek)
        alice = await store.users.get("alice")
        bob = await store.users.get("bob")
        assert alice is not None and alice.secret == "alice-secret-1" and alice.enabled
        assert bob is not None and bob.secret == "bob-secret-22" and not bob.enabled
        assert await store.users.get("carol") is None
        # the mirror file holds sealed secrets only
        with open(os.path.join(disks[1], ".buckets.sys", "users.meta"), "rb") as f:
            assert b"alice-secret-1" not in f.read()
    finally:
        await store.close()


def _lose_registry(disks) -> None:
    shutil.rmtree(os.path.join(disks[0], REGISTRY_DIR))


async def _uploads_after_a_rebuild(disks, bucket: str) -> list:
    """Lose the registry, reopen (a rebuild), and list the bucket's uploads."""
    _lose_registry(disks)
    store = await Store.open(disks, **OPTS)
    try:
        return (await store.list_multipart_uploads(bucket)).uploads
    finally:
        await store.close()


async def test_uploads_in_progress_come_back_and_complete(tmp_disks) -> None:
    """An upload's record and each part's record are on its disks: a rebuild restores the
    uploads in progress with their parts (a part uploaded twice: the newer), so they list,
    take more parts and complete to the right bytes. Uploads completed or aborted stay gone."""
    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    await store.make_bucket("bkt")
    bodies = {1: content("p1", 5 * MiB), 2: content("p2", 5 * MiB + 7)}
    open_up = await store.create_multipart_upload("bkt", "big", PutOptions(headers={"content-type": "x/big"},
                                                                           user_meta={"who": "me"}))
    await store.put_part("bkt", "big", open_up.upload_id, 1, content("stale", 5 * MiB), 5 * MiB)
    for n, body in bodies.items():  # part 1 again: the newer one counts
        await store.put_part("bkt", "big", open_up.upload_id, n, body, len(body))
    empty = await store.create_multipart_upload("bkt", "nothing-yet")
    done = await store.create_multipart_upload("bkt", "done")
    p = await store.put_part("bkt", "done", done.upload_id, 1, b"d" * 1000, 1000)
    await store.complete_multipart_upload("bkt", "done", done.upload_id, [CompletePart(1, p.etag)])
    aborted = await store.create_multipart_upload("bkt", "aborted")
    await store.put_part("bkt", "aborted", aborted.upload_id, 1, b"a" * 1000, 1000)
    await store.abort_multipart_upload("bkt", "aborted", aborted.upload_id)
    parts_before = [(p.number, p.size, p.etag) for p in
                    (await store.list_parts("bkt", "big", open_up.upload_id)).parts]
    await store.close()

    _lose_registry(disks)
    store = await Store.open(disks, **OPTS)
    try:
        listed = {(u.key, u.upload_id) for u in (await store.list_multipart_uploads("bkt")).uploads}
        assert listed == {("big", open_up.upload_id), ("nothing-yet", empty.upload_id)}
        got = await store.list_parts("bkt", "big", open_up.upload_id)
        assert [(p.number, p.size, p.etag) for p in got.parts] == parts_before
        third = content("p3", 1234)
        p3 = await store.put_part("bkt", "big", open_up.upload_id, 3, third, len(third))
        etags = {p.number: p.etag for p in got.parts}
        info = await store.complete_multipart_upload(
            "bkt", "big", open_up.upload_id,
            [CompletePart(1, etags[1]), CompletePart(2, etags[2]), CompletePart(3, p3.etag)])
        assert info.size == 10 * MiB + 7 + 1234
        assert await get_bytes(store, "bkt", "big") == bodies[1] + bodies[2] + third
        head = await store.head_object("bkt", "big")
        assert (head.headers.get("content-type"), head.user_meta) == ("x/big", {"who": "me"})
        assert await get_bytes(store, "bkt", "done") == b"d" * 1000
        await store.abort_multipart_upload("bkt", "nothing-yet", empty.upload_id)
    finally:
        await store.close()
    # and again: what was completed or aborted since is not brought back either
    assert await _uploads_after_a_rebuild(disks, "bkt") == []
    store = await Store.open(disks, **OPTS)
    try:
        assert await get_bytes(store, "bkt", "big") == bodies[1] + bodies[2] + third
    finally:
        await store.close()


async def test_an_upload_on_fewer_than_k_disks_is_not_brought_back(tmp_disks) -> None:
    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    await store.make_bucket("bkt")
    up = await store.create_multipart_upload("bkt", "k")
    await store.put_part("bkt", "k", up.upload_id, 1, b"x" * 1000, 1000)
    await store.close()
    gone = 0
    for d in disks:  # leave its record on one disk only (k = 2)
        meta = os.path.join(d, ".buckets.sys", "multipart", up.upload_id, "upload.meta")
        if os.path.exists(meta) and gone < 3:
            os.unlink(meta)
            gone += 1
    assert gone == 3
    assert await _uploads_after_a_rebuild(disks, "bkt") == []


async def test_an_abort_that_cannot_reach_a_write_quorum_is_refused_and_changes_nothing(tmp_disks) -> None:
    disks = tmp_disks(4)
    store = await Store.open(disks, **{**OPTS, "sync": True})
    try:
        await store.make_bucket("bkt")
        up = await store.create_multipart_upload("bkt", "k")
        await store.put_part("bkt", "k", up.upload_id, 1, b"x" * 1000, 1000)
        store.disks[1].mark_offline("test")
        store.disks[2].mark_offline("test")
        with pytest.raises(errors.WriteQuorumLost):
            await store.abort_multipart_upload("bkt", "k", up.upload_id)
        assert [u.upload_id for u in (await store.list_multipart_uploads("bkt")).uploads] == [up.upload_id]
        store.disks[1].mark_online()
        store.disks[2].mark_online()
        await store.abort_multipart_upload("bkt", "k", up.upload_id)  # all back: it goes through
        assert (await store.list_multipart_uploads("bkt")).uploads == []
    finally:
        await store.close()
    assert await _uploads_after_a_rebuild(disks, "bkt") == []


async def test_a_rebuild_without_scratch_space_fails_the_start_with_one_line(tmp_disks) -> None:
    """The rebuild gathers what the disks hold in a scratch LMDB beside the registry: when it
    cannot (a full disk; here a file in its place), the start fails with a FormatError saying
    where, and succeeds once the space is there."""
    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    await store.make_bucket("scratch")
    await store.put_object("scratch", "k", b"kept", 4)
    await store.close()
    reg = os.path.join(disks[0], REGISTRY_DIR)
    shutil.rmtree(reg)
    with open(reg + ".rebuild", "wb") as blocker:
        blocker.write(b"not a directory")
    with pytest.raises(errors.FormatError, match="scratch space at .*registry.rebuild"):
        await Store.open(disks, **OPTS)
    os.unlink(reg + ".rebuild")
    store = await Store.open(disks, **OPTS)
    try:
        assert await get_bytes(store, "scratch", "k") == b"kept"
    finally:
        await store.close()
