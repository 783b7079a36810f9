"""Raft for the control plane: ``pysyncobj`` wired to the state machine, durable on disk.

What this adds to the library, and why:

- **One replicated method** (``RaftNode.command``) carrying a msgpack command for
  ``ControlMachine``. pysyncobj numbers replicated methods by their sorted names, so one
  method keeps log entries readable across versions of this code; the command itself
  carries its format version.
- **A durable journal.** pysyncobj 0.3.17's ``FileJournal`` writes log entries into an
  mmap and never syncs it (a crash of the process is survived through the page cache,
  a crash of the machine is not), and writes the term/vote file without fsync. Raft needs
  both on stable storage before it answers: ``DurableJournal`` msyncs after every change
  (before pysyncobj goes on to acknowledge an entry to the leader or count itself) and
  writes the metadata with fsync and an atomic rename. pysyncobj has no option for this
  and creates its journal itself, so ``createJournal`` in ``pysyncobj.syncobj`` is
  replaced (once, for every journal with a file; in-memory journals are unchanged).
  ``RaftNode`` checks it got one and refuses to start otherwise.
- **Snapshots in msgpack, not pickle.** Log compaction stores the state machine's own
  dump (``ControlMachine.dump``) through pysyncobj's ``serializer``/``deserializer`` hooks,
  fsynced; the same file is what a leader streams to a follower that fell behind.
- **Status published per tick.** pysyncobj's state lives in its tick thread; reading it
  from the event loop would race. A tick callback publishes an immutable ``RaftStatus``.

- **PreVote** (Raft thesis §9.6). pysyncobj starts an election by raising its term; a node
  cut off from its peers by a partition that still leaves its TCP connections open (packets
  dropped, not refused) raises its term at every election timeout, and when the partition
  heals that higher term makes the healthy leader step down: an election, and a few seconds
  in which no change commits, for nothing. Here a node whose election timeout has passed
  first asks its peers whether they would vote for it (``buckets_pre_vote``, with the term
  it would take and its log position); a peer says yes only if it has not heard from a
  leader for the minimum election timeout and the asker's log is at least as up to date as
  its own, and changes nothing either way. Only with a majority of yeses does the node let
  pysyncobj raise its term and run the real election. A leader's hand-over (TimeoutNow) goes
  straight to the election, as before. Safety does not depend on it (which elections start
  is Raft's liveness, not its safety); it keeps a healed node from disrupting the cluster.
- **A leader asked to remove itself hands over.** pysyncobj refuses to remove the node that
  leads (Raft would let it commit the change and step down; the library cannot), and answers
  the request like a change still in progress, for as long as that node leads: after a leader
  was killed and another elected, removing the new one answered `409` after its whole 30 s.
  A leader that receives a request to remove itself now hands leadership to its most
  caught-up follower (TimeoutNow), and the request, refused once more, is sent again by its
  node (``ControlPlane._submit``) to the new leader, which applies it.
- **A node behind a slow link does not lead.** Its followers hear its heartbeats within the
  election timeout, so nothing elects another, and every control change (buckets, users,
  topology) waits for its link: ~0.5 s each at 4 Mbit/s. While the other nodes find its link
  slow (``cluster/slowlink.py``: ``stand_aside``), a leader hands leadership to its most
  caught-up follower (TimeoutNow; asked again each second until another leads), and the
  node starts no election of its own. It still votes, answers pre-votes, and takes a
  hand-over a leader sends it: the cluster keeps a leader as long as a majority is up.
- **Strangers are cut off.** The library's traffic encryption (Fernet, keyed by PBKDF2 of
  ``SyncObjConf.password``) authenticates every message: a peer without the password is
  disconnected at its first complete message, before anything is unpickled. But pysyncobj
  waits as long as the peer likes for that message to complete (its 4-byte length prefix
  may announce 2 GiB) and buffers it all; ``GuardedTransport`` drops a connection that has
  not identified itself once it buffers more than a handshake's worth of bytes or is
  older than the connection timeout.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj import journal as _journal
from pysyncobj import syncobj as _syncobj
from pysyncobj.syncobj import _COMMAND_TYPE, _RAFT_STATE
from pysyncobj.monotonic import monotonic
from pysyncobj.node import TCPNode
from pysyncobj.pickle import dumps as _pickle_dumps
from pysyncobj.transport import TCPTransport

from buckets.cluster.control_state import ControlMachine

log = logging.getLogger("buckets.cluster.control")

JOURNAL_FILE = "raft.journal"  # pysyncobj adds raft.journal.meta (term, vote, commit index)
SNAPSHOT_FILE = "raft.snapshot"
SNAPSHOT_KIND = "buckets-control-snapshot"

_RAFT_STATES = {0: "follower", 1: "candidate", 2: "leader"}
JOURNAL_FULL_LOG_EVERY = 60.0  # seconds between "journal full" warnings (with a count)
# errnos that say the journal's disk failed (not full): the entry was not stored either
JOURNAL_DISK_FAILED = (errno.EIO, errno.EROFS, errno.ENODEV, errno.ENXIO, errno.ESTALE)
JOURNAL_FULL_SECONDS = 10.0  # the status says "journal full" this long after an entry did not fit
PRE_VOTE = "buckets_pre_vote"
PRE_VOTE_ANSWER = "buckets_pre_vote_answer"


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DurableMeta(_journal.MetaStorer):
    """pysyncobj's term/vote/commit-index file, written with fsync and an atomic rename.

    pysyncobj stores it on its one-second timer whenever ``setRaftCommitIndex`` was called,
    and a follower calls that on every append (heartbeats included) even when the index did
    not move: an idle follower would rewrite and fsync the file every second. A store whose
    bytes equal what the file already holds is skipped; a change is written durably (temp
    file, fsync, rename, directory fsync) before ``storeMeta`` returns."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            with open(path, "rb") as f:
                self._stored: bytes | None = f.read()  # what the file holds, as last written or read
        except FileNotFoundError:
            self._stored = None

    def storeMeta(self, meta: dict) -> None:  # noqa: N802 (pysyncobj's name)
        data = _pickle_dumps(meta)
        if data == self._stored:
            return
        path = self.getPath()
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))
        self._stored = data


