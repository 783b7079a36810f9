"""Running ``buckets server`` as a real process for tests: one place for the plumbing.

Free ports on 127.0.0.1, the environment (no inherited ``BUCKETS_*``), spawning with the
log captured to a file, waiting until the port answers (or the process exits), and
stopping by process id: SIGTERM for a clean stop, SIGKILL after a grace period.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable
BIN = Path(PYTHON).parent


_HANDED_OUT: set[int] = set()

# Each test process (a pytest-xdist worker, or pytest alone) hands out ports from a block of
# its own below the kernel's ephemeral range (32768-60999 here), claimed with a lock file
# that the kernel releases when the process ends: a port one process picked and has not
# bound yet cannot be picked by another (the other worker, or another test run on this
# machine at the same time), nor taken meanwhile as the source port of a client's
# connection. The first PORTS_PICKED of a block are handed out as server ports; a cluster
# node's control port (+1000) stays inside the block.
PORT_LOW, PORT_HIGH = 10000, 32000
PORT_BLOCK = 2000
PORTS_PICKED = 1000
_block: int | None = None
_block_lock: object = None  # the open lock file, held for this process's life
_cursor = 0


def _claim_block() -> int | None:
    """This process's block (claimed on first use); None when every block is taken."""
    global _block, _block_lock
    if _block is None:
        for base in range(PORT_LOW, PORT_HIGH - PORT_BLOCK + 1, PORT_BLOCK):
            handle = open(os.path.join(tempfile.gettempdir(), f"buckets-test-ports-{base}.lock"), "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _block, _block_lock = base, handle
            break
    return _block


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports browsers and fetch() refuse to connect to (the Fetch standard's "bad ports", Chromium's
# kRestrictedPorts: ERR_UNSAFE_PORT): a console test handed 10080 cannot load its page, nor can
# Node's fetch() read a presigned URL there. Never handed out.
BAD_PORTS = frozenset({
    0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102,
    103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465,
    512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993,
    995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668,
    6669, 6679, 6697, 10080})


def free_port() -> int:
    """A port free on 127.0.0.1 now and never handed out before by this process. The kernel
    may give one ephemeral port to two binds in a row once the first socket closed: two nodes
    of one test given the same port would become one node with both nodes' disks (a 4-node
    cluster counted as 3), or the second server would fail to bind. Never one of
    :data:`BAD_PORTS`."""
    global _cursor
    block = _claim_block()
    if block is not None:
        for _ in range(2 * PORTS_PICKED):
            if _cursor >= PORTS_PICKED:  # a whole block used: its first ports are long closed
                _cursor = 0
                _HANDED_OUT.clear()
            port = block + _cursor
            _cursor += 1
            if port not in _HANDED_OUT and port not in BAD_PORTS and _bindable(port):
                _HANDED_OUT.add(port)
                return port
        raise RuntimeError(f"no free port left in this process's block {block}-{block + PORTS_PICKED}")
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT and port not in BAD_PORTS:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port left that this test process has not used")


def server_env(settings: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``BUCKETS_*`` of its own, plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BUCKETS_")}
    env.update(settings)
    env.update(extra or {})
    return env


def spawn(command: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=str(cwd))


def wait_listening(proc: subprocess.Popen, port: int, log_path: Path, timeout: float = 30.0,
                   poll: float = 0.05) -> bool:
    """True once the port accepts a connection; False if the process exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(poll)
    stop(proc)
    raise RuntimeError(f"server did not start listening within {timeout}s:\n{log_path.read_text(errors='replace')}")


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGTERM, wait, then SIGKILL if it hangs. Returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


@contextmanager
def no_new_tracebacks(log_text: Callable[[], str]) -> Iterator[None]:
    """Fail if the server logged a traceback or an unhandled error inside the block (a bug,
    whatever status the client saw)."""
    before = len(log_text())
    yield
    new = log_text()[before:]
    assert "Traceback" not in new and "unhandled error" not in new, f"server logged a bug:\n{new}"


@contextmanager
def no_new_tracebacks_in(log_path: Path) -> Iterator[None]:
    """``no_new_tracebacks`` for one log file that only grows: reads only the bytes appended
    inside the block, not the whole log twice (a session server's log grows to megabytes)."""
    def size() -> int:
        try:
            return log_path.stat().st_size
        except FileNotFoundError:
            return 0

    before = size()
    yield
    with open(log_path, "rb") as log_file:
        if size() >= before:  # else rewritten (a restart onto the same path): read it whole
            log_file.seek(before)
        new = log_file.read().decode("utf-8", errors="replace")
    assert "Traceback" not in new and "unhandled error" not in new, f"server logged a bug:\n{new}"


def make_certificates(directory: Path, *, name: str = "Buckets test CA",
                      ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path, Path]:
    """A test certificate authority and a certificate it signed for ``ips`` and localhost,
    valid for a day either side of now: (ca.crt, public.crt, private.key) in ``directory``
    (the names ``--certs-dir`` wants)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([*(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.crt", directory / "public.crt", directory / "private.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths
