"""The control plane's Raft metadata file (``raft.journal.meta``: term, vote, commit index).

pysyncobj calls ``setRaftCommitIndex`` on every append a follower receives, heartbeats
included, whether or not the index moved, and stores the file on its one-second timer
whenever that was called: an idle follower rewrote and fsynced it every second. It is now
written only when its content changes, and then durably (temp file, fsync, rename, directory
fsync). The calls below are the ones pysyncobj makes, on the real ``DurableJournal``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from buckets.cluster.control_raft import JOURNAL_FILE, DurableJournal


@pytest.fixture
def writes(monkeypatch) -> list[tuple[str, str]]:
    """Every file write that reaches the disk, as (what, path): the fsyncs and the renames."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        seen.append(("replace", str(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def meta_writes(seen: list[tuple[str, str]], meta: Path) -> int:
    return sum(1 for what, path in seen if what == "replace" and path == str(meta))


def stored(meta: Path) -> dict:
    with open(meta, "rb") as f:
        return pickle.load(f)  # pysyncobj's own file, written by this test


def test_an_idle_follower_does_not_rewrite_its_meta_file(tmp_path: Path, writes) -> None:
    path = tmp_path / JOURNAL_FILE
    meta = tmp_path / (JOURNAL_FILE + ".meta")
    journal = DurableJournal(str(path))
    try:
        journal.setCurrentTerm(3, "127.0.0.2:10000")  # a vote: stored at once, durably
        assert meta_writes(writes, meta) == 1
        assert ("fsync", str(meta) + ".tmp") in writes and ("fsync", str(tmp_path)) in writes
        journal.setRaftCommitIndex(7)
        journal.onOneSecondTimer()
        assert meta_writes(writes, meta) == 2
        assert stored(meta) == {"currentTerm": 3, "votedForNodeId": "127.0.0.2:10000", "raftCommitIndex": 7}

        before = os.stat(meta)
        del writes[:]
        for _ in range(20):  # heartbeats with nothing new, and the timer after each
            journal.setRaftCommitIndex(7)
            journal.onOneSecondTimer()
        journal.setCurrentTerm(3, "127.0.0.2:10000")  # the same term and vote again
        assert meta_writes(writes, meta) == 0 and not [p for _, p in writes if p.startswith(str(meta))]
        after = os.stat(meta)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

        journal.setRaftCommitIndex(8)  # a change is written, with its fsyncs
        journal.onOneSecondTimer()
        assert meta_writes(writes, meta) == 1
        assert ("fsync", str(meta) + ".tmp") in writes and ("fsync", str(tmp_path)) in writes
        assert stored(meta)["raftCommitIndex"] == 8
        journal.setCurrentTerm(4, None)  # a new term: stored at once
        assert meta_writes(writes, meta) == 2 and stored(meta)["currentTerm"] == 4
    finally:
        journal._destroy()


def test_after_a_restart_the_unchanged_meta_is_not_rewritten(tmp_path: Path, writes) -> None:
    path = tmp_path / JOURNAL_FILE
    meta = tmp_path / (JOURNAL_FILE + ".meta")
    first = DurableJournal(str(path))
    first.setCurrentTerm(5, "127.0.0.1:10000")
    first.setRaftCommitIndex(12)
    first.onOneSecondTimer()
    first._destroy()

    del writes[:]
    journal = DurableJournal(str(path))  # the node restarts over the same files
    try:
        assert (journal.getCurrentTerm(), journal.getVotedForNodeId(), journal.getRaftCommitIndex()) == (
            5, "127.0.0.1:10000", 12)
        for _ in range(5):
            journal.setRaftCommitIndex(12)
            journal.onOneSecondTimer()
        assert meta_writes(writes, meta) == 0
        journal.setRaftCommitIndex(13)
        journal.onOneSecondTimer()
        assert meta_writes(writes, meta) == 1 and stored(meta)["raftCommitIndex"] == 13
    finally:
        journal._destroy()
