"""``buckets-client``: an mc-like S3 client for people without the aws cli.

    buckets-client alias set local http://127.0.0.1:9000 ACCESS_KEY SECRET_KEY
    buckets-client mb local/photos
    buckets-client cp -r ./holiday local/photos/2024/
    buckets-client ls -r local/photos
    buckets-client cat local/photos/2024/holiday/notes.txt
    buckets-client stat local/photos/2024/holiday/cat.jpg
    buckets-client presign --expires 1h local/photos/2024/holiday/cat.jpg
    buckets-client rm -r local/photos/2024        # asks first; --force does not

It speaks plain S3 with SigV4 (boto3), so it works against any S3-compatible endpoint,
Amazon's included. Errors are one line on stderr and exit status 1 (2 for a bad command
line); never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone
from typing import Any, NoReturn

from buckets import __version__
from buckets.cli.admin import cmd_alias_list, cmd_alias_remove, cmd_alias_set
from buckets.cli.aliases import AliasStore, CliError
from buckets.cli.output import fail, human_size, print_json, show_progress
from buckets.cli.remote import Remote, iter_objects, parse_target, require_remote, s3_client, s3_errors
from buckets.cli.transfer import MiB, CopyOptions, plan, run_jobs

PROG = "buckets-client"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_DURATION = re.compile(r"(\d+)([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _timestamp(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- buckets -------------------------------------------------------------------------------


def cmd_mb(args: argparse.Namespace) -> int:
    from botocore.exceptions import ClientError

    store = AliasStore()
    for text in args.targets:
        target = require_remote(text, store)
        if target.key:
            raise CliError(f"{text!r}: a bucket name has no '/'")
        client = s3_client(target.alias)
        kwargs: dict[str, Any] = {"Bucket": target.bucket}
        if target.alias.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": target.alias.region}
        with s3_errors(target):
            try:
                client.create_bucket(**kwargs)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if not (args.ignore_existing and code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")):
                    raise
        print(f"Bucket created: {target}")
    return EXIT_OK


def _delete_keys(target: Remote, keys: list[str]) -> int:
    client = s3_client(target.alias)
    removed = 0
    for start in range(0, len(keys), 1000):
        batch = keys[start:start + 1000]
        with s3_errors(target):
            answer = client.delete_objects(Bucket=target.bucket,
                                           Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
        errors = answer.get("Errors", [])
        if errors:
            first = errors[0]
            raise CliError(f"{target}: could not remove {len(errors)} objects, e.g. "
                           f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}")
        removed += len(batch)
    return removed


def cmd_rb(args: argparse.Namespace) -> int:
    target = require_remote(args.target, AliasStore())
    if target.key:
        raise CliError(f"{args.target!r}: name a bucket, not an object")
    client = s3_client(target.alias)
    if args.force:
        keys = [entry["Key"] for entry in iter_objects(target, recursive=True)]
        _delete_keys(target, keys)
        with s3_errors(target):
            for upload in client.list_multipart_uploads(Bucket=target.bucket).get("Uploads", []):
                client.abort_multipart_upload(Bucket=target.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    with s3_errors(target):
        client.delete_bucket(Bucket=target.bucket)
    print(f"Bucket removed: {target}")
    return EXIT_OK


# --- listing and reading -------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    target = require_remote(args.target, AliasStore(), bucket=False)
    if target.bucket is None:
        with s3_errors(target):
            buckets = s3_client(target.alias).list_buckets().get("Buckets", [])
        if args.json:
            print_json([{"name": b["Name"], "created": b.get("CreationDate")} for b in buckets])
        else:
            for bucket in buckets:
                print(f"[{_timestamp(bucket.get('CreationDate'))}]  {bucket['Name']}/")
        return EXIT_OK
    prefix = target.key
    entries = list(iter_objects(Remote(target.alias, target.bucket, prefix), recursive=args.recursive))
    if prefix and not prefix.endswith("/") and not args.recursive and \
            [entry.get("Prefix") for entry in entries] == [prefix + "/"]:
        prefix += "/"  # "ls alias/bucket/photos" where photos is a folder: show what is inside
        entries = list(iter_objects(Remote(target.alias, target.bucket, prefix), recursive=False))
    base = prefix[: prefix.rfind("/") + 1]  # names are shown relative to the listed folder
    if args.json:
        print_json([{"key": e["Key"], "size": e["Size"], "modified": e.get("LastModified"), "etag": e.get("ETag")}
                    if "Key" in e else {"prefix": e["Prefix"]} for e in entries])
        return EXIT_OK
    for entry in entries:
        if "Prefix" in entry:
            print(f"{'':23}  {'PRE':>10}  {entry['Prefix'][len(base):]}")
        else:
            size = f"{entry['Size']} B" if args.bytes else human_size(entry["Size"])
            print(f"[{_timestamp(entry.get('LastModified'))}]  {size:>10}  {entry['Key'][len(base):]}")
    return EXIT_OK


def cmd_cat(args: argparse.Namespace) -> int:
    store = AliasStore()
    out = sys.stdout.buffer
    for text in args.targets:
        target = require_remote(text, store, key=True)
        with s3_errors(target):
            body = s3_client(target.alias).get_object(Bucket=target.bucket, Key=target.key)["Body"]
            try:
                for chunk in body.iter_chunks(chunk_size=MiB):
                    out.write(chunk)
            finally:
                body.close()
    out.flush()
    return EXIT_OK


def cmd_stat(args: argparse.Namespace) -> int:
    target = require_remote(args.target, AliasStore())
    client = s3_client(target.alias)
    if not target.key:
        with s3_errors(target):
            client.head_bucket(Bucket=target.bucket)
            location = client.get_bucket_location(Bucket=target.bucket).get("LocationConstraint") or "us-east-1"
        usage = {"objects": 0, "bytes": 0}
        for entry in iter_objects(target, recursive=True):
            usage["objects"] += 1
            usage["bytes"] += entry["Size"]
        info: dict[str, Any] = {"bucket": target.bucket, "region": location, **usage}
        rows = [["Bucket", target.bucket], ["Region", location], ["Objects", usage["objects"]],
                ["Size", human_size(usage["bytes"])]]
    else:
        with s3_errors(target):
            head = client.head_object(Bucket=target.bucket, Key=target.key)
        info = {"bucket": target.bucket, "key": target.key, "size": head["ContentLength"],
                "etag": head.get("ETag", "").strip('"'), "modified": head.get("LastModified"),
                "content_type": head.get("ContentType"), "storage_class": head.get("StorageClass", "STANDARD"),
                "metadata": head.get("Metadata", {})}
        rows = [["Name", target.key], ["Size", f"{human_size(info['size'])} ({info['size']} bytes)"],
                ["ETag", info["etag"]], ["Modified", _timestamp(info["modified"])],
                ["Type", info["content_type"] or ""], ["Class", info["storage_class"]]]
        rows += [[f"Meta {name}", value] for name, value in sorted(info["metadata"].items())]
    if args.json:
        print_json(info)
    else:
        width = max(len(row[0]) for row in rows)
        for name, value in rows:
            print(f"{name + ':':<{width + 1}} {value}")
    return EXIT_OK


# --- writing ---------------------------------------------------------------------------------


def cmd_cp(args: argparse.Namespace) -> int:
    store = AliasStore()
    names = store.names()
    sources = [parse_target(text, store, names=names) for text in args.sources]
    destination = parse_target(args.destination, store, names=names)
    options = CopyOptions(recursive=args.recursive, multipart_threshold=args.multipart_threshold * MiB,
                          part_size=args.part_size * MiB, progress=show_progress(args.progress))
    if args.part_size < 5:
        raise CliError("--part-size must be at least 5 (MiB): S3 refuses smaller parts")
    # A trailing '/' makes the destination a folder; Path() would drop it, so say it here.
    jobs = plan(sources, destination, options, into_folder=args.destination.endswith("/"))
    copied = run_jobs(jobs, options)
    if not args.quiet:
        for job in jobs:
            print(f"{job.source} -> {job.destination}")
        print(f"{len(jobs)} file{'s' if len(jobs) != 1 else ''}, {human_size(copied)} copied")
    return EXIT_OK


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_rm(args: argparse.Namespace) -> int:
    store = AliasStore()
    for text in args.targets:
        target = require_remote(text, store)
        if args.recursive:
            keys = [entry["Key"] for entry in iter_objects(target, recursive=True)]
            if not keys:
                raise CliError(f"{target}: nothing to remove")
            if not args.force and not _confirm(f"Remove {len(keys)} object{'s' if len(keys) != 1 else ''} "
                                               f"under {target}?"):
                raise CliError("not removed (answer 'y' to confirm, or pass --force)")
            removed = _delete_keys(target, keys)
            print(f"Removed {removed} object{'s' if removed != 1 else ''} under {target}")
            continue
        if not target.key:
            raise CliError(f"{text!r} is a bucket: use rm -r to empty it, rb to remove it")
        client = s3_client(target.alias)
        with s3_errors(target):
            client.head_object(Bucket=target.bucket, Key=target.key)  # S3 deletes quietly; say if absent
            client.delete_object(Bucket=target.bucket, Key=target.key)
        print(f"Removed {target}")
    return EXIT_OK


def parse_duration(text: str) -> int:
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise CliError(f"{text!r} is not a duration: use seconds or 30m, 12h, 7d")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    if not 1 <= seconds <= 7 * 86400:
        raise CliError("a presigned URL lasts from 1 second to 7 days")
    return seconds


def cmd_presign(args: argparse.Namespace) -> int:
    target = require_remote(args.target, AliasStore(), key=True)
    operation = {"GET": "get_object", "PUT": "put_object"}[args.method]
    with s3_errors(target):
        url = s3_client(target.alias).generate_presigned_url(
            operation, Params={"Bucket": target.bucket, "Key": target.key}, ExpiresIn=parse_duration(args.expires))
    print(url)
    return EXIT_OK


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="An S3 client: buckets, objects, copies, presigned URLs.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    alias_group = commands.add_parser("alias", help="manage server aliases").add_subparsers(
        dest="alias_command", metavar="ACTION", required=True)
    sub = alias_group.add_parser("set", help="add or replace an alias")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("url", metavar="URL", help="http://HOST:PORT, or https://s3.REGION.amazonaws.com")
    sub.add_argument("access_key", metavar="ACCESS_KEY")
    sub.add_argument("secret_key", metavar="SECRET_KEY")
    sub.add_argument("--region", default="us-east-1", help="region to sign with (default us-east-1)")
    sub.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    sub.add_argument("--ca-file", metavar="FILE", help="verify the server with this CA bundle (PEM)")
    sub.set_defaults(func=cmd_alias_set)
    sub = alias_group.add_parser("list", help="list aliases (secrets are never shown)")
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(func=cmd_alias_list)
    sub = alias_group.add_parser("remove", help="remove an alias")
    sub.add_argument("name", metavar="NAME")
    sub.set_defaults(func=cmd_alias_remove)

    sub = commands.add_parser("mb", help="make buckets")
    sub.add_argument("targets", nargs="+", metavar="ALIAS/BUCKET")
    sub.add_argument("-p", "--ignore-existing", action="store_true", help="no error if the bucket exists")
    sub.set_defaults(func=cmd_mb)

    sub = commands.add_parser("rb", help="remove a bucket")
    sub.add_argument("target", metavar="ALIAS/BUCKET")
    sub.add_argument("--force", action="store_true", help="remove its objects and uploads first")
    sub.set_defaults(func=cmd_rb)

    sub = commands.add_parser("ls", help="list buckets, or objects under a bucket or prefix")
    sub.add_argument("target", metavar="ALIAS[/BUCKET[/PREFIX]]")
    sub.add_argument("-r", "--recursive", action="store_true", help="everything below, not one level")
    sub.add_argument("--bytes", action="store_true", help="sizes in bytes, not KiB/MiB")
    sub.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub.set_defaults(func=cmd_ls)

    sub = commands.add_parser("cp", help="copy files and objects (local<->remote, remote<->remote)")
    sub.add_argument("sources", nargs="+", metavar="SOURCE")
    sub.add_argument("destination", metavar="TARGET")
    sub.add_argument("-r", "--recursive", action="store_true", help="copy folders and prefixes")
    sub.add_argument("--multipart-threshold", type=int, default=64, metavar="MiB",
                     help="files larger than this go as multipart uploads (default 64)")
    sub.add_argument("--part-size", type=int, default=16, metavar="MiB", help="multipart part size (default 16)")
    sub.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    progress = sub.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="always show the progress bar (default: when stderr is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show it")
    sub.set_defaults(func=cmd_cp)

    sub = commands.add_parser("cat", help="write objects to standard output")
    sub.add_argument("targets", nargs="+", metavar="ALIAS/BUCKET/KEY")
    sub.set_defaults(func=cmd_cat)

    sub = commands.add_parser("stat", help="show an object's (or a bucket's) details")
    sub.add_argument("target", metavar="ALIAS/BUCKET[/KEY]")
    sub.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub.set_defaults(func=cmd_stat)

    sub = commands.add_parser("rm", help="remove objects")
    sub.add_argument("targets", nargs="+", metavar="ALIAS/BUCKET/KEY")
    sub.add_argument("-r", "--recursive", action="store_true", help="everything under a bucket or prefix")
    sub.add_argument("--force", action="store_true", help="do not ask before a recursive removal")
    sub.set_defaults(func=cmd_rm)

    sub = commands.add_parser("presign", help="print a presigned URL anyone can use until it expires")
    sub.add_argument("target", metavar="ALIAS/BUCKET/KEY")
    sub.add_argument("--expires", default="7d", help="lifetime: seconds, or 30m, 12h, 7d (default 7d, the most)")
    sub.add_argument("--method", choices=("GET", "PUT"), default="GET", help="GET to download, PUT to upload")
    sub.set_defaults(func=cmd_presign)
    return parser


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as error:
        return fail(PROG, str(error))
    except KeyboardInterrupt:
        return fail(PROG, "interrupted", 130)
    except BrokenPipeError:
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> NoReturn:
    """Console script ``buckets-client``."""
    sys.exit(run(argv))
