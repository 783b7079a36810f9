"""The `buckets` command line: exit codes, error lines, --help, banner text."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from buckets.cli.config import SETTINGS, build_config
from buckets.cli.server import format_banner, main, print_banner


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    out, err = capsys.readouterr()
    return caught.value.code, out, err


@pytest.fixture
def clean_env(monkeypatch):
    for name in [name for name in os.environ if name.startswith("BUCKETS_")]:
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["server"], {}, "no disk paths given"),
        (["server", "--parity", "two", "{tmp}"], {}, "--parity: parity must be a whole number"),
        (["server", "--address", ":70000", "{tmp}"], {}, "port must be a number from 1 to 65535"),
        (["server", "{tmp}/d{{4...1}}"], {}, "is descending"),
        (["server", "{tmp}"], {"BUCKETS_ROOT_PASSWORD": "short"},
         "BUCKETS_ROOT_PASSWORD: root password must be at least 8 characters"),
        (["server", "{tmp}"], {"BUCKETS_ROOT_USER": "ab"}, "root user must be at least 3 characters"),
        (["server", "{tmp}"], {"BUCKETS_PARITY": "x"}, "BUCKETS_PARITY: parity must be a whole number"),
        (["server", "http://node{{1...4}}:9000/data{{1...4}}"], {},
         "no node in the endpoint list matches this host's own addresses on port 9000"),
        (["server", "{tmp}/a", "http://localhost:9000/b"], {}, "local paths and URLs cannot be mixed"),
        (["server", "{tmp}/d{{1...2}}", "{tmp}/d2"], {}, "duplicate disk"),
        (["server", "--config", "{tmp}/missing.yaml", "{tmp}"], {}, "cannot read config file"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(tmp_path, capsys, clean_env, argv, env, message) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    code, out, err = run_main([arg.format(tmp=tmp_path) for arg in argv], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("buckets: error: ")
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_flag_is_argparse_usage_error(capsys, clean_env) -> None:
    code, _, err = run_main(["server", "--nope", "/tmp/x"], capsys)
    assert code == 2
    assert "unrecognized arguments: --nope" in err


def test_no_command_prints_help_and_exits_2(capsys, clean_env) -> None:
    code, _, err = run_main([], capsys)
    assert code == 2
    assert "server" in err


def test_help_documents_every_option(capsys) -> None:
    code, out, _ = run_main(["server", "--help"], capsys)
    assert code == 0
    flat = " ".join(out.split())  # argparse wraps lines; compare on collapsed whitespace
    assert "--config" in flat and "BUCKETS_CONFIG" in flat
    assert "PATH" in flat
    for setting in SETTINGS:
        assert setting.env in flat, setting.name
        if setting.flag:
            assert setting.flag in flat, setting.name
            assert f"[env {setting.env}]" in flat, setting.name
    assert "(default: :9000)" in flat
    assert "(default: 131072)" in flat


def test_version(capsys) -> None:
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out.startswith("buckets 0.")


def test_python_dash_m_buckets_runs_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "buckets", "server", "--address", "nope"],
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("BUCKETS_")})
    assert result.returncode == 2
    assert result.stderr.strip() == ("buckets: error: --address: address 'nope' must be HOST:PORT or :PORT, "
                                     "e.g. :9000 or 127.0.0.1:9000")


# --- banner ---------------------------------------------------------------------------------


def test_banner_with_default_credentials_warns(tmp_path) -> None:
    config = build_config({"paths": [f"{tmp_path}/d{{1...4}}"], "address": "127.0.0.1:9100"}, {})
    stream = io.StringIO()
    print_banner(config, (2, 2), 4, stream)
    text = stream.getvalue()
    assert "S3 endpoint: http://127.0.0.1:9100" in text
    assert f"Disks (4): {tmp_path}/d1 {tmp_path}/d2 {tmp_path}/d3 {tmp_path}/d4" in text
    assert "2 data + 2 parity" in text
    assert "RootUser:    bucketsadmin" in text
    assert "WARNING: the root credentials are the published defaults" in text
    assert "BUCKETS_ROOT_USER and BUCKETS_ROOT_PASSWORD" in text


def test_banner_with_own_credentials_hides_the_secret(tmp_path) -> None:
    config = build_config({"paths": [str(tmp_path)], "domains": ["s3.example.com"]},
                          {"BUCKETS_ROOT_USER": "alice", "BUCKETS_ROOT_PASSWORD": "correct-horse"})
    stream = io.StringIO()
    print_banner(config, (1, 0), 1, stream)
    text = stream.getvalue()
    assert "RootUser:    alice" in text
    assert "correct-horse" not in text
    assert "WARNING" not in text
    assert "1 data + 0 parity" in text
    assert "Domains:     s3.example.com" in text
    # a wildcard bind lists loopback so the first URL works from this machine
    assert "http://127.0.0.1:9000" in text


def test_banner_before_store_layout_is_known(tmp_path) -> None:
    config = build_config({"paths": [str(tmp_path)], "sync": "off"}, {})
    text = format_banner(config, None)
    assert "decided when the store opens" in text
    assert "Sync:        off" in text
