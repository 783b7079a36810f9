"""Helpers for the tests that drive command-line clients over local files (the aws cli,
s3cmd, rclone, restic): run a command, write a tree of files, digest a tree."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 180) -> str:
    """The command's stdout; a non-zero exit fails the test with both streams."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root``, by its relative path, with its MD5."""
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
