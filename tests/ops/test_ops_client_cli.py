"""``buckets-client`` against a real server: every command, and its error paths."""

from __future__ import annotations

import hashlib
import os
import urllib.request
import uuid
from pathlib import Path

import pytest
from opsserver import ROOT_PASSWORD, ROOT_USER, Cli, Server, free_port

MiB = 1 << 20


@pytest.fixture
def bucket(aliased: Cli, server: Server) -> str:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    server.s3().create_bucket(Bucket=name)  # `mb` itself: test_mb_ls_rb
    yield name
    aliased.client("rb", "--force", f"srv/{name}")


def test_mb_ls_rb(aliased: Cli) -> None:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    assert aliased.client("mb", f"srv/{name}").ok().out.strip() == f"Bucket created: srv/{name}"
    assert "BucketAlreadyOwnedByYou" in aliased.client("mb", f"srv/{name}").one_line_error()
    aliased.client("mb", "-p", f"srv/{name}").ok()
    assert f"{name}/" in aliased.client("ls", "srv").ok().out
    assert name in [b["name"] for b in aliased.client("ls", "srv", "--json").ok().json()]
    assert "InvalidBucketName" in aliased.client("mb", "srv/No_Such").one_line_error()
    aliased.client("rb", f"srv/{name}").ok()
    assert f"{name}/" not in aliased.client("ls", "srv").ok().out
    assert "NoSuchBucket" in aliased.client("rb", f"srv/{name}").one_line_error()


@pytest.mark.slow  # many CLI process starts: make test-slow (make test keeps this CLI's other tests)
def test_cp_up_down_listing_cat_stat(aliased: Cli, bucket: str, tmp_path: Path) -> None:
    tree = tmp_path / "photos"
    (tree / "2024").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "2024" / "b.txt").write_text("bravo\n")
    out = aliased.client("cp", "-r", str(tree), f"srv/{bucket}/").ok().out
    assert "2 files" in out

    listing = aliased.client("ls", f"srv/{bucket}").ok().out
    assert [line.split() for line in listing.splitlines()] == [["PRE", "photos/"]]
    one_level = aliased.client("ls", f"srv/{bucket}/photos").ok().out.splitlines()
    assert any(line.endswith(" a.txt") for line in one_level) and any(line.endswith(" 2024/") for line in one_level)
    recursive = aliased.client("ls", "-r", f"srv/{bucket}").ok().out
    assert "photos/2024/b.txt" in recursive and "6 B" in recursive
    as_json = aliased.client("ls", "-r", "--json", f"srv/{bucket}").ok().json()
    assert sorted(e["key"] for e in as_json) == ["photos/2024/b.txt", "photos/a.txt"]

    cat = aliased.client("cat", f"srv/{bucket}/photos/a.txt", f"srv/{bucket}/photos/2024/b.txt").ok()
    assert cat.out == "alpha\nbravo\n"

    stat = aliased.client("stat", f"srv/{bucket}/photos/a.txt").ok().out
    assert "Size:" in stat and "6 B (6 bytes)" in stat and "ETag:" in stat
    info = aliased.client("stat", "--json", f"srv/{bucket}/photos/a.txt").ok().json()
    assert info["size"] == 6 and info["etag"] == hashlib.md5(b"alpha\n").hexdigest()
    bucket_info = aliased.client("stat", "--json", f"srv/{bucket}").ok().json()
    assert bucket_info["objects"] == 2 and bucket_info["bytes"] == 12

    back = tmp_path / "back"
    aliased.client("cp", "-r", f"srv/{bucket}/photos", str(back) + "/").ok()
    assert (back / "photos" / "2024" / "b.txt").read_text() == "bravo\n"
    aliased.client("cp", f"srv/{bucket}/photos/a.txt", str(tmp_path / "single.txt")).ok()
    assert (tmp_path / "single.txt").read_text() == "alpha\n"
    aliased.client("cp", f"srv/{bucket}/photos/a.txt", str(tmp_path / "new-folder") + "/").ok()
    assert (tmp_path / "new-folder" / "a.txt").read_text() == "alpha\n"  # trailing '/': a folder
    aliased.client("cp", str(tmp_path / "single.txt"), f"srv/{bucket}").ok()  # a bare bucket is a folder
    assert aliased.client("cat", f"srv/{bucket}/single.txt").ok().out == "alpha\n"


