"""The write paths the power-loss campaigns cut: one :class:`Scenario` each.

``setup`` brings a store to the path's starting point (the durable baseline); ``window``
runs the path with every operation marked, and is what the power is cut in.
"""

from __future__ import annotations

import asyncio
import os
import shutil

from crash_harness import BUCKET, Run, Scenario, body

from buckets import errors
from buckets.engine import paths
from buckets.engine.heal import heal_object
from buckets.engine.multipart import MIN_PART_SIZE
from buckets.engine.scanner import ScannerConfig
from buckets.registry import Op
from buckets.storage.format import REGISTRY_DIR

SMALL = 1000  # inline (<= INLINE)
LARGE = 40_000  # three erasure blocks


async def _open_with_bucket(run: Run) -> None:
    await run.open_store()
    await run.make_bucket()


# -- PUT, inline ---------------------------------------------------------------------------------
async def _put_small(run: Run) -> None:
    await run.put("small", body("small", SMALL))


# -- PUT, streamed ---------------------------------------------------------------------------------
async def _put_large(run: Run) -> None:
    await run.put("large", body("large", LARGE))


# -- UploadPart (the upload left open: each check completes the acknowledged parts) -----------------
async def _upload_part(run: Run) -> None:
    await run.multipart("parts", [body("part", LARGE)], complete=False)


# -- multipart upload and Complete -------------------------------------------------------------------
async def _multipart(run: Run) -> None:
    await run.multipart("mp", [body("mp1", MIN_PART_SIZE), body("mp2", 10_000)])


# -- overwrite ---------------------------------------------------------------------------------------
async def _overwrite_setup(run: Run) -> None:
    await _open_with_bucket(run)
    await run.put("obj", body("obj-v1", LARGE))
    await run.put("tiny", body("tiny-v1", SMALL))


async def _overwrite(run: Run) -> None:
    await run.put("obj", body("obj-v2", LARGE + 5000))
    await run.put("tiny", body("tiny-v2", SMALL + 10))


# -- DELETE -----------------------------------------------------------------------------------------
async def _delete(run: Run) -> None:
    await run.delete("obj")
    await run.delete("tiny")


# -- DELETE after the record log was turned off ----------------------------------------------
async def _log_off_setup(run: Run) -> None:
    await run.open_store(small_log=True)
    await run.make_bucket()
    await run.put("tiny", body("tiny-v1", SMALL))  # records in the disks' logs
    await run.put("obj", body("obj-v1", LARGE))
    await run.close_store()
    await run.open_store()  # restarted with the record log off: the markers are metadata files


async def _log_off_delete(run: Run) -> None:
    await run.delete("tiny")
    await run.delete("obj")


# -- DeleteBucket ----------------------------------------------------------------------------------
async def _drop_setup(run: Run) -> None:
    await _open_with_bucket(run)
    await emptied_bucket(run)


async def emptied_bucket(run: Run) -> None:
    """Bucket ``gone``, whose objects (a streamed and an inline one) were deleted."""
    await run.make_bucket("gone")
    await run.put("large", body("large-v1", LARGE), bucket="gone")
    await run.put("small", body("small-v1", SMALL), bucket="gone")
    await run.delete("large", bucket="gone")
    await run.delete("small", bucket="gone")
    await run.drain()  # the objects' and markers' removal


async def drop_bucket(run: Run) -> None:
    """DeleteBucket of ``gone``, then a small write into another bucket."""
    await run.delete_bucket("gone")
    await run.put("after", body("after", SMALL))


# -- CopyObject -------------------------------------------------------------------------------------
async def _copy(run: Run) -> None:
    await run.copy("obj", "copy", body("obj-v1", LARGE))


# -- heal repair ------------------------------------------------------------------------------------
async def _heal_setup(run: Run) -> None:
    await _overwrite_setup(run)
    store = run.store
    # damage: one shard file of the streamed object, one metadata file (with its inline shard)
    big = store.registry.get_object(BUCKET, "obj")
    disk = store.by_id[big["disks"][0]]
    os.unlink(disk.local_path(paths.part_path(BUCKET, "obj", big["wid"], 1)))
    tiny = store.registry.get_object(BUCKET, "tiny")
    disk = store.by_id[tiny["disks"][1]]
    os.unlink(disk.local_path(paths.meta_path(BUCKET, "tiny", tiny["wid"])))


