"""The control plane's Raft journal on a file system that fills up.

pysyncobj's ``FileJournal`` grows its file with ``ftruncate`` (sparse) and writes entries
through an mmap. On a full file system a write into such a hole finds no block to take, and
the kernel kills the process with SIGBUS: a cluster node ended with no log line while its
disks were full to the last block (session 39, ``tests/cluster/test_disk_full_cluster.py``,
once). ``DurableJournal`` now allocates the blocks first (``posix_fallocate``), so an append
that does not fit raises ``OSError`` (ENOSPC) with nothing changed, which the node's tick logs
and retries (``RaftNode._journal_full``). Run in a child process: before the fix the test
process itself would die."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from smalldisks import small_disks

CHILD = textwrap.dedent("""
    import os, sys
    from buckets.cluster.control_raft import DurableJournal

    root = sys.argv[1]
    journal = DurableJournal(os.path.join(root, "raft.journal"))
    fd = os.open(os.path.join(root, "fill"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)  # the file system full to its last block
    except OSError:
        pass
    os.close(fd)
    added, refused = 0, None
    for idx in range(1, 100_000):
        try:
            journal.add(b"entry %d " % idx + b"y" * 300, idx, 1)
        except OSError as exc:
            refused = exc
            break
        added = idx
    print("refused", refused.errno if refused else None, "kept", len(journal), "added", added, flush=True)
    os.unlink(os.path.join(root, "fill"))  # room again: the same entry goes in
    for idx in range(added + 1, added + 40):
        journal.add(b"entry %d " % idx + b"y" * 300, idx, 1)
    journal._destroy()
    again = DurableJournal(os.path.join(root, "raft.journal"))
    entries = [again[i] for i in range(len(again))]
    assert [e[1] for e in entries] == list(range(1, added + 40)), [e[1] for e in entries][-5:]
    assert all(e[0] == b"entry %d " % e[1] + b"y" * 300 for e in entries)
    print("reopened", len(entries), flush=True)
""")


def test_a_journal_on_a_full_file_system_refuses_an_entry_instead_of_killing_the_process(tmp_path: Path) -> None:
    with small_disks([tmp_path / "d"], 1) as (disk,):
        done = subprocess.run([sys.executable, "-c", CHILD, str(disk)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])  # (-7: SIGBUS before)
    refused, kept, added = done.stdout.split()[1:6:2]
    assert refused == "28" and int(kept) == int(added) > 0, done.stdout  # ENOSPC, and what it kept is all it took
    assert f"reopened {int(added) + 39}" in done.stdout



def test_a_term_or_vote_that_could_not_be_stored_is_not_kept(tmp_path: Path, monkeypatch) -> None:
    """pysyncobj's journal puts a new term and vote into its metadata, then writes it: a
    write that failed left them in memory, and the next store (the commit index, every
    second) made durable a term this node never announced."""
    import errno
    import os

    from buckets.cluster import control_raft

    path = str(tmp_path / "raft.journal")
    journal = control_raft.DurableJournal(path)
    journal.setCurrentTerm(3, "node-a")
    real = control_raft._DurableMeta.storeMeta

    def full(self, meta):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(control_raft._DurableMeta, "storeMeta", full)
    try:
        journal.setCurrentTerm(4, "node-b")
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    else:
        raise AssertionError("the store did not fail")
    assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (3, "node-a")
    monkeypatch.setattr(control_raft._DurableMeta, "storeMeta", real)
    journal.setRaftCommitIndex(7)
    journal.onOneSecondTimer()  # (pysyncobj's periodic store)
    journal._destroy()
    again = control_raft.DurableJournal(path)
    assert (again.getCurrentTerm(), again.getVotedForNodeId(), again.getRaftCommitIndex()) == (3, "node-a", 7)
