"""``buckets-admin`` against a real server: every command, and its error paths."""

from __future__ import annotations

import json
import uuid

import pytest
from botocore.exceptions import ClientError
from opsserver import ROOT_PASSWORD, ROOT_USER, Cli, Server, free_port

from buckets.erasure import isal


@pytest.mark.slow  # many CLI process starts: make test-slow (make test keeps this CLI's other tests)
def test_alias_set_list_remove(cli: Cli, server: Server) -> None:
    cli.admin("alias", "set", "one", server.url + "/", ROOT_USER, ROOT_PASSWORD).ok()
    cli.admin("alias", "set", "two", "https://s3.example.com", "AKIA", "secret-two", "--region", "eu-west-1").ok()
    listing = cli.admin("alias", "list").ok().out
    assert "one" in listing and server.url in listing and "eu-west-1" in listing
    assert ROOT_PASSWORD not in listing and "secret-two" not in listing
    as_json = cli.admin("alias", "list", "--json").ok().json()
    assert [a["name"] for a in as_json["aliases"]] == ["one", "two"]
    assert cli.config_file.stat().st_mode & 0o077 == 0  # it holds secrets: owner only
    cli.admin("alias", "remove", "two").ok()
    assert [a["name"] for a in cli.admin("alias", "list", "--json").ok().json()["aliases"]] == ["one"]
    assert "unknown alias 'two'" in cli.admin("alias", "remove", "two").one_line_error()
    assert "not an endpoint URL" in cli.admin("alias", "set", "x", "ftp://host", "a", "b").one_line_error()
    assert "must start with a letter" in cli.admin("alias", "set", "9x", server.url, "a", "b").one_line_error()


def test_info_table_and_json(aliased: Cli, server: Server) -> None:
    text = aliased.admin("info", "srv").ok().out
    assert "Erasure:  2 data + 2 parity" in text
    assert "ready (4/4 disks online, write quorum 3)" in text
    for disk in server.disks:
        assert str(disk) in text
    info = aliased.admin("info", "srv", "--json").ok().json()
    coder = "isal" if isal.available() else "zfec"  # make venv installs libisal2
    assert f"(parity by {'ISA-L' if coder == 'isal' else 'zfec'})" in text
    assert info["erasure"] == {"data": 2, "parity": 2, "write_quorum": 3, "read_quorum": 2, "block_size": 1 << 20,
                               "small": None, "coder": coder}  # 2+2 is as narrow as its parity allows
    assert [d["state"] for d in info["disks"]] == ["online"] * 4
    assert all(d["total"] > 0 and d["free"] > 0 for d in info["disks"])
    assert info["uptime_seconds"] > 0 and info["version"] == __import__("buckets").__version__
    assert info["registry"]["size_bytes"] > 0
    assert {"buckets", "objects", "bytes"} <= set(info["usage"])


def test_info_shows_the_small_object_layout_of_a_wide_set(cli: Cli, tmp_path) -> None:
    from opsserver import start_server, stop_server

    wide = start_server(tmp_path / "wide", disks=16, args=["--small-set-limit", "8192"])
    try:
        cli.admin("alias", "set", "wide", wide.url + "/", ROOT_USER, ROOT_PASSWORD).ok()
        info = cli.admin("info", "wide", "--json").ok().json()
        assert (info["erasure"]["data"], info["erasure"]["parity"]) == (12, 4)
        assert info["erasure"]["small"] == {"data": 4, "parity": 4, "max_bytes": 8192}
        text = cli.admin("info", "wide").ok().out
        assert "Erasure:  12 data + 4 parity; objects up to 8.0 KiB: 4 data + 4 parity" in text
    finally:
        stop_server(wide)


def test_user_lifecycle_and_the_user_can_sign(aliased: Cli, server: Server) -> None:
    name = f"user-{uuid.uuid4().hex[:8]}"
    secret = "user-secret-" + uuid.uuid4().hex
    assert aliased.admin("user", "add", "srv", name, secret).ok().out.strip() == f"Added user {name} (policy readwrite)"
    listed = {u["access_key"]: u for u in aliased.admin("user", "list", "srv", "--json").ok().json()["users"]}
    assert listed[name]["enabled"] is True and "secret" not in json.dumps(listed[name])
    assert name in aliased.admin("user", "list", "srv").ok().out

    user_s3 = server.s3(name, secret)
    user_s3.list_buckets()  # the secret was stored and decrypts: the user can sign

    aliased.admin("user", "disable", "srv", name).ok()
    with pytest.raises(ClientError) as caught:
        user_s3.list_buckets()
    assert caught.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    listed = {u["access_key"]: u for u in aliased.admin("user", "list", "srv", "--json").ok().json()["users"]}
    assert listed[name]["enabled"] is False
    aliased.admin("user", "enable", "srv", name).ok()
    user_s3.list_buckets()

    # A user is not root: the admin API refuses them even with a valid signature.
    aliased.admin("alias", "set", "as-user", server.url, name, secret).ok()
    assert "AccessDenied" in aliased.admin("info", "as-user").one_line_error()

    # A new secret keeps the policy the user has.
    aliased.admin("user", "policy", "srv", name, "readonly").ok()
    assert aliased.admin("user", "add", "srv", name, "another-secret-1").ok().out.strip() == \
        f"Updated user {name} (policy readonly)"
    aliased.admin("user", "remove", "srv", name).ok()
    with pytest.raises(ClientError):
        user_s3.list_buckets()
    assert "NoSuchUser" in aliased.admin("user", "remove", "srv", name).one_line_error()
    assert "NoSuchUser" in aliased.admin("user", "enable", "srv", name).one_line_error()


