"""The scanner's deep cycle reads the registry through from its disk before it walks it
(``Scanner.check_registry``). Its walk, and every lookup, reads the registry through LMDB's
map, where a page the disk cannot read ends the process with SIGBUS; read first with
``pread`` (past the page cache), such a page is an EIO, the registry is failed (a single node
then restarts in place and rebuilds it on another disk, tests/faults/test_faults_eio.py) and
the walk is not run. Disk 1 here is a FUSE disk whose chosen byte ranges answer EIO
(tests/fusedisk.py): needs root, /dev/fuse, libfuse 2 and fusepy (skipped otherwise)."""

from __future__ import annotations

import os

from engine_testkit import BLOCK, INLINE, content, get_bytes
from fusedisk import FuseDisk

from buckets import Store
from buckets.storage.format import REGISTRY_DIR


async def test_a_deep_cycle_reads_the_registry_from_its_disk_before_it_walks_it(tmp_path) -> None:
    disk = FuseDisk(tmp_path / "backing1", tmp_path / "d1")
    store = None
    try:
        paths = [str(disk.path)] + [str(tmp_path / f"d{i}") for i in (2, 3, 4)]
        store = await Store.open(paths, sync=False, block_size=BLOCK, inline_threshold=INLINE, background=False)
        assert store.registry.path.startswith(str(disk.path))
        await store.make_bucket("bkt")
        bodies = {f"k{i}": content(f"k{i}", 3000 * i) for i in range(1, 9)}
        for k, v in bodies.items():
            await store.put_object("bkt", k, v, len(v))
        assert await store.scanner.check_registry(paced=False) and store.registry.failed is None
        assert (await store.scanner.run_cycle(deep=True, paced=False))["checked"] == len(bodies)

        relative = f"{REGISTRY_DIR}/data.mdb"
        disk.bad(relative, 2 * 4096, os.path.getsize(disk.path / relative))  # past LMDB's meta pages
        assert not await store.scanner.check_registry(paced=False)
        assert store.registry.failed == "its disk cannot read it (Input/output error reading data.mdb at byte 0)"
        assert await store.scanner.run_cycle(deep=True, paced=False) == {
            "checked": 0, "deep": True, "registry_failed": True}  # no walk through the map
        disk.heal()
        for k, v in bodies.items():  # (reads go on while they can, as after any registry failure)
            assert await get_bytes(store, "bkt", k) == v
    finally:
        disk.heal()
        if store is not None:
            await store.close()
        disk.close()