def _check_journal_header(path: str) -> None:
    """Refuse a journal file pysyncobj would misread: it checks nothing, and a damaged header
    can read as an empty journal (a node that forgot its log and its votes)."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return
    if size == 0:  # created, then the process died before the header was synced
        os.remove(path)
        return
    # Every byte read with pread first: pysyncobj reads the entries through a map, where a page
    # the disk cannot read (a bad sector) ends the process with SIGBUS, at every start.
    from buckets.registry.store import read_file_through

    read_file_through(path)
    with open(path, "rb") as f:
        header = f.read(_journal.FIRST_RECORD_OFFSET)
    name = _journal.APP_NAME + b"\0" * (_journal.NAME_SIZE - len(_journal.APP_NAME))
    if len(header) < _journal.FIRST_RECORD_OFFSET or header[:_journal.NAME_SIZE] != name:
        raise ValueError(f"{path} is not a pysyncobj journal")
    version, last = struct.unpack_from("<II", header, _journal.NAME_SIZE + _journal.VERSION_SIZE)
    if version != _journal.JOURNAL_FORMAT_VERSION or not _journal.FIRST_RECORD_OFFSET <= last <= size:
        raise ValueError(f"{path}: damaged journal header (format {version}, end {last} of {size} bytes)")


class DurableJournal(_journal.FileJournal):
    """pysyncobj's file journal, synced to disk after every change, checked when opened, its
    blocks allocated before they are written (``_room``)."""

    def __init__(self, path: str) -> None:
        _check_journal_header(path)
        super().__init__(path)
        indices = [self[i][1] for i in range(len(self))]
        if any(b != a + 1 for a, b in zip(indices, indices[1:])):
            self._destroy()
            raise ValueError(f"{path}: damaged journal (entry indices are not consecutive)")
        shape = ("_FileJournal__metaStorer", "_FileJournal__journalFile", "_FileJournal__currentOffset",
                 "_FileJournal__meta")
        if not all(hasattr(self, name) for name in shape) or not all(
                hasattr(self._FileJournal__journalFile, f"_ResizableFile__{name}") for name in ("mm", "f")):
            raise RuntimeError("pysyncobj's FileJournal changed shape; DurableJournal needs updating")
        self._FileJournal__metaStorer = _DurableMeta(path + ".meta")
        self._directory = os.path.dirname(path)
        self._batch = False
        self._allocated = 0
        self.added_at = float("-inf")  # monotonic() of the last entry stored
        try:
            self._room(0)  # holes a sparse growth left (pysyncobj's own, before this code did it)
        except OSError as exc:
            self._destroy()
            raise OSError(exc.errno, f"{path}: no room to allocate the control plane's journal "
                                     f"({os.strerror(exc.errno or 0)})") from None
        self.flush()
        _fsync_dir(self._directory)

    def _room(self, end: int) -> None:
        """Have the file's blocks allocated up to its mapped length, first grown to hold ``end``
        bytes (doubled, as pysyncobj grows it), before a byte is written there.

        pysyncobj grows the file with ``ftruncate`` (sparse) and writes through an mmap. On a
        full file system a write into such a hole gets no block, and the kernel kills the
        process with SIGBUS: a node ended without a log line when its disks filled up
        (``tests/unit/cluster/test_control_raft_journal.py``). ``posix_fallocate`` fails with
        ENOSPC instead, an ``OSError`` raised here before anything changed: the tick ends
        (``RaftNode._journal_full`` says so) and the append, not acknowledged, comes again."""
        journal_file = self._FileJournal__journalFile
        mapped, fh = journal_file._ResizableFile__mm, journal_file._ResizableFile__f
        size = len(mapped)
        if end > size:
            size = max(size * 2, end)
        if size > self._allocated:
            os.posix_fallocate(fh.fileno(), 0, size)
            if size > len(mapped):
                mapped.resize(size)  # (the file has that length already: only the mapping grows)
            self._allocated = size

    def add(self, command: bytes, idx: int, term: int) -> None:
        # the record: its length, index and term (4 + 16 bytes), the command, its length again
        self._room(self._FileJournal__currentOffset + 24 + len(command))
        super().add(command, idx, term)
        self.added_at = monotonic()
        if not self._batch:
            self.flush()

    def clear(self) -> None:
        super().clear()
        if not self._batch:
            self.flush()

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802,N803 (pysyncobj's names)
        """Store the term and vote (synchronously, as Raft needs). pysyncobj's journal puts them
        into its metadata before it writes the file: a write that fails (ENOSPC) would leave
        them there, and the next store of the commit index would make them durable after all,
        though this node never acted on them (``RaftNode._SyncObj__setCurrentTerm`` undoes its
        own copy). Undone here too."""
        meta = self._FileJournal__meta
        before = dict(meta)
        try:
            super().setCurrentTerm(term, votedForNodeId)
        except OSError:
            meta.clear()
            meta.update(before)
            raise

    def _destroy(self) -> None:
        """Close the journal. Its last flush may fail on a disk that failed (EIO): whatever was
        not synced was never acknowledged (every change is flushed before it counts), so the
        file is closed all the same instead of raising in pysyncobj's tick thread."""
        try:
            super()._destroy()
        except OSError as exc:
            log.error("control plane: closing its journal failed: %s", exc)
            journal_file = self._FileJournal__journalFile
            for handle in (journal_file._ResizableFile__mm, journal_file._ResizableFile__f):
                try:
                    handle.close()
                except (OSError, ValueError):
                    pass

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802,N803
        super().deleteEntriesFrom(entryFrom)
        self.flush()

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802,N803
        # Called once a snapshot covering these entries was renamed into place: make that
        # rename durable before the entries it replaces are dropped, then rewrite in one sync.
        _fsync_dir(self._directory)
        self._batch = True
        try:
            super().deleteEntriesTo(entryTo)
        finally:
            self._batch = False
        self.flush()