@pytest.mark.parametrize(("args", "message"), [
    (["user", "add", "srv", "ok-name", "short"], "secret_key must be 8 to 128"),
    (["user", "add", "srv", "a", "long-enough-secret"], "an access key is 3 to 128"),
    (["user", "add", "srv", ROOT_USER, "long-enough-secret"], "root user's"),
])
def test_user_add_rejects_bad_input(aliased: Cli, args: list[str], message: str) -> None:
    line = aliased.admin(*args).one_line_error()
    assert "InvalidArgument" in line and message in line


def test_heal_start_waits_and_reports(aliased: Cli, server: Server) -> None:
    s3 = server.s3()
    bucket = f"heal-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for index in range(3):  # above the inline threshold: a metadata file and shard files per disk
        s3.put_object(Bucket=bucket, Key=f"k{index}", Body=b"z" * (200 * 1024))
    # Damage one shard: remove one disk's metadata file of one object.
    metas = sorted(server.disks[0].rglob("*.meta"))
    victims = [m for m in metas if bucket in str(m) and m.name != ".bucket.meta"]
    assert victims
    victims[0].unlink()
    result = aliased.admin("heal", "start", "srv", "--json", "--interval", "0.2", "--wait-timeout", "60").ok()
    status = result.json()
    assert status["done"] is True and status["objects_total"] >= 3
    assert status["shards_repaired"] >= 1
    assert victims[0].exists()  # rebuilt in place
    text = aliased.admin("heal", "start", "srv", "--interval", "0.2", "--progress").ok()
    assert "Heal pass finished" in text.out and "Healing" in text.err  # the progress bar, on stderr
    status_text = aliased.admin("heal", "status", "srv").ok().out
    assert "repaired" in status_text
    assert aliased.admin("heal", "status", "srv", "--json").ok().json()["done"] is True
    assert "started" in aliased.admin("heal", "start", "srv", "--no-wait").ok().out
    for index in range(3):
        s3.delete_object(Bucket=bucket, Key=f"k{index}")
    s3.delete_bucket(Bucket=bucket)


@pytest.mark.slow  # many CLI process starts: make test-slow (make test keeps this CLI's other tests)
def test_config_get_and_set_live(aliased: Cli) -> None:
    settings = aliased.admin("config", "get", "srv", "--json").ok().json()
    assert settings == {"scanner_rate": 0.0, "scanner_mb_rate": 50.0, "log_level": "info", "metrics_auth": "public"}
    assert "objects per second" in aliased.admin("config", "get", "srv").ok().out
    try:
        applied = aliased.admin("config", "set", "srv", "scanner_rate=25", "scanner_mb_rate=10",
                                "log_level=WARNING", "--json").ok().json()
        assert applied == {"scanner_rate": 25.0, "scanner_mb_rate": 10.0, "log_level": "warning"}
        assert aliased.admin("config", "get", "srv", "log_level", "--json").ok().json() == {"log_level": "warning"}
    finally:
        aliased.admin("config", "set", "srv", "scanner_rate=0", "scanner_mb_rate=50", "log_level=info").ok()
    assert "unknown live setting 'nope'" in aliased.admin("config", "set", "srv", "nope=1").one_line_error()
    assert "scanner_mb_rate must be a number greater than 0" in aliased.admin(
        "config", "set", "srv", "scanner_mb_rate=0").one_line_error()
    assert "log_level must be one of" in aliased.admin("config", "set", "srv", "log_level=loud").one_line_error()
    assert "NAME=VALUE" in aliased.admin("config", "set", "srv", "scanner_rate").one_line_error()
    assert "unknown live setting 'nope'" in aliased.admin("config", "get", "srv", "nope").one_line_error()
    # nothing was applied by the failed calls
    assert aliased.admin("config", "get", "srv", "--json").ok().json()["scanner_mb_rate"] == 50.0


@pytest.mark.slow  # many CLI process starts: make test-slow (make test keeps this CLI's other tests)
def test_wrong_credentials_unknown_alias_and_server_down(cli: Cli, server: Server) -> None:
    cli.admin("alias", "set", "bad", server.url, ROOT_USER, "not-the-password").ok()
    assert "SignatureDoesNotMatch" in cli.admin("info", "bad").one_line_error()
    cli.admin("alias", "set", "nobody", server.url, "no-such-key", "not-the-password").ok()
    assert "InvalidAccessKeyId" in cli.admin("user", "list", "nobody").one_line_error()
    assert "unknown alias 'ghost'" in cli.admin("info", "ghost").one_line_error()
    cli.admin("alias", "set", "down", f"http://127.0.0.1:{free_port()}", ROOT_USER, ROOT_PASSWORD).ok()
    line = cli.admin("info", "down").one_line_error()
    assert line.startswith("buckets-admin: error: cannot connect to") and "connection refused" in line


def test_usage_errors_exit_2(cli: Cli) -> None:
    result = cli.admin("user")
    assert result.code == 2 and "Traceback" not in result.err
    assert cli.admin("--help").ok().out.count("COMMAND") >= 1
