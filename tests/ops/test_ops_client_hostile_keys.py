"""``buckets-client cp -r`` down from a bucket whose keys were chosen by someone else.

The server stores ``../x``, ``/abs`` and ``a/./b`` as ordinary keys (as S3 does); the
client must never follow one out of the destination folder (issue 8, item 3: nothing a
key contains may reach a file path it was not meant to).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from opsserver import Cli, Server


def test_recursive_download_never_leaves_the_destination(server: Server, aliased: Cli, tmp_path: Path) -> None:
    bucket = f"cli-hostile-{uuid.uuid4().hex[:8]}"
    s3 = server.s3()
    s3.create_bucket(Bucket=bucket)
    work = tmp_path / "work"
    out = work / "out"
    out.mkdir(parents=True)
    escapes = ["../escaped-rel", "a/../../escaped-deep", "..", "x/.."]
    kept = {"plain.txt": "plain.txt", "a/./dot/file": "a/dot/file", "a//double": "a/double",
            "/leading/slash": "leading/slash", "ctl\x01name": "ctl\x01name",
            f"{work}/escaped-abs": f"{str(work).lstrip('/')}/escaped-abs"}  # an absolute key stays below
    try:
        for key in escapes + list(kept):
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        result = aliased.client("cp", "-r", f"srv/{bucket}", str(out) + "/", cwd=work).ok()
        assert f"{len(kept)} files" in result.out
        assert sorted(p.name for p in work.iterdir()) == ["out"]
        for key, local in kept.items():
            assert (out / local).read_bytes() == key.encode()
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        assert files == sorted(kept.values())
        warnings = [line for line in result.err.splitlines() if line.startswith("warning: skipped")]
        assert len(warnings) == len(escapes), result.err

        single = aliased.client("cp", f"srv/{bucket}/x/..", str(out) + "/", cwd=work)
        assert single.code == 1 and "Traceback" not in single.err
        assert single.err.splitlines()[0].startswith("warning: skipped")
        assert single.err.splitlines()[-1].endswith("error: nothing to copy"), single.err
        assert sorted(p.name for p in work.iterdir()) == ["out"]
    finally:
        for key in escapes + list(kept):
            s3.delete_object(Bucket=bucket, Key=key)
        s3.delete_bucket(Bucket=bucket)
