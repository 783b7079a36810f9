"""The slow-client settings (timeouts, connection limits): layers, checks, and how the
connection limit is fitted to the open-file limit (in a child process under a real
`ulimit`, since the limit belongs to the process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from buckets.cli.config import ConfigError, build_config
from buckets.s3.connections import ConnectionGuard, ConnectionLimits, client_address


def test_defaults(tmp_path) -> None:
    config = build_config({"paths": [str(tmp_path)]}, {})
    limits = ConnectionLimits.from_config(config)
    assert limits == ConnectionLimits(header_timeout=10.0, body_timeout=60.0, idle_timeout=75.0,
                                      max_connections=4096, max_connections_per_client=512)


def test_layers_file_env_flags(tmp_path) -> None:
    config_file = tmp_path / "buckets.yaml"
    config_file.write_text("header_timeout: 5\nbody_timeout: 30\nidle_timeout: 90\n"
                           "max_connections: 100\nmax_connections_per_client: 10\n")
    config = build_config(
        {"paths": [str(tmp_path)], "config": str(config_file), "idle_timeout": "120"},
        {"BUCKETS_BODY_TIMEOUT": "2.5", "BUCKETS_MAX_CONNECTIONS_PER_CLIENT": "0"})
    assert (config.header_timeout, config.body_timeout, config.idle_timeout) == (5.0, 2.5, 120.0)
    assert (config.max_connections, config.max_connections_per_client) == (100, 0)


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({}, {"BUCKETS_HEADER_TIMEOUT": "0"}, "BUCKETS_HEADER_TIMEOUT: header timeout must be greater than 0"),
        ({"body_timeout": "soon"}, {}, "--body-timeout: body timeout must be a number"),
        ({"idle_timeout": "inf"}, {}, "idle timeout must be a number of at least 0"),
        ({"idle_timeout": "-1"}, {}, "idle timeout must be a number of at least 0"),
        ({"max_connections": "0"}, {}, "--max-connections: max connections must be at least 1"),
        ({}, {"BUCKETS_MAX_CONNECTIONS_PER_CLIENT": "-3"}, "max connections per client must be a whole number"),
    ],
)
def test_invalid_values(tmp_path, flags: dict, environ: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"paths": [str(tmp_path)], **flags}, environ)
    assert message in str(caught.value)


def test_guard_counts_per_address_and_in_total() -> None:
    guard = ConnectionGuard(ConnectionLimits(max_connections=3, max_connections_per_client=2))
    assert guard.admit("10.0.0.1") is None
    assert guard.admit("10.0.0.1") is None
    assert guard.admit("10.0.0.1") == "client"
    assert guard.admit("10.0.0.2") is None
    assert guard.full and guard.admit("10.0.0.3") == "server"
    guard.release("10.0.0.1")
    assert guard.admit("10.0.0.3") is None
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        guard.release(client)
    assert guard.open == 0 and guard.per_client == {}


def test_no_per_address_limit_when_zero() -> None:
    guard = ConnectionGuard(ConnectionLimits(max_connections=10, max_connections_per_client=0))
    assert all(guard.admit("10.0.0.1") is None for _ in range(10))
    assert guard.admit("10.0.0.1") == "server"


def test_client_address() -> None:
    assert client_address(("127.0.0.2", 5000)) == "127.0.0.2"
    assert client_address(("::ffff:10.1.2.3", 5000, 0, 0)) == "10.1.2.3"
    assert client_address(("2001:db8::1", 5000, 0, 0)) == "2001:db8::1"
    assert client_address("") == ""


def fit_under(ulimit: str) -> dict:
    """fit_to_fd_limit(4096) in a shell whose open-file limit was set with `ulimit ulimit`."""
    script = ("import json, resource; from buckets.s3.connections import fit_to_fd_limit; "
              "allowed, soft = fit_to_fd_limit(4096); "
              "print(json.dumps({'allowed': allowed, 'soft': soft, "
              "'now': resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))")
    result = subprocess.run(["sh", "-c", f'ulimit {ulimit} && exec "$0" -c "$1"', sys.executable, script],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_connection_limit_lowered_to_fit_a_hard_open_file_limit() -> None:
    fitted = fit_under("-n 600")  # soft and hard: nothing to raise
    assert fitted == {"allowed": (600 - 256) // 2, "soft": 600, "now": 600}


def test_soft_open_file_limit_raised_for_the_connection_limit() -> None:
    hard = int(subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout.strip()
               .replace("unlimited", str(1 << 30)))
    if hard < 2 * 4096 + 256:
        pytest.skip(f"the hard open-file limit ({hard}) is too low to show the raise")
    fitted = fit_under("-Sn 600")  # soft only: the server raises it itself
    assert fitted == {"allowed": 4096, "soft": 2 * 4096 + 256, "now": 2 * 4096 + 256}
