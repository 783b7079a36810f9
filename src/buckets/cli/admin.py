"""``buckets-admin``: operate a Buckets server through its signed admin API.

    buckets-admin alias set local http://127.0.0.1:9000 ROOT_USER ROOT_PASSWORD
    buckets-admin info local
    buckets-admin user add local alice alice-secret-key
    buckets-admin user list local
    buckets-admin heal start local          # progress bar until the pass is done
    buckets-admin config set local scanner_rate=50 log_level=debug

Every command that reads takes ``--json`` for scripts. Errors are one line on stderr and
exit status 1 (2 for a bad command line); never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, NoReturn

from buckets import __version__
from buckets.cli.aliases import Alias, AliasStore, CliError
from buckets.cli.output import (fail, human_duration, human_size, print_json, progress_bar, show_progress,
                                table)

PROG = "buckets-admin"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _client(args: argparse.Namespace) -> Any:
    from buckets.admin.client import AdminClient

    alias = AliasStore().get(args.alias)
    return AdminClient(alias.url, alias.access_key, alias.secret_key, region=alias.region,
                       insecure=alias.insecure, timeout=args.timeout)


# --- alias -------------------------------------------------------------------------------------


def cmd_alias_set(args: argparse.Namespace) -> int:
    AliasStore().set(Alias(args.name, args.url, args.access_key, args.secret_key, region=args.region,
                           insecure=args.insecure))
    print(f"Added alias {args.name} -> {args.url.rstrip('/')}")
    return EXIT_OK


def cmd_alias_list(args: argparse.Namespace) -> int:
    aliases = AliasStore().all()
    if args.json:
        print_json({"aliases": [alias.public() for alias in aliases]})
    else:
        table(["ALIAS", "URL", "ACCESS KEY", "REGION"],
              [[a.name, a.url, a.access_key, a.region] for a in aliases])
    return EXIT_OK


def cmd_alias_remove(args: argparse.Namespace) -> int:
    AliasStore().remove(args.name)
    print(f"Removed alias {args.name}")
    return EXIT_OK


# --- info --------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    info = _client(args).call("GET", "info")
    if args.json:
        print_json(info)
        return EXIT_OK
    erasure, usage, registry, health = info["erasure"], info["usage"], info["registry"], info["health"]
    print(f"Buckets {info['version']}  deployment {info['deployment_id']}  region {info['region']}")
    print(f"Uptime:   {human_duration(info['uptime_seconds'])}")
    print(f"Status:   {'ready' if health['status'] == 'ok' else 'NOT READY'} "
          f"({health['disks_online']}/{health['disks_total']} disks online, write quorum {erasure['write_quorum']})")
    print(f"Erasure:  {erasure['data']} data + {erasure['parity']} parity")
    print(f"Usage:    {usage['objects']} objects, {human_size(usage['bytes'])} in {usage['buckets']} buckets")
    print(f"Registry: {human_size(registry['size_bytes'])}, {registry['entries']} entries, "
          f"cache {registry['cache_hits']} hits / {registry['cache_misses']} misses")
    cluster = info.get("cluster")
    if cluster:
        print(f"Cluster:  {cluster['nodes_online']}/{cluster['nodes_total']} nodes online, generation "
              f"{cluster['generation']}, control plane {'has a majority' if cluster['has_quorum'] else 'HAS NO MAJORITY'}")
        print()
        table(["NODE", "STATE", "ROLE", "DISKS"],
              [[n["endpoint"] + ("  (this node)" if n["self"] else ""), "online" if n["online"] else "OFFLINE",
                "leader" if n["leader"] else "", f"{n['disks_online']}/{n['disks_total']}"]
               for n in cluster["nodes"]])
    print()
    table(["DISK", "STATE", "USED", "FREE", "TOTAL", "ERROR"],
          [[d["endpoint"], d["state"], human_size(d["used"]) if d["state"] != "offline" else "-",
            human_size(d["free"]) if d["state"] != "offline" else "-",
            human_size(d["total"]) if d["state"] != "offline" else "-", d.get("error") or ""]
           for d in info["disks"]])
    return EXIT_OK


# --- users -------------------------------------------------------------------------------------


def cmd_user_add(args: argparse.Namespace) -> int:
    result = _client(args).call("PUT", f"users/{args.access_key}", {"secret_key": args.secret_key})
    if args.json:
        print_json(result)
    else:
        print(f"{'Added' if result.get('created') else 'Updated'} user {args.access_key}")
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace) -> int:
    users = _client(args).call("GET", "users")["users"]
    if args.json:
        print_json({"users": users})
    else:
        table(["ACCESS KEY", "STATUS", "POLICY", "CREATED"],
              [[u["access_key"], "enabled" if u["enabled"] else "disabled", u.get("policy", ""),
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(u.get("created") or 0))] for u in users])
    return EXIT_OK


def cmd_user_remove(args: argparse.Namespace) -> int:
    _client(args).call("DELETE", f"users/{args.access_key}")
    print(f"Removed user {args.access_key}")
    return EXIT_OK


def cmd_user_enable(args: argparse.Namespace) -> int:
    action = "enable" if args.enable else "disable"
    _client(args).call("POST", f"users/{args.access_key}/{action}")
    print(f"User {args.access_key} {action}d")
    return EXIT_OK


# --- heal --------------------------------------------------------------------------------------


def _heal_lines(status: dict[str, Any]) -> list[str]:
    return [f"Objects: {status['objects_done']}/{status['objects_total']} "
            f"{'done' if status['done'] else 'in progress'}",
            f"Shards:  {status['shards_bad']} bad, {status['shards_repaired']} repaired, "
            f"{status['shards_failed']} failed; {status['objects_unrecoverable']} objects unrecoverable",
            f"Queued:  {status['queued']} objects waiting for repair"]


def cmd_heal_start(args: argparse.Namespace) -> int:
    client = _client(args)
    status = client.call("POST", "heal")
    if args.no_wait:
        if args.json:
            print_json(status)
        else:
            print("Heal pass started; follow it with: buckets-admin heal status " + args.alias)
        return EXIT_OK
    deadline = time.monotonic() + args.wait_timeout if args.wait_timeout else None
    with progress_bar("Healing", status["objects_total"] or None, enabled=show_progress(args.progress),
                      unit_bytes=False) as bar:
        while not status["done"]:
            bar.update(completed=status["objects_done"], total=status["objects_total"] or None)
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(f"the heal pass is still running after {args.wait_timeout:g}s; "
                               f"check again with: buckets-admin heal status {args.alias}")
            time.sleep(args.interval)
            status = client.call("GET", "heal")
        bar.update(completed=status["objects_total"], total=status["objects_total"] or 1)
    if args.json:
        print_json(status)
    else:
        print("Heal pass finished")
        print("\n".join(_heal_lines(status)))
    return EXIT_OK


def cmd_heal_status(args: argparse.Namespace) -> int:
    status = _client(args).call("GET", "heal")
    if args.json:
        print_json(status)
        return EXIT_OK
    if status["started"] is None:
        print("No heal pass requested since the server started; the background scanner "
              f"is on cycle {status['cycle']}{' (scanning now)' if status['scanning'] else ''}")
    print("\n".join(_heal_lines(status)))
    for disk in status.get("refill", {}).values():
        state = "finished" if disk.get("finished") else "refilling"
        print(f"Disk {disk.get('endpoint')}: {state}, {disk.get('done')}/{disk.get('total')} objects checked")
    return EXIT_OK


# --- config ------------------------------------------------------------------------------------


def cmd_config_get(args: argparse.Namespace) -> int:
    settings = _client(args).call("GET", "config")["settings"]
    if args.key:
        if args.key not in settings:
            raise CliError(f"unknown live setting {args.key!r} (live settings: {', '.join(settings)})")
        settings = {args.key: settings[args.key]}
    if args.json:
        print_json({name: entry["value"] for name, entry in settings.items()})
    else:
        table(["SETTING", "VALUE", "DESCRIPTION"], [[name, entry["value"], entry["help"]]
                                                     for name, entry in settings.items()])
    return EXIT_OK


def cmd_config_set(args: argparse.Namespace) -> int:
    changes: dict[str, str] = {}
    for pair in args.pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise CliError(f"{pair!r}: write settings as NAME=VALUE, e.g. scanner_rate=50")
        changes[name.strip()] = value.strip()
    result = _client(args).call("PUT", "config", changes)
    if args.json:
        print_json(result["applied"])
    else:
        for name, value in result["applied"].items():
            print(f"{name} = {value}")
        print("(live until the server restarts; put lasting values in the config file)")
    return EXIT_OK


# --- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Operate a Buckets server through its admin API.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer (default 30)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(group: Any, name: str, func: Any, help_text: str, *, alias: bool = True,
                json_flag: bool = True) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help_text, description=help_text)
        if alias:
            sub.add_argument("alias", metavar="ALIAS", help="the server, as set with 'alias set'")
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        sub.set_defaults(func=func)
        return sub

    alias_group = commands.add_parser("alias", help="manage server aliases").add_subparsers(
        dest="alias_command", metavar="ACTION", required=True)
    sub = command(alias_group, "set", cmd_alias_set, "add or replace an alias", alias=False, json_flag=False)
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("url", metavar="URL", help="http://HOST:PORT")
    sub.add_argument("access_key", metavar="ACCESS_KEY")
    sub.add_argument("secret_key", metavar="SECRET_KEY")
    sub.add_argument("--region", default="us-east-1", help="region to sign with (default us-east-1)")
    sub.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    command(alias_group, "list", cmd_alias_list, "list aliases (secrets are never shown)", alias=False)
    sub = command(alias_group, "remove", cmd_alias_remove, "remove an alias", alias=False, json_flag=False)
    sub.add_argument("name", metavar="NAME")

    command(commands, "info", cmd_info, "version, uptime, disks, erasure layout, usage, registry")

    user_group = commands.add_parser("user", help="manage users").add_subparsers(
        dest="user_command", metavar="ACTION", required=True)
    sub = command(user_group, "add", cmd_user_add, "add a user, or set a new secret for one")
    sub.add_argument("access_key", metavar="ACCESS_KEY")
    sub.add_argument("secret_key", metavar="SECRET_KEY", help="8 to 128 characters")
    command(user_group, "list", cmd_user_list, "list users")
    sub = command(user_group, "remove", cmd_user_remove, "remove a user", json_flag=False)
    sub.add_argument("access_key", metavar="ACCESS_KEY")
    for name, enable in (("enable", True), ("disable", False)):
        sub = command(user_group, name, cmd_user_enable, f"{name} a user", json_flag=False)
        sub.add_argument("access_key", metavar="ACCESS_KEY")
        sub.set_defaults(enable=enable)

    heal_group = commands.add_parser("heal", help="verify and repair every object").add_subparsers(
        dest="heal_command", metavar="ACTION", required=True)
    sub = command(heal_group, "start", cmd_heal_start, "start a full heal pass and follow it")
    sub.add_argument("--no-wait", action="store_true", help="return once the pass is started")
    sub.add_argument("--interval", type=float, default=0.5, help="seconds between status polls")
    sub.add_argument("--wait-timeout", type=float, default=0.0, help="give up waiting after this many seconds")
    progress = sub.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="always show the progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show it")
    command(heal_group, "status", cmd_heal_status, "progress of the heal pass and repair counters")

    config_group = commands.add_parser("config", help="settings that can change live").add_subparsers(
        dest="config_command", metavar="ACTION", required=True)
    sub = command(config_group, "get", cmd_config_get, "show live settings")
    sub.add_argument("key", nargs="?", metavar="NAME")
    sub = command(config_group, "set", cmd_config_set, "change live settings (until restart)")
    sub.add_argument("pairs", nargs="+", metavar="NAME=VALUE")
    return parser


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from buckets.admin.client import AdminCallError

    try:
        return args.func(args)
    except (CliError, AdminCallError) as error:
        return fail(PROG, str(error))
    except KeyboardInterrupt:
        return fail(PROG, "interrupted", 130)
    except BrokenPipeError:
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> NoReturn:
    """Console script ``buckets-admin``."""
    sys.exit(run(argv))
