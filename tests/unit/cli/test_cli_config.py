"""Config layering (defaults < file < environment < flags) and value validation."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from buckets.cli.config import (
    SETTINGS,
    Config,
    ConfigError,
    build_config,
    split_address,
)

REPO = Path(__file__).resolve().parents[3]


def write_yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "buckets.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_work_with_only_a_path(tmp_path) -> None:
    config = build_config({"paths": [str(tmp_path)]}, {})
    assert config.disk_paths == [str(tmp_path)]
    assert (config.host, config.port) == ("", 9000)
    assert config.domains == []
    assert config.parity is None
    assert (config.root_user, config.root_password) == ("bucketsadmin", "bucketsadmin")
    assert config.using_default_credentials
    assert config.region == "us-east-1"
    assert config.sync is True
    assert config.cache_size == 50_000
    assert config.inline_threshold == 131072
    assert config.log_format == "json"
    assert config.metrics_auth == "public"
    assert config.config_file is None


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [(":9000", "", 9000), ("127.0.0.1:9100", "127.0.0.1", 9100), ("[::1]:9000", "::1", 9000),
     ("localhost:1", "localhost", 1), ("0.0.0.0:65535", "0.0.0.0", 65535)],
)
def test_split_address(address: str, host: str, port: int) -> None:
    assert split_address(address) == (host, port)


def test_layers_apply_in_order_file_env_flags(tmp_path) -> None:
    config_file = write_yaml(tmp_path, f"""
