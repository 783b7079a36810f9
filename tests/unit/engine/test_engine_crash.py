"""Crash safety: SIGKILL a writer process at random moments, reopen, and check that every
acknowledged object reads back intact, that nothing is visible half-written, and that the
staging areas are empty after open."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from crash_child import BUCKET, crash_content, store_options
from engine_testkit import read_all, staging_files

from buckets import Store

CHILD = Path(__file__).with_name("crash_child.py")
ROUNDS = 6


def run_child(round_no: int, disks: list[str], kill_after: float) -> tuple[dict[str, str], str]:
    """Start the writer, SIGKILL it ``kill_after`` seconds after it is ready; return its ACKs."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(CHILD.parent), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, str(CHILD), str(round_no), *disks], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    acked: dict[str, str] = {}
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY", f"child failed to start: {line!r} {proc.stderr.read()[-2000:]}"
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=30)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ACK":  # a torn last line is not an ACK
            acked[parts[1]] = parts[2]
    assert proc.returncode == -signal.SIGKILL, f"child exited on its own ({proc.returncode}): {err[-2000:]}"
    return acked, err


async def check_store(disks: list[str], acked: dict[str, str]) -> int:
    store = await Store.open(disks, **store_options())
    try:
        assert staging_files(disks) == [], "staging must be empty after open"
        for key, md5 in acked.items():
            data = await read_all(await store.get_object(BUCKET, key))
            assert hashlib.md5(data).hexdigest() == md5, f"acknowledged {key} is damaged"
        visible = []
        marker = ""
        while True:
            page = await store.list_objects(BUCKET, start_after=marker, limit=1000)
            visible += page.objects
            if not page.is_truncated:
                break
            marker = page.next_marker
        for obj in visible:  # acknowledged or not: whatever is visible is whole and right
            want = crash_content(obj.key)
            assert obj.size == len(want), obj.key
            data = await read_all(await store.get_object(BUCKET, obj.key))
            assert data == want, f"{obj.key} is visible but not what was written"
        assert set(acked) <= {o.key for o in visible}
        return len(visible)
    finally:
        await store.close()


async def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_disks) -> None:
    disks = tmp_disks(4)
    store = await Store.open(disks, **store_options())
    await store.make_bucket(BUCKET)
    await store.close()
    rnd = random.Random(int(os.environ.get("CRASH_SEED", time.time())))
    all_acked: dict[str, str] = {}
    total_acks = 0
    for round_no in range(ROUNDS):
        acked, _err = run_child(round_no, disks, rnd.uniform(0.05, 1.2))
        total_acks += len(acked)
        all_acked.update(acked)
        visible = await check_store(disks, all_acked)
        assert visible >= len(all_acked)
    assert total_acks > 0, "the child never acknowledged a write: the test proved nothing"
    print(f"crash test: {ROUNDS} rounds, {total_acks} acknowledged writes, all intact")