async def _heal(run: Run) -> None:
    store = run.store
    for key in ("obj", "tiny"):
        res = await run.maintenance(f"heal {key}", lambda key=key: heal_object(store, BUCKET, key, deep=True))
        assert res.repaired and not res.failed, f"heal of {key} repaired nothing: {res}"


# -- the scanner's orphan sweep ---------------------------------------------------------------------
async def _sweep_setup(run: Run) -> None:
    await _overwrite_setup(run)
    store = run.store
    # an orphaned write (its entry gone, its files left), and an upload nobody knows any more
    await run.put("orphan", body("orphan", LARGE))
    await store.registry.commit([Op("delete_object", BUCKET, "orphan")])
    run.baseline[(BUCKET, "orphan")] = None
    info = await store.create_multipart_upload(BUCKET, "gone-upload")
    await store.put_part(BUCKET, "gone-upload", info.upload_id, 1, body("gp", 20_000), 20_000)
    await store.registry.commit([Op("delete_upload", BUCKET, info.upload_id)])
    await asyncio.sleep(0.01)  # older than the sweep's cutoff (grace 0)


async def _sweep(run: Run) -> None:
    res = await run.maintenance("sweep", lambda: run.store.scanner.sweep(grace=0.0))
    assert res["orphans_removed"] >= 2, res


# -- disk refill ------------------------------------------------------------------------------------
REFILL_SCANNER = ScannerConfig(cycle_pause=3600.0, monitor_interval=3600.0, refill_retry=0.05)


async def _refill_setup(run: Run) -> None:
    await _overwrite_setup(run)
    await run.close_store()
    wiped = run.roots[3]  # a replaced disk: empty at the next start
    for name in os.listdir(wiped):
        shutil.rmtree(os.path.join(wiped, name))


async def _refill(run: Run) -> None:
    async def start_and_refill():
        store = await run.open_store(background=True, scanner_config=REFILL_SCANNER)
        disk = store.disks[3]
        for _ in range(2000):
            st = store.scanner.refill.get(disk.disk_id)
            if st is not None and st["state"] == "finished":
                return st
            await asyncio.sleep(0.01)
        raise AssertionError(f"refill did not finish: {store.scanner.refill}")

    st = await run.maintenance("start and refill", start_and_refill)
    assert st["repaired"] >= 2, st


# -- registry group commit ---------------------------------------------------------------------------
async def _group_commit(run: Run) -> None:
    puts = [run.put(f"g{i}", body(f"g{i}", SMALL + i)) for i in range(6)]
    puts += [run.put(f"G{i}", body(f"G{i}", LARGE + i)) for i in range(2)]
    await asyncio.gather(*puts)
    assert run.store.registry.last_batch >= 1


# -- the first start of a new deployment -------------------------------------------------------------
async def _nothing(run: Run) -> None:
    return None


async def _first_start(run: Run) -> None:
    await run.maintenance("first start", run.open_store)
    await run.make_bucket()
    await run.put("small", body("small", SMALL))
    await run.put("large", body("large", LARGE))


# -- a registry rebuilt at start ---------------------------------------------------------------------
async def _rebuild_setup(run: Run) -> None:
    await _overwrite_setup(run)
    home = run.store.disks[0].local_path(REGISTRY_DIR)
    await run.close_store()
    shutil.rmtree(home)  # the registry is lost: the next start rebuilds it from the disks


async def _rebuild(run: Run) -> None:
    await run.maintenance("start with a registry rebuild", run.open_store)
    # then writes acknowledged through the new registry (none of them syncs the filesystem)
    await run.put("after", body("after", LARGE))
    await run.delete("obj")


