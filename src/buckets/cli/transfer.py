"""``buckets-client cp``: copies between local files and S3, and between S3 endpoints.

Uploads and downloads go through boto3's transfer manager: files above the multipart
threshold are sent as parallel parts (and fetched as parallel ranges), streamed from and
to disk so memory stays bounded. A copy within one alias is a server-side copy (CopyObject,
or UploadPartCopy parts for large objects): no bytes pass through this machine. Between
two aliases the object is streamed from one into a multipart upload on the other.

Destination rules, as cp and mc have them: a destination ending in '/', an existing
local directory, a bare bucket, or more than one source (or ``-r``) is a folder and each
source keeps its base name (with ``-r``, its path below the source folder).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buckets.cli.aliases import CliError
from buckets.cli.output import progress_bar
from buckets.cli.remote import Remote, iter_objects, s3_client, s3_errors

MiB = 1 << 20


@dataclass(slots=True)
class CopyOptions:
    recursive: bool = False
    multipart_threshold: int = 64 * MiB
    part_size: int = 16 * MiB
    progress: bool = False


@dataclass(slots=True)
class CopyJob:
    source: Remote | Path
    destination: Remote | Path
    size: int


def _transfer_config(options: CopyOptions) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=options.multipart_threshold, multipart_chunksize=options.part_size,
                          max_concurrency=4, use_threads=True)


def _join(base: Remote | Path, relative: str) -> Remote | Path | None:
    """``relative`` below ``base``; None when a local path would leave the folder.

    Below a local folder, ``relative`` comes from an object key, which anyone who could
    write the bucket chose: ``../x`` or ``/etc/x`` are valid keys. Such a key is never
    followed out of the folder (as ``aws s3 cp`` does, it is skipped with a warning);
    empty and ``.`` segments are dropped (``a//b`` and ``a/./b`` land at ``a/b``).
    """
    if isinstance(base, Path):
        parts = [part for part in relative.split("/") if part not in ("", ".")]
        if not parts or ".." in parts:
            return None
        return base.joinpath(*parts)
    key = base.key if base.key == "" or base.key.endswith("/") else base.key + "/"
    return Remote(base.alias, base.bucket, key + relative)


def _expand_source(source: Remote | Path, options: CopyOptions) -> Iterator[tuple[Remote | Path, str, int]]:
    """(one source object or file, its name relative to the destination folder, size)."""
    if isinstance(source, Path):
        if source.is_dir():
            if not options.recursive:
                raise CliError(f"{source} is a directory: use -r to copy it")
            for root, _, files in sorted(os.walk(source)):
                for name in sorted(files):
                    path = Path(root) / name
                    yield path, path.relative_to(source.parent if source.name else source).as_posix(), \
                        path.stat().st_size
            return
        try:
            size = source.stat().st_size
        except OSError as error:
            raise CliError(f"cannot read {source}: {error.strerror or error}") from None
        yield source, source.name, size
        return
    if source.bucket is None:
        raise CliError(f"{source}: name a bucket (and a key) to copy from")
    if options.recursive:
        base = source.key if source.key == "" or source.key.endswith("/") else source.key + "/"
        folder = base.rstrip("/").rsplit("/", 1)[-1] if base else ""
        for entry in iter_objects(Remote(source.alias, source.bucket, base), recursive=True):
            relative = entry["Key"][len(base):]
            name = f"{folder}/{relative}" if folder else relative
            yield Remote(source.alias, source.bucket, entry["Key"]), name, entry["Size"]
        return
    if source.is_dir_like:
        raise CliError(f"{source} is a bucket or folder: use -r to copy it")
    client = s3_client(source.alias)
    with s3_errors(source):
        head = client.head_object(Bucket=source.bucket, Key=source.key)
    yield source, source.key.rsplit("/", 1)[-1], head["ContentLength"]


def plan(sources: list[Remote | Path], destination: Remote | Path, options: CopyOptions, *,
         into_folder: bool = False) -> list[CopyJob]:
    if isinstance(destination, Remote) and destination.bucket is None:
        raise CliError(f"{destination}: name a bucket to copy into")
    many = len(sources) > 1 or options.recursive
    folder = many or (destination.is_dir() if isinstance(destination, Path) else destination.is_dir_like) \
        or into_folder
    if many and isinstance(destination, Path) and destination.exists() and not destination.is_dir():
        raise CliError(f"{destination} is not a directory")
    jobs = []
    for source in sources:
        for item, name, size in _expand_source(source, options):
            target = _join(destination, name) if folder else destination
            if target is None:
                print(f"warning: skipped {str(item)!r}: its key would leave {destination}", file=sys.stderr)
                continue
            jobs.append(CopyJob(item, target, size))
    if not jobs:
        raise CliError("nothing to copy")
    return jobs


def run_jobs(jobs: list[CopyJob], options: CopyOptions) -> int:
    total = sum(job.size for job in jobs)
    config = _transfer_config(options)
    copied = 0
    with progress_bar("Copying", total, enabled=options.progress, unit_bytes=True) as bar:
        for job in jobs:
            _copy_one(job, config, bar.advance)
            copied += job.size
    return copied


def _copy_one(job: CopyJob, config: Any, advance: Any) -> None:
    source, destination = job.source, job.destination
    if isinstance(source, Path) and isinstance(destination, Path):
        raise CliError(f"{source} -> {destination}: both are local; use cp(1)")
    if isinstance(source, Path):
        assert isinstance(destination, Remote)
        with s3_errors(destination):
            s3_client(destination.alias).upload_file(str(source), destination.bucket, destination.key,
                                                     Config=config, Callback=advance)
        return
    if isinstance(destination, Path):
        _download(source, destination, config, advance)
        return
    source_client, destination_client = s3_client(source.alias), s3_client(destination.alias)
    with s3_errors(f"{source} -> {destination}"):
        if source.alias.name == destination.alias.name:
            destination_client.copy({"Bucket": source.bucket, "Key": source.key}, destination.bucket,
                                     destination.key, Config=config, Callback=advance)
        else:
            body = source_client.get_object(Bucket=source.bucket, Key=source.key)["Body"]
            try:
                destination_client.upload_fileobj(body, destination.bucket, destination.key, Config=config,
                                                  Callback=advance)
            finally:
                body.close()


def _download(source: Remote, destination: Path, config: Any, advance: Any) -> None:
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"cannot create {destination.parent}: {error.strerror or error}") from None
    # boto3 writes to a temporary name and renames it into place, so a failed download
    # never leaves a truncated file under the real name.
    try:
        with s3_errors(source):
            s3_client(source.alias).download_file(source.bucket, source.key, str(destination), Config=config,
                                                  Callback=advance)
    except OSError as error:
        raise CliError(f"cannot write {destination}: {error.strerror or error}") from None