paths: ["{tmp_path}/file{{1...4}}"]
address: "127.0.0.1:9001"
region: file-region
parity: 1
cache_size: 10
log_level: debug
""")
    environ = {
        "BUCKETS_CONFIG": config_file,
        "BUCKETS_ADDRESS": "127.0.0.1:9002",
        "BUCKETS_REGION": "env-region",
        "BUCKETS_CACHE_SIZE": "20",
    }
    flags = {"address": "127.0.0.1:9003", "paths": [f"{tmp_path}/flag{{1...2}}"]}
    config = build_config(flags, environ)
    assert config.address == "127.0.0.1:9003"  # flag beats env and file
    assert config.disk_paths == [f"{tmp_path}/flag1", f"{tmp_path}/flag2"]  # flag beats file
    assert config.region == "env-region"  # env beats file
    assert config.cache_size == 20  # env beats file
    assert config.parity == 1  # file beats default
    assert config.log_level == "debug"  # file beats default
    assert config.sync is True  # default
    assert config.config_file == config_file


def test_config_flag_beats_config_env(tmp_path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text("region: from-a\n")
    second = tmp_path / "b.yaml"
    second.write_text("region: from-b\n")
    config = build_config({"config": str(second), "paths": [str(tmp_path)]}, {"BUCKETS_CONFIG": str(first)})
    assert config.region == "from-b"


def test_environment_names(tmp_path) -> None:
    environ = {
        "BUCKETS_VOLUMES": f"{tmp_path}/a {tmp_path}/b{{1...2}}",
        "BUCKETS_DOMAIN": "S3.Example.com, s3.example.org,",
        "BUCKETS_PARITY": "1",
        "BUCKETS_SYNC": "off",
        "BUCKETS_ROOT_USER": "admin",
        "BUCKETS_ROOT_PASSWORD": "s3cr3t-password",
        "BUCKETS_INLINE_THRESHOLD": "0",
        "BUCKETS_LOG_FORMAT": "Console",
        "BUCKETS_METRICS_AUTH": "bearer",
        "BUCKETS_METRICS_TOKEN": "a-token-of-32-characters-0123456",
        "BUCKETS_SCANNER_RATE": "0",
        "BUCKETS_SCANNER_MB_RATE": "12.5",
        "BUCKETS_SHUTDOWN_TIMEOUT": "2.5",
        "BUCKETS_PARITY_UNRELATED": "x",
    }
    config = build_config({}, environ)
    assert config.disk_paths == [f"{tmp_path}/a", f"{tmp_path}/b1", f"{tmp_path}/b2"]
    assert config.domains == ["s3.example.com", "s3.example.org"]
    assert config.parity == 1
    assert config.sync is False
    assert (config.root_user, config.root_password) == ("admin", "s3cr3t-password")
    assert not config.using_default_credentials
    assert config.inline_threshold == 0
    assert config.log_format == "console"
    assert config.metrics_auth == "bearer"
    assert config.metrics_token == "a-token-of-32-characters-0123456"
    assert config.scanner_rate == 0.0
    assert config.scanner_mb_rate == 12.5
    assert config.shutdown_timeout == 2.5


@pytest.mark.parametrize(("text", "expected"), [("off", False), ("false", False), ("0", False),
                                                ("on", True), ("TRUE", True), ("1", True)])
def test_sync_values(tmp_path, text: str, expected: bool) -> None:
    assert build_config({"paths": [str(tmp_path)]}, {"BUCKETS_SYNC": text}).sync is expected


def test_empty_environment_variable_counts_as_unset(tmp_path) -> None:
    config = build_config({"paths": [str(tmp_path)]}, {"BUCKETS_PARITY": "", "BUCKETS_ADDRESS": " "})
    assert config.parity is None and config.address == ":9000"


def test_parity_auto_resets_a_file_value(tmp_path) -> None:
    config_file = write_yaml(tmp_path, "parity: 1\n")
    config = build_config({"config": config_file, "paths": [f"{tmp_path}/d{{1...4}}"], "parity": "auto"}, {})
    assert config.parity is None


def test_domain_flag_repeats_and_splits(tmp_path) -> None:
    config = build_config({"paths": [str(tmp_path)], "domains": ["a.example.com,b.example.com", "c.example.com"]}, {})
    assert config.domains == ["a.example.com", "b.example.com", "c.example.com"]


def test_yaml_paths_as_a_string(tmp_path) -> None:
    config_file = write_yaml(tmp_path, f"paths: {tmp_path}/x {tmp_path}/y\n")
    assert build_config({"config": config_file}, {}).disk_paths == [f"{tmp_path}/x", f"{tmp_path}/y"]


def test_empty_yaml_file_is_all_defaults(tmp_path) -> None:
    config_file = write_yaml(tmp_path, "# nothing\n")
    assert build_config({"config": config_file, "paths": [str(tmp_path)]}, {}).address == ":9000"


def test_example_config_has_every_setting_at_its_default() -> None:
    example = yaml.safe_load((REPO / "configs" / "buckets.example.yaml").read_text())
    assert set(example) == {setting.name for setting in SETTINGS}
    defaults = Config()
    for name, value in example.items():
        if name != "paths":
            assert value == getattr(defaults, name), name
    # and it loads through the real file layer
    config = build_config({"config": str(REPO / "configs" / "buckets.example.yaml")}, {})
    assert config.disk_paths == [f"/srv/buckets/disk{i}" for i in range(1, 5)]


def test_every_config_field_is_a_setting() -> None:
    derived = {"config_file", "endpoints"}
    assert {item.name for item in fields(Config)} - derived == {setting.name for setting in SETTINGS}


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({}, {}, "no disk paths given"),
        ({"parity": "two"}, {}, "--parity: parity must be a whole number"),
        ({}, {"BUCKETS_PARITY": "1.5"}, "BUCKETS_PARITY: parity must be a whole number"),
        ({}, {"BUCKETS_PARITY": "-1"}, "BUCKETS_PARITY: parity must be a whole number"),
        ({"parity": "3"}, {}, "parity 3 is too high for 4 disks"),
        ({"address": "9000"}, {}, "--address: address '9000' must be HOST:PORT or :PORT"),
        ({"address": ":0"}, {}, "port must be a number from 1 to 65535"),
        ({"address": ":65536"}, {}, "port must be a number from 1 to 65535"),
        ({"address": "::1:9000"}, {}, "IPv6 host in brackets"),
        ({}, {"BUCKETS_ROOT_USER": "ab"}, "BUCKETS_ROOT_USER: root user must be at least 3 characters"),
        ({}, {"BUCKETS_ROOT_PASSWORD": "short"}, "root password must be at least 8 characters"),
        ({}, {"BUCKETS_ROOT_PASSWORD": "has space 123"}, "must not contain spaces"),
        ({}, {"BUCKETS_SYNC": "maybe"}, "BUCKETS_SYNC: must be on/off"),
        ({"cache_size": "-5"}, {}, "--cache-size: cache size must be a whole number"),
        ({"inline_threshold": "2000000"}, {}, "inline threshold must be from 0 to 1048576"),
        ({"log_format": "xml"}, {}, "--log-format: log format must be one of json, console"),
        ({"metrics_auth": "none"}, {}, "metrics auth must be one of public, bearer"),
        ({"scanner_rate": "fast"}, {}, "scanner rate must be a number"),
        ({"scanner_rate": "nan"}, {}, "scanner rate must be a number of at least 0"),
        ({"domains": ["http://s3.example.com"]}, {}, "is not a domain name"),
        ({"metrics_auth": "bearer"}, {}, "metrics_auth is bearer but no token is set"),
        ({}, {"BUCKETS_METRICS_TOKEN": "short"}, "BUCKETS_METRICS_TOKEN: metrics token must be at least 16"),
        ({"scanner_mb_rate": "0"}, {}, "--scanner-mb-rate: scanner MB rate must be greater than 0"),
        ({"region": "US East"}, {}, "region 'US East' must be lower-case"),
    ],
)
def test_invalid_values(tmp_path, flags: dict, environ: dict, message: str) -> None:
    if "paths" not in flags and message != "no disk paths given":
        flags = {**flags, "paths": [f"{tmp_path}/d{{1...4}}"]}
    with pytest.raises(ConfigError) as caught:
        build_config(flags, environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_password_is_never_echoed(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"paths": [str(tmp_path)]}, {"BUCKETS_ROOT_PASSWORD": "hunter2"})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("adress: ':9000'\n", "unknown key 'adress' (did you mean 'address'?)"),
        ("cache-size: 5\n", "unknown key 'cache-size' (did you mean 'cache_size'?)"),
        ("zzz: 1\n", "unknown key 'zzz' (known keys: paths, address,"),
        ("- a\n- b\n", "expected a mapping of settings"),
        ("address: [unclosed\n", "line 2"),
        ("parity: two\n", "parity in "),
        ("parity: true\n", "parity must be a whole number"),
        ("cache_size: yes\n", "cache size must be a whole number"),
        ("root_password: 12345678\n", "root password must be a string"),
    ],
)
def test_config_file_errors(tmp_path, text: str, message: str) -> None:
    config_file = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        build_config({"config": config_file, "paths": [str(tmp_path)]}, {})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml: No such file"):
        build_config({"config": str(tmp_path / "nope.yaml"), "paths": [str(tmp_path)]}, {})


def test_a_cluster_this_node_is_not_part_of_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no node in the endpoint list matches"):
        build_config({"paths": ["http://node{1...4}:9000/data{1...4}"]}, {})
    with pytest.raises(ConfigError, match="no node in the endpoint list matches --address 127.0.0.9:9000"):
        build_config({"paths": ["http://127.0.0.{1...4}:9000/data{1...4}"], "address": "127.0.0.9:9000"}, {})


def test_a_cluster_node_found_by_its_address(tmp_path) -> None:
    config = build_config({"paths": ["http://127.0.0.{1...4}:9000/data{1...4}"], "address": "127.0.0.3:9000"}, {})
    assert config.is_cluster and len(config.endpoints) == 16