# -- PutObjectAcl: the metadata files of the current write rewritten in place -------------------------
async def _acl(run: Run) -> None:
    await run.set_acl("obj", body("obj-v1", LARGE), {"grants": [["CanonicalUser", "reader", "READ"]]})
    await run.set_acl("tiny", body("tiny-v1", SMALL), {"grants": [["CanonicalUser", "reader", "READ"]]})


# -- concurrent: everything at once --------------------------------------------------------------------
async def _concurrent_setup(run: Run) -> None:
    await _overwrite_setup(run)
    await run.put("src", body("src", LARGE))
    await run.put("doomed", body("doomed", LARGE))
    await run.put("acl", body("acl", SMALL))


async def _concurrent(run: Run) -> None:
    await asyncio.gather(
        run.put("new-small", body("new-small", SMALL)),
        run.put("new-large", body("new-large", LARGE)),
        run.put("obj", body("obj-v2", LARGE + 5000)),
        run.put("tiny", body("tiny-v2", SMALL + 10)),
        run.delete("doomed"),
        run.copy("src", "copy", body("src", LARGE)),
        run.set_acl("acl", body("acl", SMALL), {"grants": [["CanonicalUser", "reader", "READ"]]}),
        run.multipart("mp", [body("mp1", LARGE)], complete=False),
    )


# -- versioned buckets ---------------------------------------------------------------------------------
# Every versioned campaign is checked twice per crash state: reopened as it is, and with the
# registry deleted, rebuilt from the disks (Scenario.rebuild). The model is each key's whole
# version list (crash_harness.Run.vput/vdelete/vupdate).
YEAR = 365 * 86400.0


async def _versioned_setup(run: Run) -> None:
    await run.open_store()
    await run.make_bucket(settings={"versioning": "Enabled"})
    await run.vput("obj", body("obj-v1", LARGE))
    await run.vput("tiny", body("tiny-v1", SMALL), tags={"k": "v1"})


async def _v_put(run: Run) -> None:
    await run.vput("obj", body("obj-v2", LARGE + 5000))
    await run.vput("tiny", body("tiny-v2", SMALL + 10), tags={"k": "v2", "x": "y"})
    await run.vput("new", body("new", SMALL))


async def _v_marker_setup(run: Run) -> None:
    await _versioned_setup(run)
    await run.vput("obj", body("obj-v2", LARGE + 5000))


async def _v_marker(run: Run) -> None:
    await run.vdelete("obj")
    await run.vdelete("tiny")
    await run.vdelete("never")  # a marker on a key that never had a version
    await run.vput("tiny", body("tiny-v3", SMALL + 20))  # back after its marker


async def _v_delete_version_setup(run: Run) -> None:
    await _v_marker_setup(run)
    await run.vput("tiny", body("tiny-v2", SMALL + 10))
    await run.vput("gone", body("gone", SMALL))
    await run.vdelete("gone")


async def _v_delete_version(run: Run) -> None:
    await run.vdelete("obj", run.vid("obj", 0))  # the latest: v1 becomes current again
    await run.vdelete("tiny", run.vid("tiny", 1))  # a noncurrent one
    await run.vdelete("gone", run.vid("gone", 0))  # the delete marker: the key is back


async def _v_suspended_setup(run: Run) -> None:
    await _versioned_setup(run)
    await run.store.set_versioning(BUCKET, "Suspended")
    await run.vput("obj", body("obj-null", SMALL + 30))  # the null version, beside v1
    await run.vput("tiny", body("tiny-null", LARGE))


async def _v_suspended(run: Run) -> None:
    await run.vput("obj", body("obj-null2", LARGE + 100))  # the null version replaced (inline -> streamed)
    await run.vdelete("tiny")  # a null delete marker replaces the null version
    await run.vput("fresh", body("fresh", SMALL))  # a new key's null version
    await run.vput("obj", body("obj-null3", SMALL + 40))  # replaced again (streamed -> inline)


async def _v_lock_setup(run: Run) -> None:
    await run.open_store()
    await run.make_bucket(settings={"lock": {"enabled": True}, "versioning": "Enabled"})
    run.until = 1e9 + YEAR * 40  # a retain-until date well in the future (2041)
    await run.vput("obj", body("obj-v1", LARGE), lock=("GOVERNANCE", run.until))
    await run.vput("obj", body("obj-v2", SMALL + 5))
    await run.vput("tiny", body("tiny-v1", SMALL), tags={"a": "1", "b": "2"})
    await run.vput("held", body("held", SMALL), hold=True)