_install_lock = threading.Lock()


def _install_durable_journal() -> None:
    with _install_lock:
        if getattr(_syncobj.createJournal, "buckets_durable", False):
            return

        def create_journal(journalFile: str | None = None) -> _journal.Journal:  # noqa: N803
            return _journal.MemoryJournal() if journalFile is None else DurableJournal(journalFile)

        create_journal.buckets_durable = True  # type: ignore[attr-defined]
        _syncobj.createJournal = create_journal


def align_journal(journal: _journal.Journal | None, last: tuple, previous: tuple) -> None:
    """Make a journal that still holds the entries a snapshot covers start at that snapshot.

    pysyncobj truncates the journal one tick after it renamed a snapshot into place. If the
    process dies in between, the journal on disk still starts at the beginning, and on
    restart pysyncobj, seeing a journal that does not start with the snapshot's last two
    entries, clears it down to those two: every entry after the snapshot (acknowledged,
    perhaps committed) would be lost here. Dropping just the entries before the snapshot
    is what the truncation would have done.
    """
    if journal is None or len(journal) < 2 or (journal[0] == previous and journal[1] == last):
        return
    position = previous[1] - journal[0][1]
    if 0 < position < len(journal) - 1 and journal[position] == previous and journal[position + 1] == last:
        journal.deleteEntriesTo(position)


