"""The console's settings (buckets.cli.config) and where the banner says the console is."""

from __future__ import annotations

import pytest

from buckets.cli.config import ConfigError, build_config
from buckets.cli.server import format_banner


def config(tmp_path, flags=None, env=None):
    return build_config({"paths": [str(tmp_path)], **(flags or {})}, env or {})


def test_defaults_serve_the_console_on_the_s3_port(tmp_path) -> None:
    cfg = config(tmp_path)
    assert cfg.console is True and cfg.console_address is None and cfg.console_session_ttl == 43200.0
    assert "Console:     http://127.0.0.1:9000/console/" in format_banner(cfg, (1, 0), 1)


def test_a_port_of_its_own_from_flags_or_environment(tmp_path) -> None:
    cfg = config(tmp_path, {"address": "127.0.0.1:9100", "console_address": ":9101", "console_session_ttl": "600"})
    assert cfg.console_address == ":9101" and cfg.console_session_ttl == 600.0
    assert "Console:     http://127.0.0.1:9101/console/" in format_banner(cfg, (1, 0), 1)
    env = config(tmp_path, env={"BUCKETS_CONSOLE_ADDRESS": "[::1]:9443", "BUCKETS_CERTS_DIR": "/etc/certs"})
    assert "Console:     https://[::1]:9443/console/" in format_banner(env, (1, 0), 1)


def test_the_console_can_be_turned_off(tmp_path) -> None:
    cfg = config(tmp_path, env={"BUCKETS_CONSOLE": "off"})
    assert cfg.console is False
    assert "Console:" not in format_banner(cfg, (1, 0), 1)


@pytest.mark.parametrize(("flags", "message"), [
    ({"console_address": ":9000"}, "uses the S3 port 9000"),
    ({"console_address": "nope"}, "--console-address: address 'nope' must be HOST:PORT"),
    ({"console_session_ttl": "0"}, "console session ttl must be greater than 0"),
    ({"console_session_ttl": "soon"}, "console session ttl must be a number"),
    ({"console": "maybe"}, "--console: must be on/off"),
])
def test_bad_console_settings_are_one_line_errors(tmp_path, flags, message) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, flags)
    assert message in str(caught.value)


def test_a_console_address_in_use_is_one_line_and_exit_1(tmp_path) -> None:
    import os
    import socket
    import subprocess
    import sys

    env = {name: value for name, value in os.environ.items() if not name.startswith("BUCKETS_")}
    with socket.socket() as holder, socket.socket() as probe:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        result = subprocess.run([sys.executable, "-m", "buckets", "server", "--address", f"127.0.0.1:{port}",
                                 "--console-address", f"127.0.0.1:{taken}", str(tmp_path / "data")],
                                capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"buckets: error: --console-address: cannot listen on 127.0.0.1:{taken}: address already in use "
        "(another server is running there; pick one with --console-address)")
    assert "Traceback" not in result.stderr + result.stdout