async def _v_lock(run: Run) -> None:
    old = run.vid("obj", 1)
    await run.vupdate("obj", old, tags={"after": "lock"})  # tags of a locked noncurrent version
    await run.vupdate("obj", run.vid("obj", 0), hold=True)  # legal hold on the latest
    await run.vupdate("obj", run.vid("obj", 0), retention=("COMPLIANCE", run.until + 86400))
    await run.vupdate("tiny", run.vid("tiny", 0), tags={})  # DeleteObjectTagging
    try:  # refused: the retention protects it (changes nothing)
        await run.vdelete("obj", old)
        raise AssertionError("a GOVERNANCE-locked version was deleted without a bypass")
    except errors.AccessDenied:
        pass
    await run.vupdate("obj", old, retention=("GOVERNANCE", run.until + YEAR))  # lengthened
    await run.vupdate("held", run.vid("held", 0), hold=False)  # released
    await run.vdelete("held", run.vid("held", 0))  # then removed for good
    await run.vdelete("obj", old, bypass=True)  # GOVERNANCE bypassed


async def _v_concurrent_setup(run: Run) -> None:
    await _v_delete_version_setup(run)
    await run.vput("upd", body("upd", SMALL), tags={"t": "0"})


async def _v_concurrent(run: Run) -> None:
    # one op per key at a time (the model's rule), different keys at once
    await asyncio.gather(
        run.vput("obj", body("obj-v3", LARGE + 7)),
        run.vdelete("tiny", run.vid("tiny", 0)),
        run.vdelete("gone"),
        run.vupdate("upd", run.vid("upd", 0), tags={"t": "1"}),
        run.vput("new", body("new", LARGE)),
    )


SCENARIOS = {
    s.name: s for s in [
        Scenario("put-inline", _open_with_bucket, _put_small),
        Scenario("put-multiblock", _open_with_bucket, _put_large),
        # rebuild: uploads in progress come back from their records on the disks (multipart.py)
        Scenario("upload-part", _open_with_bucket, _upload_part, rebuild=True),
        Scenario("multipart-complete", _open_with_bucket, _multipart, rebuild=True),
        Scenario("overwrite", _overwrite_setup, _overwrite),
        Scenario("delete", _overwrite_setup, _delete, rebuild=True),
        Scenario("delete-bucket", _drop_setup, drop_bucket, rebuild=True),
        Scenario("delete-after-log-off", _log_off_setup, _log_off_delete, rebuild=True),
        Scenario("copy", _overwrite_setup, _copy),
        Scenario("heal-repair", _heal_setup, _heal),
        Scenario("orphan-sweep", _sweep_setup, _sweep),
        Scenario("disk-refill", _refill_setup, _refill),
        Scenario("group-commit", _open_with_bucket, _group_commit),
        Scenario("first-start", _nothing, _first_start),
        Scenario("registry-rebuild", _rebuild_setup, _rebuild),
        Scenario("put-object-acl", _overwrite_setup, _acl),
        Scenario("versioned-put", _versioned_setup, _v_put, rebuild=True),
        Scenario("versioned-delete-marker", _v_marker_setup, _v_marker, rebuild=True),
        Scenario("versioned-delete-version", _v_delete_version_setup, _v_delete_version, rebuild=True),
        Scenario("suspended-null-version", _v_suspended_setup, _v_suspended, rebuild=True),
        Scenario("versioned-tags-lock", _v_lock_setup, _v_lock, rebuild=True),
    ]
}
VERSIONED = [name for name, s in SCENARIOS.items() if s.rebuild]
CONCURRENT = Scenario("concurrent", _concurrent_setup, _concurrent)
VERSIONED_CONCURRENT = Scenario("versioned-concurrent", _v_concurrent_setup, _v_concurrent, rebuild=True)