def _snapshot_hooks(machine: ControlMachine, journal: Callable[[], _journal.Journal | None]) -> tuple[Callable, Callable]:
    """pysyncobj's serializer/deserializer: our state in msgpack plus the raft fields it needs."""

    refused = {"at": float("-inf"), "quiet": 0}  # the last "could not write" line, and how many since

    def serialize(filename: str, data: tuple) -> None:
        last, previous, cluster = data
        document = {
            "kind": SNAPSHOT_KIND,
            "machine": machine.dump(),
            "raft": {"last": list(last), "previous": list(previous),
                     "cluster": sorted(node.id for node in cluster)},
        }
        try:
            with open(filename, "wb") as f:
                f.write(msgpack.packb(document, use_bin_type=True))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) and exc.errno not in JOURNAL_DISK_FAILED:
                log.exception("control plane: could not write the snapshot %s", filename)
                raise
            # Its disk full or failed: pysyncobj tries again at every tick; said once a minute.
            now = monotonic()
            if now - refused["at"] >= JOURNAL_FULL_LOG_EVERY:
                more = f" ({refused['quiet']} more since)" if refused["quiet"] else ""
                log.error("control plane: could not write the snapshot %s: %s%s", filename, exc, more)
                refused["at"], refused["quiet"] = now, 0
            else:
                refused["quiet"] += 1
            raise

    def deserialize(filename: str) -> tuple:
        with open(filename, "rb") as f:
            document = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
        if not isinstance(document, dict) or document.get("kind") != SNAPSHOT_KIND:
            raise ValueError(f"{filename} is not a control-plane snapshot")
        machine.load(document["machine"])
        raft = document["raft"]
        last, previous = tuple(raft["last"]), tuple(raft["previous"])
        align_journal(journal(), last, previous)
        return last, previous, [TCPNode(a) for a in raft["cluster"]]

    return serialize, deserialize


class GuardedTransport(TCPTransport):
    """pysyncobj's TCP transport with a bound on incoming connections that have not yet
    identified themselves (completed the encrypted handshake)."""

    HANDSHAKE_BYTES = 64 * 1024  # a handshake is two small Fernet tokens

    def __init__(self, syncObj: SyncObj, selfNode: TCPNode, otherNodes: Iterable[TCPNode]) -> None:  # noqa: N803
        self._strangers: dict[Any, float] = {}  # connection -> when it was accepted
        super().__init__(syncObj, selfNode, otherNodes)

    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802
        super()._onNewIncomingConnection(conn)
        self._strangers[conn] = monotonic()

    def _onTick(self) -> None:  # noqa: N802
        super()._onTick()
        if self._strangers:
            self._drop_strangers()

    def _drop_strangers(self) -> None:
        now, limit = monotonic(), self._syncObj.conf.connectionTimeout
        for conn, accepted in list(self._strangers.items()):
            if conn not in self._unknownConnections:  # identified, or gone
                del self._strangers[conn]
                continue
            buffered = len(getattr(conn, "_TcpConnection__readBuffer", b""))
            if now - accepted > limit or buffered > self.HANDSHAKE_BYTES:
                del self._strangers[conn]
                conn.disconnect()