@pytest.mark.slow  # many CLI process starts: make test-slow (make test keeps this CLI's other tests)
def test_multipart_upload_download_and_remote_copies(aliased: Cli, bucket: str, tmp_path: Path, server: Server) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MiB + 123))
    digest = hashlib.md5(big.read_bytes()).hexdigest()
    result = aliased.client("cp", "--multipart-threshold", "5", "--part-size", "5", "--progress",
                            str(big), f"srv/{bucket}/big.bin").ok()
    assert "Copying" in result.err  # the progress bar, on stderr
    etag = aliased.client("stat", "--json", f"srv/{bucket}/big.bin").ok().json()["etag"]
    assert etag.endswith("-3")  # three parts: a multipart upload

    # same alias: a server-side copy; another alias for the same endpoint: streamed between them
    aliased.client("cp", f"srv/{bucket}/big.bin", f"srv/{bucket}/copy.bin").ok()
    aliased.client("alias", "set", "other", server.url, ROOT_USER, ROOT_PASSWORD).ok()
    aliased.client("cp", "--multipart-threshold", "5", "--part-size", "5", f"srv/{bucket}/big.bin",
                   f"other/{bucket}/streamed.bin").ok()
    for name in ("big.bin", "copy.bin", "streamed.bin"):
        down = tmp_path / f"down-{name}"
        aliased.client("cp", f"srv/{bucket}/{name}", str(down)).ok()
        assert hashlib.md5(down.read_bytes()).hexdigest() == digest, name


@pytest.mark.slow  # many CLI process starts: make test-slow (make test keeps this CLI's other tests)
def test_rm_single_recursive_with_confirmation(aliased: Cli, bucket: str, tmp_path: Path) -> None:
    for name in ("x/1", "x/2", "y"):
        source = tmp_path / "f"
        source.write_text(name)
        aliased.client("cp", str(source), f"srv/{bucket}/{name}").ok()
    assert aliased.client("rm", f"srv/{bucket}/y").ok().out.strip() == f"Removed srv/{bucket}/y"
    assert "not found" in aliased.client("rm", f"srv/{bucket}/y").one_line_error()

    refused = aliased.client("rm", "-r", f"srv/{bucket}/x/", stdin="n\n")
    assert "Remove 2 objects under" in refused.err and "not removed" in refused.one_line_error().split("\n")[-1]
    no_terminal = aliased.client("rm", "-r", f"srv/{bucket}/x/", stdin="")
    assert no_terminal.code == 1
    assert len(aliased.client("ls", "-r", "--json", f"srv/{bucket}").ok().json()) == 2
    confirmed = aliased.client("rm", "-r", f"srv/{bucket}/x/", stdin="y\n").ok()
    assert "Removed 2 objects" in confirmed.out
    aliased.client("cp", str(tmp_path / "f"), f"srv/{bucket}/z").ok()
    aliased.client("rm", "-r", "--force", f"srv/{bucket}").ok()
    assert aliased.client("ls", "-r", "--json", f"srv/{bucket}").ok().json() == []
    assert "is a bucket" in aliased.client("rm", f"srv/{bucket}").one_line_error()


def test_presign_get_and_put(aliased: Cli, bucket: str, tmp_path: Path) -> None:
    put_url = aliased.client("presign", "--method", "PUT", "--expires", "10m", f"srv/{bucket}/shared.txt").ok().out.strip()
    request = urllib.request.Request(put_url, data=b"shared by url", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    get_url = aliased.client("presign", f"srv/{bucket}/shared.txt").ok().out.strip()
    assert "X-Amz-Expires=604800" in get_url
    with urllib.request.urlopen(get_url, timeout=10) as response:
        assert response.read() == b"shared by url"
    assert "1 second to 7 days" in aliased.client("presign", "--expires", "8d",
                                                  f"srv/{bucket}/shared.txt").one_line_error()
    assert "not a duration" in aliased.client("presign", "--expires", "soon", f"srv/{bucket}/x").one_line_error()


def test_error_paths(cli: Cli, server: Server, tmp_path: Path) -> None:
    assert "unknown alias 'ghost'" in cli.client("ls", "ghost/bucket").one_line_error()
    cli.client("alias", "set", "bad", server.url, ROOT_USER, "wrong-password").ok()
    assert "SignatureDoesNotMatch" in cli.client("ls", "bad").one_line_error()
    cli.client("alias", "set", "down", f"http://127.0.0.1:{free_port()}", ROOT_USER, ROOT_PASSWORD).ok()
    line = cli.client("ls", "down").one_line_error()
    assert line.startswith("buckets-client: error: cannot connect to http://127.0.0.1:")
    cli.client("alias", "set", "srv", server.url, ROOT_USER, ROOT_PASSWORD).ok()
    assert "NoSuchBucket: The specified bucket does not exist" in cli.client(
        "ls", f"srv/nope-{uuid.uuid4().hex[:8]}").one_line_error()
    assert "NoSuchBucket" in cli.client("cat", f"srv/nope-{uuid.uuid4().hex[:8]}/k").one_line_error()
    missing = tmp_path / "missing.txt"
    assert "cannot read" in cli.client("cp", str(missing), "srv/b/k").one_line_error()
    assert "use -r" in cli.client("cp", str(tmp_path), "srv/b/").one_line_error()
    usage = cli.client("cp", "only-one-arg")
    assert usage.code == 2 and "Traceback" not in usage.err