@dataclass(frozen=True, slots=True)
class RaftStatus:
    """What this node's Raft knows, as of its last tick."""

    address: str
    role: str  # leader | follower | candidate
    leader: str | None
    term: int
    commit_index: int
    last_applied: int
    has_quorum: bool
    members: tuple[str, ...]  # every voting member, this node included
    connected: frozenset[str]  # members this node has a live connection to (itself included)
    match_index: dict[str, int]  # leader only: how far each follower's log is known to match
    log_entries: int
    journal_full: bool = False  # an entry did not fit in the journal in the last JOURNAL_FULL_SECONDS
    leader_commit_index: int | None = None  # the commit index the leader last announced here
    journal_refusing: bool = False  # the last entry offered to the journal did not fit (none stored since)
    journal_failed: bool = False  # ... of journal_full, the ones its failed disk refused (I/O errors)

    @property
    def behind(self) -> bool:
        """This node's journal cannot take entries (its disk full) and the leader committed
        changes it has not applied: its bucket settings, policies and users are stale. (Not
        the ordinary lag of a follower: once an entry fits again, the node is catching up.)"""
        return (self.journal_refusing and self.leader_commit_index is not None
                and self.leader_commit_index > self.last_applied)


class RaftNode(SyncObj):
    """A pysyncobj node applying ``ControlMachine`` commands. Construct on a long-lived
    thread: pysyncobj's tick thread stops when the constructing thread exits."""

    def __init__(self, address: str, members: Iterable[str], conf: SyncObjConf, machine: ControlMachine) -> None:
        _install_durable_journal()
        self._machine = machine
        self._status: RaftStatus | None = None
        # PreVote (module doc). Set before pysyncobj starts ticking: all of it lives on the tick
        # thread, as pysyncobj's own state does.
        self._pre_round = 0  # this node's current pre-vote round
        self._pre_grants: set[str] = set()  # who said yes in it (this node included)
        self._pre_won = False  # a majority said yes: the next tick runs the real election
        self._full_logged = float("-inf")  # monotonic() of the last "journal full" warning
        self._full_quiet = 0  # ticks that failed the same way since
        self._full_at = float("-inf")  # monotonic() of the last entry that did not fit
        self._failed_at = float("-inf")  # ... of the last one the journal's failed disk refused
        self._handed_over_at = float("-inf")  # ... and of the last hand-over it made this node ask for
        self._leader_heard = 0.0  # monotonic time of the last append_entries from a current leader
        # Set from the event loop while the other nodes find this node's link slow (module doc;
        # one attribute, read by the tick thread).
        self.stand_aside = False
        # The dump is loaded on pysyncobj's first tick, after its journal exists.
        serialize, deserialize = _snapshot_hooks(machine, lambda: getattr(self, "_SyncObj__raftLog", None))
        conf.serializer, conf.deserializer = serialize, deserialize
        super().__init__(address, [m for m in members if m != address], conf, transportClass=GuardedTransport)
        if conf.journalFile is not None and not isinstance(getattr(self, "_SyncObj__raftLog", None), DurableJournal):
            self.destroy()
            raise RuntimeError("pysyncobj did not take the durable journal; refusing to run without fsync")
        self.addOnTickCallback(self._publish_status)

    @replicated
    def command(self, payload: bytes) -> Any:
        return self._machine.apply(payload)

    # -- PreVote (module doc) -------------------------------------------------------------------

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802,N803 (pysyncobj's names)
        if self.stand_aside:
            self._step_aside()
        self._pre_vote_gate()
        try:
            super()._onTick(timeToWait)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) and exc.errno not in JOURNAL_DISK_FAILED:
                raise  # (pysyncobj's tick loop logs it and goes on)
            self._journal_full(exc)
            time.sleep(max(timeToWait, 0.01))

    def _journal_full(self, exc: OSError) -> None:
        """An entry did not fit in the journal (its disk full: ``DurableJournal._room``), or its
        disk failed (an I/O error, a file system gone read-only: ``JOURNAL_DISK_FAILED``): it was
        not stored, so not acknowledged; the leader sends it again, or the request times out.
        Said once a minute with a count (every append fails so until there is room, or until
        the disk is replaced), and a leader hands leadership over: the cluster's changes go on
        through a node that can store them, while this one catches up once its disk has room."""
        now = self._full_at = monotonic()
        failed = exc.errno in JOURNAL_DISK_FAILED
        if failed:
            self._failed_at = now
        if now - self._full_logged >= JOURNAL_FULL_LOG_EVERY:
            more = f" ({self._full_quiet} more since)" if self._full_quiet else ""
            if failed:
                log.error("control plane: its journal's disk failed (%s): this node stores no control-plane "
                          "entry and takes no part in its decisions until that disk is replaced%s", exc, more)
            else:
                log.warning("control plane: its journal's disk is full (%s): entries are not stored until "
                            "there is room%s", exc, more)
            self._full_logged, self._full_quiet = now, 0
        else:
            self._full_quiet += 1
        if (self._SyncObj__raftState == _RAFT_STATE.LEADER and self._SyncObj__otherNodes
                and now - self._handed_over_at >= 1.0):  # (the tick fails again until another leads)
            self._handed_over_at = now
            log.warning("control plane: this node leads but cannot store entries; handing leadership over")
            self.transferLeadership(None)

    def _step_aside(self) -> None:
        """This node's link is slow (``stand_aside``): if it leads, hand leadership over (asked
        again each second: pysyncobj refuses while no follower is connected and caught up)."""
        now = monotonic()
        if (self._SyncObj__raftState == _RAFT_STATE.LEADER and self._SyncObj__otherNodes
                and now - self._handed_over_at >= 1.0):
            self._handed_over_at = now
            log.warning("control plane: the other nodes find this node's link slow; handing leadership over")
            self.transferLeadership(None)

    def _pre_vote_gate(self) -> None:
        """Where pysyncobj's tick would start an election, run a pre-vote round instead,
        unless the last round won (then let the tick start the election)."""
        others = self._SyncObj__otherNodes
        if (self._SyncObj__selfNode is None or not others
                or self._SyncObj__raftState == _RAFT_STATE.LEADER
                or self._SyncObj__raftElectionDeadline >= monotonic()
                or self._SyncObj__transferInProgress  # the leader handed over: elect at once
                or not self._SyncObj__connectedToAnyone()):
            return
        if self.stand_aside:  # (module doc) no election from here: another node leads
            self._pre_won = False
            self._SyncObj__raftElectionDeadline = monotonic() + self._SyncObj__generateRaftTimeout()
            return
        if self._pre_won:
            self._pre_won = False
            return
        self._SyncObj__raftElectionDeadline = monotonic() + self._SyncObj__generateRaftTimeout()
        self._pre_round += 1
        self._pre_grants = {self._SyncObj__selfNode.id}
        message = {"type": PRE_VOTE, "term": self._SyncObj__raftCurrentTerm + 1, "round": self._pre_round,
                   "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
        for node in list(others):
            self._SyncObj__transport.send(node, message)

    def _SyncObj__setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802,N803 (pysyncobj's)
        """pysyncobj takes a new term (or vote) in memory, then stores it. A store that fails
        (its disk full: ``DurableJournal.setCurrentTerm``) left this node at a term no other node
        knew: a candidate whose vote requests were never sent, which ignored the leader's
        appends (pysyncobj drops those of a lower term without an answer), and which PreVote
        kept from running an election while the others heard their leader. Stuck so, it never
        caught up once the disk had room (``tests/cluster/test_disk_full_cluster.py``). The term
        and vote it could not store are undone: Raft acts only on what is durable."""
        before = (self._SyncObj__raftCurrentTerm, self._SyncObj__votedForNodeId)
        try:
            SyncObj._SyncObj__setCurrentTerm(self, term, votedForNodeId)
        except OSError:
            self._SyncObj__raftCurrentTerm, self._SyncObj__votedForNodeId = before
            raise

    def _SyncObj__onMessageReceived(self, node: Any, message: dict) -> None:  # noqa: N802 (overrides pysyncobj's)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == PRE_VOTE:
            self._answer_pre_vote(node, message)
            return
        if kind == PRE_VOTE_ANSWER:
            self._count_pre_vote(node, message)
            return
        if kind == "append_entries" and message.get("term", -1) >= self._SyncObj__raftCurrentTerm:
            self._leader_heard = monotonic()
        if kind == "apply_command" and self._SyncObj__raftState == _RAFT_STATE.LEADER:
            self._hand_over_if_leaving(message.get("command"))
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _hand_over_if_leaving(self, command: Any) -> None:
        """A follower forwarded a request to remove this node (the leader), which pysyncobj
        refuses while this node leads: hand leadership over, so the request, sent again,
        reaches a leader that can apply it (module doc)."""
        if not isinstance(command, bytes) or command[:1] != bytes([_COMMAND_TYPE.MEMBERSHIP]):
            return
        try:
            request = self._SyncObj__parseChangeClusterRequest(command)
        except Exception:  # noqa: BLE001 - pysyncobj refuses what it cannot read, as before
            return
        me = self._SyncObj__selfNode
        if (isinstance(request, list | tuple) and len(request) >= 2 and request[0] == "rem"
                and me is not None and request[1] == me.id and not self._SyncObj__transferInProgress):
            log.info("control plane: asked to remove this node, the leader; handing leadership over")
            self.transferLeadership(None)

    def _answer_pre_vote(self, node: Any, message: dict) -> None:
        """Would this node vote for the asker? Changes nothing here either way."""
        try:
            term, last_index, last_term = int(message["term"]), int(message["last_log_index"]), int(message["last_log_term"])
        except (KeyError, TypeError, ValueError):
            return
        my_term, my_index = self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()
        grant = (self._SyncObj__raftState != _RAFT_STATE.LEADER
                 and monotonic() - self._leader_heard >= self._SyncObj__conf.raftMinTimeout
                 and term > self._SyncObj__raftCurrentTerm
                 and (last_term > my_term or (last_term == my_term and last_index >= my_index)))
        self._SyncObj__transport.send(node, {"type": PRE_VOTE_ANSWER, "round": message.get("round"),
                                             "granted": grant, "term": self._SyncObj__raftCurrentTerm})

    def _count_pre_vote(self, node: Any, message: dict) -> None:
        if (message.get("round") != self._pre_round or not message.get("granted")
                or self._SyncObj__raftState == _RAFT_STATE.LEADER or self._pre_won):
            return
        self._pre_grants.add(node.id)
        if len(self._pre_grants) > (len(self._SyncObj__otherNodes) + 1) / 2:
            self._pre_won = True
            self._SyncObj__raftElectionDeadline = 0  # the next tick starts the election

    def _publish_status(self) -> None:
        status = self.getStatus()
        me = self.selfNode.id
        others = sorted(node.id for node in self.otherNodes)
        leader = status["leader"]
        self._status = RaftStatus(
            address=me,
            role=_RAFT_STATES.get(status["state"], "unknown"),
            leader=leader.id if leader is not None else None,
            term=status["raft_term"],
            commit_index=status["commit_idx"],
            last_applied=status["last_applied"],
            has_quorum=status["has_quorum"],
            members=tuple(sorted([me, *others])),
            connected=frozenset([me, *(n for n in others if status.get(f"partner_node_status_server_{n}") == 2)]),
            match_index={n: status[f"match_idx_server_{n}"] for n in others
                         if f"match_idx_server_{n}" in status} if status["state"] == 2 else {},
            log_entries=status["log_len"],
            journal_full=monotonic() - self._full_at < JOURNAL_FULL_SECONDS,
            leader_commit_index=status.get("leader_commit_idx"),
            journal_refusing=self._full_at > getattr(getattr(self, "_SyncObj__raftLog", None), "added_at", 0.0),
            journal_failed=monotonic() - self._failed_at < JOURNAL_FULL_SECONDS,
        )

    @property
    def published_status(self) -> RaftStatus | None:
        return self._status
