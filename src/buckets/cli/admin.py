"""``buckets-admin``: operate a Buckets server through its signed admin API.

    buckets-admin alias set local http://127.0.0.1:9000 ROOT_USER ROOT_PASSWORD
    buckets-admin info local
    buckets-admin user add local alice alice-secret-key
    buckets-admin user list local
    buckets-admin kms key create local my-key   # SSE-KMS with --sse-kms-key-id my-key
    buckets-admin kms key list local
    buckets-admin heal start local          # progress bar until the pass is done
    buckets-admin config set local scanner_rate=50 log_level=debug
    buckets-admin cluster add-node local http://127.0.0.5:9000/srv/n5/d{1...4}   # until migrated
    buckets-admin cluster list-nodes local
    buckets-admin cluster remove-node local http://127.0.0.5:9000                 # drains first

Every command that reads takes ``--json`` for scripts. Errors are one line on stderr and
exit status 1 (2 for a bad command line); never a traceback.
"""

from __future__ import annotations

import argparse
import json
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
    verify = alias.tls_verify() if alias.url.startswith("https") else True
    return AdminClient(alias.url, alias.access_key, alias.secret_key, region=alias.region,
                       insecure=verify is False, ca_file=verify if isinstance(verify, str) else None,
                       timeout=args.timeout)


# --- alias -------------------------------------------------------------------------------------


def cmd_alias_set(args: argparse.Namespace) -> int:
    AliasStore().set(Alias(args.name, args.url, args.access_key, args.secret_key, region=args.region,
                           insecure=args.insecure, ca_file=args.ca_file))
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
    small = erasure.get("small")
    print(f"Erasure:  {erasure['data']} data + {erasure['parity']} parity"
          + (f"; objects up to {human_size(small['max_bytes'])}: {small['data']} data + {small['parity']} parity"
             if small else "") + (f" (parity by {'ISA-L' if erasure['coder'] == 'isal' else 'zfec'})"
                                  if erasure.get("coder") else ""))
    print(f"Usage:    {usage['objects']} objects, {human_size(usage['bytes'])} in {usage['buckets']} buckets")
    print(f"Registry: {human_size(registry['size_bytes'])}, {registry['entries']} entries, "
          f"cache {registry['cache_hits']} hits / {registry['cache_misses']} misses")
    cluster = info.get("cluster")
    if cluster:
        print(f"Cluster:  {cluster['nodes_online']}/{cluster['nodes_total']} nodes online, generation "
              f"{cluster['generation']}, control plane {'has a majority' if cluster['has_quorum'] else 'HAS NO MAJORITY'}")
        control = cluster.get("control") or {}
        if control.get("journal_failed"):
            print("Control:  THIS NODE'S JOURNAL DISK FAILED (I/O errors): it stores no control-plane change; replace "
                  "its first disk" + ("; it missed some, and answers S3 with 503" if control.get("behind") else ""))
        elif control.get("journal_full"):
            print("Control:  THIS NODE'S JOURNAL DISK IS FULL: it cannot store control-plane changes; free space "
                  "on its first disk" + ("; it missed some, and answers S3 with 503 until it caught up"
                                         if control.get("behind") else ""))
        print(f"Migration: {_migration_line(cluster.get('migration'))}")
        layout = cluster.get("layout")
        if layout:
            print(f"Layout:   {layout['k']}+{layout['m']}, each object on {layout['set_size']} of the "
                  f"{layout['disks']} disks; tolerates {cluster['tolerates']} node failure(s)")
        level = cluster.get("level")
        if level and level.get("cluster") is not None:
            print(f"Level:    {_level_line(level)}")
        if cluster.get("slow_link"):
            print(f"Link:     SLOW: the other nodes find this node's link slow "
                  f"({', '.join(cluster.get('slow_link_named_by') or [])}): its /health/ready answers 503 so that "
                  "load balancers send clients to the other nodes; check its network")
        if cluster.get("disks_lagging"):
            print(f"Disks:    LAGGING: {', '.join(cluster['disks_lagging'])} lag this node's other disks: the other "
                  "nodes read and write around them; check them (smartctl, dmesg), replace one that stays so")
        clock = cluster.get("clock")
        if clock and clock.get("skewed"):
            print(f"Clocks:   SKEWED: {', '.join(clock['skewed'])} more than {clock['warn_above']:g} s off this "
                  f"node's clock; keep every node's clock in sync (NTP)")
        print()
        table(["NODE", "STATE", "ONLINE", "ROLE", "DISKS", "CLOCK", "LEVEL"],
              [[n["endpoint"] + ("  (this node)" if n["self"] else ""), n.get("state", "active"),
                "online" if n["online"] else "OFFLINE", "leader" if n["leader"] else "",
                f"{n['disks_online']}/{n['disks_total']}", _clock_cell(n),
                "-" if n.get("level") is None else str(n["level"])]
               for n in cluster["nodes"]])
    print()
    table(["DISK", "STATE", "USED", "FREE", "TOTAL", "ERROR"],
          [[d["endpoint"], d["state"], human_size(d["used"]) if d["state"] != "offline" else "-",
            human_size(d["free"]) if d["state"] != "offline" else "-",
            human_size(d["total"]) if d["state"] != "offline" else "-", d.get("error") or ""]
           for d in info["disks"]])
    return EXIT_OK


def _level_line(level: dict) -> str:
    """The cluster's control level, and what an upgrade in progress waits for."""
    line = f"control level {level['cluster']}"
    if level.get("behind"):
        line += (f"; upgrade in progress: {', '.join(level['behind'])} still run"
                 f"{'s' if len(level['behind']) == 1 else ''} an older release")
    elif level.get("upgrading"):
        line += f"; rises to {level['highest']} once every node has answered"
    if level.get("unknown"):
        line += f" (no answer yet from {', '.join(level['unknown'])})"
    return line


def _clock_cell(node: dict) -> str:
    """A node's clock against the answering node's: ``+0.003s ±0.001`` (``-`` not measured yet)."""
    if node.get("self"):
        return "reference"
    offset, spread = node.get("clock_offset"), node.get("clock_uncertainty")
    if offset is None:
        return "-"
    return f"{offset:+.3f}s ±{spread:.3f}"


# --- users -------------------------------------------------------------------------------------


def _policy_argument(value: str) -> str:
    """A policy name, a JSON document, or ``@FILE`` holding one."""
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as f:
            return f.read()
    return value


def cmd_user_add(args: argparse.Namespace) -> int:
    body = {"secret_key": args.secret_key}
    if args.policy is not None:
        body["policy"] = _policy_argument(args.policy)
    result = _client(args).call("PUT", f"users/{args.access_key}", body)
    if args.json:
        print_json(result)
    else:
        print(f"{'Added' if result.get('created') else 'Updated'} user {args.access_key} "
              f"(policy {_short(result.get('policy', 'readwrite'))})")
    return EXIT_OK


def _short(policy: str) -> str:
    return "a JSON document" if policy.lstrip().startswith("{") else policy


def cmd_user_info(args: argparse.Namespace) -> int:
    user = _client(args).call("GET", f"users/{args.access_key}")
    if args.json:
        print_json(user)
    else:
        for field in ("access_key", "enabled", "policy", "canonical_id", "account_id", "arn"):
            print(f"{field:13} {user[field]}")
    return EXIT_OK


def cmd_user_policy(args: argparse.Namespace) -> int:
    result = _client(args).call("PUT", f"users/{args.access_key}/policy", {"policy": _policy_argument(args.policy)})
    if args.json:
        print_json(result)
    else:
        print(f"User {args.access_key} now has policy {_short(result['policy'])}")
    return EXIT_OK


# --- policies ----------------------------------------------------------------------------------


def cmd_policy_list(args: argparse.Namespace) -> int:
    policies = _client(args).call("GET", "policies")["policies"]
    if args.json:
        print_json({"policies": policies})
    else:
        table(["NAME", "KIND"], [[p["name"], "canned" if p["canned"] else "named"] for p in policies])
    return EXIT_OK


def cmd_policy_info(args: argparse.Namespace) -> int:
    policy = _client(args).call("GET", f"policies/{args.name}")
    if args.json:
        print_json(policy)
    else:
        print(json.dumps(json.loads(policy["document"]), indent=2))
        if policy.get("users"):
            print(f"attached to: {', '.join(policy['users'])}")
    return EXIT_OK


def cmd_policy_add(args: argparse.Namespace) -> int:
    with open(args.file, encoding="utf-8") as f:
        document = f.read()
    result = _client(args).call("PUT", f"policies/{args.name}", {"document": document})
    if args.json:
        print_json(result)
    else:
        print(f"{'Added' if result.get('created') else 'Updated'} policy {args.name}")
    return EXIT_OK


def cmd_policy_remove(args: argparse.Namespace) -> int:
    _client(args).call("DELETE", f"policies/{args.name}")
    print(f"Removed policy {args.name}")
    return EXIT_OK


# --- kms ---------------------------------------------------------------------------------------


def cmd_kms_key_create(args: argparse.Namespace) -> int:
    result = _client(args).call("PUT", f"kms/keys/{args.name}")
    if args.json:
        print_json(result)
    else:
        print(f"Created KMS key {result['name']} ({result['arn']})")
    return EXIT_OK


def cmd_kms_key_list(args: argparse.Namespace) -> int:
    result = _client(args).call("GET", "kms/keys")
    if args.json:
        print_json(result)
        return EXIT_OK
    master = result["master"]
    line = f"Master key: {master['state']}"
    if master.get("name"):
        line += f", {master['name']} (fingerprint {master.get('fingerprint')})"
    if master.get("source"):
        line += f" from {master['source']}"
    print(line)
    if master.get("problem"):
        print(f"Problem:    {master['problem']}")
    print()
    table(["KEY", "DEFAULT", "CREATED"],
          [[k["name"], "yes" if k["default"] else "",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k["created"])) if k.get("created") else ""]
           for k in result["keys"]])
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
            f"Queued:  {status['queued']} objects waiting for repair"
            + (f", {status['deferred']} waiting for a slow peer or disk to keep up" if status.get("deferred") else "")]


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


# --- cluster -----------------------------------------------------------------------------------


def _migration_line(job: dict[str, Any] | None) -> str:
    if not job or job.get("state") in (None, "none"):
        return "none"
    return (f"{job['state']}, generation {job.get('from_gen')} -> {job.get('to_gen')}, "
            f"{job.get('moved_objects') or 0} objects ({human_size(job.get('moved_bytes') or 0)}) moved, "
            f"{job.get('errors') or 0} errors")


def _node_and_paths(arg: str) -> tuple[str, list[str]]:
    """``http://127.0.0.5:9000/srv/n5/d{1...4}`` -> the node's URL and its disk paths."""
    from urllib.parse import urlsplit

    from buckets.cli.ellipsis import expand

    try:
        items = expand(arg)
    except ValueError as error:
        raise CliError(f"{arg!r}: {error}") from None
    nodes: dict[str, list[str]] = {}
    for item in items:
        try:
            parts = urlsplit(item)
            port = parts.port
        except ValueError:
            port = None
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise CliError(f"{item!r}: name the node's disks as URLs with a port, e.g. "
                           f"http://127.0.0.5:9000/data{{1...4}}")
        nodes.setdefault(f"{parts.scheme}://{parts.netloc}", [])
        if parts.path not in ("", "/"):
            nodes[f"{parts.scheme}://{parts.netloc}"].append(parts.path.rstrip("/") or "/")
    if len(nodes) != 1:
        raise CliError(f"{arg!r} names {len(nodes)} nodes: add or remove one node at a time")
    (url, paths), = nodes.items()
    return url, paths


def _follow_migration(args: argparse.Namespace, client: Any, what: str) -> dict[str, Any]:
    """A progress bar until the migration is done; returns its last status."""
    deadline = time.monotonic() + args.wait_timeout if args.wait_timeout else None
    status = client.call("GET", "cluster/migration")
    with progress_bar(what, None, enabled=show_progress(args.progress), unit_bytes=False) as bar:
        while status.get("state") not in ("done", "none", None):
            planned = status.get("planned") or {}
            total = planned.get("objects") or None
            if total is not None and status.get("remaining_objects") is not None:
                bar.update(completed=max(0, total - status["remaining_objects"]), total=total)
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(f"the migration is still {status.get('state')} after {args.wait_timeout:g}s; "
                               f"follow it with: buckets-admin cluster migration-status {args.alias}")
            time.sleep(args.interval)
            status = client.call("GET", "cluster/migration")
        total = (status.get("planned") or {}).get("objects") or 1
        bar.update(completed=total, total=total)
    return status


def _print_migration(status: dict[str, Any]) -> None:
    if status.get("state") in (None, "none"):
        print("Migration: none")
        return
    planned = status.get("planned") or {}
    rate = status.get("rate") or {}
    print(f"Migration: {status['state']}, generation {status.get('from_gen')} -> {status.get('to_gen')}"
          f"{', coordinated by ' + status['coordinator'] if status.get('coordinator') else ''}")
    print(f"Moved:     {status.get('moved_objects') or 0} objects, {human_size(status.get('moved_bytes') or 0)}"
          f" (pass {status.get('pass') or 1}); {status.get('skipped') or 0} skipped, {status.get('errors') or 0} errors")
    if planned:
        print(f"Planned:   {planned.get('objects', 0)} objects, {human_size(planned.get('bytes', 0))}; remaining "
              f"{status.get('remaining_objects')} objects, {human_size(status.get('remaining_bytes') or 0)}")
    if status.get("state") != "done":
        eta = status.get("eta_seconds")
        print(f"Rate:      {human_size(rate.get('bytes_per_s') or 0)}/s, {rate.get('objects_per_s') or 0:g} objects/s"
              f"; ETA {human_duration(eta) if eta is not None else 'unknown'}")
    throttle = status.get("throttle") or {}
    if throttle:
        limit = throttle.get("bytes_per_s")
        print(f"Throttle:  {human_size(limit) + '/s' if limit else 'unlimited'}, "
              f"{throttle.get('objects')} objects at a time")
    for name, counts in sorted((status.get("nodes") or {}).items()):
        print(f"  {name}: in {counts.get('objects_in', 0)} objects ({human_size(counts.get('bytes_in', 0))}), "
              f"out {counts.get('objects_out', 0)} objects ({human_size(counts.get('bytes_out', 0))})")
    if status.get("last_error"):
        print(f"Last error: {status['last_error']}")


def _unconfirmed(error: Exception) -> bool:
    """A membership change answered 503 because the control plane did not confirm it in time
    (its leader changed, or a follower's forward was lost on a reconnect): asking again is safe,
    as the change applies once and a retry finishes what the first attempt began. Told by the
    error's ``reason``; a server from before it had one is read by its message."""
    if getattr(error, "status", None) != 503:
        return False
    reason = getattr(error, "reason", None)
    if reason is not None:
        return reason == "NoQuorum"
    text = str(error)
    return "committed it within" in text or "no control-plane leader" in text


def _change(args: argparse.Namespace, client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST path`` (a membership change), asked again while the control plane leaves it
    unconfirmed (``_unconfirmed``), up to ``--wait-timeout``. An answer after such a retry
    carries ``after_retry``: if it says the change was made already, the first attempt made it
    (``_made_by_the_first_attempt``)."""
    from buckets.admin.client import AdminCallError

    deadline = time.monotonic() + (args.wait_timeout or 300.0)
    retried = False
    while True:
        try:
            result = client.call("POST", path, body)
            return {**result, "after_retry": True} if retried else result
        except AdminCallError as error:
            if not _unconfirmed(error) or time.monotonic() > deadline:
                raise
            print(f"{path}: {error}; asking again (a change applies once)", file=sys.stderr)
            retried = True
            time.sleep(1.0)


def _made_by_the_first_attempt(args: argparse.Namespace, client: Any, result: dict[str, Any], message: str,
                               what: str) -> int:
    """A retried change answered that it was made already: most likely by the attempt whose
    answer was lost, so its migration is followed as the first answer would have been."""
    if not args.json:
        print(f"{message} (the first attempt, left unconfirmed, made the change)")
    return _after_change(args, client, result, what)


def _add_node_call(args: argparse.Namespace, client: Any, url: str, paths: list[str]) -> dict[str, Any]:
    """``cluster/add-node``; a single node answers that it becomes a cluster of one and
    restarts: wait until it answers as a cluster node, then ask again (the joining node
    needs a moment to format its disks for the deployment: retried while it has not)."""
    from buckets.admin.client import AdminCallError

    body = _accepting(args, {"endpoint": url, "paths": paths or None})
    result = _change(args, client, "cluster/add-node", body)
    if not result.get("converting"):
        return result
    if not args.json:
        print(f"{args.alias} was a single node: it becomes a cluster of one at {result.get('url')} and restarts "
              f"(S3 clients wait a moment; nothing is refused)")
    deadline = time.monotonic() + (args.wait_timeout or 300.0)
    last = ""
    while True:
        time.sleep(0.5)
        try:
            result = client.call("POST", "cluster/add-node", body)
            if not result.get("converting"):
                return result
            last = "still restarting"
        except AdminCallError as error:
            if error.code == "ConversionFailed":
                raise CliError(f"{args.alias} did not become a cluster: {error}") from None
            if error.reason == "NotACluster" or (error.reason is None and error.code == "InvalidRequest"
                                                 and "not a cluster node" in str(error)):
                raise CliError(f"{args.alias} did not become a cluster: see its log") from None
            if error.code not in (None, "NodeNotJoined", "ServiceUnavailable", "SlowDown"):
                raise
            last = str(error)
        if time.monotonic() > deadline:
            raise CliError(f"{args.alias} did not accept {url} within {args.wait_timeout or 300.0:g}s after "
                           f"becoming a cluster: {last}")


def cmd_cluster_add_node(args: argparse.Namespace) -> int:
    url, paths = _node_and_paths(args.node)
    client = _client(args)
    result = _add_node_call(args, client, url, paths)
    return _run_add(args, client, result, lambda: _wait_queued(args, client, result, "add-node", url),
                    f"{url} is already in the cluster",
                    lambda r: f"Added {url} ({len(r.get('disks') or [])} disks): generation {r['generation']}, "
                              f"migrating from generation {r['from_generation']}", "Migrating")


def _run_add(args: argparse.Namespace, client: Any, result: dict[str, Any], wait_queued: Any, already: str,
             added: Any, what: str) -> int:
    """The rest of an add-node or add-disk: its turn in the queue, a no-op, or the migration."""
    if result.get("queued"):
        result = wait_queued()
        if result is None:
            return EXIT_OK
    if not result.get("added"):
        if result.get("after_retry"):
            return _made_by_the_first_attempt(args, client, result, result.get("message") or already, what)
        if args.json:
            print_json(result)
        else:
            print(result.get("message") or already)
        return EXIT_OK
    if not args.json:
        print(added(result))
        _print_tolerance(result)
    return _after_change(args, client, result, what)


def _accepting(args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    """A change's body, with ``--accept-lower-tolerance`` when given (the server refuses a change
    that lowers the node failures the cluster tolerates without it: ``ToleranceWouldFall``)."""
    return {**body, "accept_lower_tolerance": True} if args.accept_lower_tolerance else body


def _print_tolerance(result: dict[str, Any]) -> None:
    """What a membership change does to the node failures the cluster tolerates, when it changes them."""
    tolerance = result.get("tolerates")
    if not tolerance or tolerance["before"] == tolerance["after"]:
        return
    before, after = tolerance["before"], tolerance["after"]
    if after < before:
        print(f"Warning: once this change is done the cluster tolerates {after} node failure(s), not {before}: "
              f"with {after + 1} node(s) down some objects answer 503 until they are back; add a node (or disks) "
              f"to restore it")
    else:
        print(f"Once this change is done the cluster tolerates {after} node failure(s) (was {before})")


def _wait_queued(args: argparse.Namespace, client: Any, result: dict[str, Any], op: str,
                 endpoint: str, *, path: str | None = None, check: bool = True) -> dict[str, Any] | None:
    """A change queued behind a running migration: say so; unless ``--no-wait``, wait until the
    leader applied it and return what ``add-node``/``remove-node`` answer right after a change
    (None: nothing more to do here)."""
    if args.json and args.no_wait:
        print_json(result)
        return None
    if not args.json:
        print(result["message"])
    if args.no_wait:
        print(f"Follow it with: buckets-admin cluster list-nodes {args.alias}")
        return None
    deadline = time.monotonic() + args.wait_timeout if args.wait_timeout else None
    with progress_bar("Queued", None, enabled=show_progress(args.progress), unit_bytes=False):
        while True:
            listing = client.call("GET", "cluster/nodes")
            if not any(c.get("op") == op and c.get("endpoint") == endpoint and c.get("path") == path
                       for c in listing.get("queued") or []):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(f"{op} {endpoint} is still queued after {args.wait_timeout:g}s; follow it with: "
                               f"buckets-admin cluster list-nodes {args.alias}")
            time.sleep(args.interval)
    if not check:
        return listing
    info = next((n for n in listing["nodes"] if n["endpoint"] == endpoint), None)
    migration = listing.get("migration") or {}
    applied = {"node": endpoint, "generation": listing["generation"], "from_generation": migration.get("from_gen"),
               "disks": (info or {}).get("disks") or [], "state": (info or {}).get("state", "removed")}
    if op == "add-node":
        if info is None or info["state"] != "active":
            raise CliError(f"the queued add-node of {endpoint} was dropped: see the leader's log")
        return {**applied, "added": True}
    if info is not None and info["state"] == "active":
        raise CliError(f"the queued remove-node of {endpoint} was dropped: see the leader's log")
    return applied


def _removal(args: argparse.Namespace, client: Any, result: dict[str, Any], wait_queued: Any) -> dict[str, Any] | None:
    """A remove-node or remove-disk answer: its turn in the queue, or a message that ends it
    (draining already; None returned, after following the migration when a retry found it so),
    or the change to follow."""
    if result.get("queued"):
        result = wait_queued()
        if result is None:
            return None
    if result.get("message") and result.get("after_retry"):
        _made_by_the_first_attempt(args, client, result, result["message"], "Draining")
        return None
    if result.get("message"):
        if args.json:
            print_json(result)
        else:
            print(result["message"])
        return None
    return result


def cmd_cluster_remove_node(args: argparse.Namespace) -> int:
    client = _client(args)
    result = _change(args, client, "cluster/remove-node",
                     _accepting(args, {"endpoint": args.node, "force": args.force}))
    node = result["node"]
    result = _removal(args, client, result, lambda: _wait_queued(args, client, result, "remove-node", node))
    if result is None:
        return EXIT_OK
    if not args.json:
        print(f"{'Removed' if args.force else 'Draining'} {node}: generation {result['generation']}, migrating "
              f"from generation {result['from_generation']}")
        _print_tolerance(result)
    if args.no_wait:
        if args.json:
            print_json(result)
        else:
            print(f"Follow it with: buckets-admin cluster migration-status {args.alias}; the node leaves once "
                  f"the migration is done")
        return EXIT_OK
    status = _follow_migration(args, client, "Draining" if not args.force else "Rebuilding")
    deadline = time.monotonic() + 60.0
    state = result["state"]
    while state != "removed" and time.monotonic() < deadline:  # the leader finishes the removal
        nodes = client.call("GET", "cluster/nodes")["nodes"]
        state = next((n["state"] for n in nodes if n["endpoint"] == node), "removed")
        if state != "removed":
            time.sleep(args.interval)
    # The leader committed the removal; the node itself stops serving S3 once it adopted that
    # topology (milliseconds later, or when it comes back if it is down): wait for it to say so.
    own = _own_view(client, node, args.interval) if state == "removed" else None
    if args.json:
        print_json({**result, "state": state, "migration": status, "node_says": own})
    else:
        print(f"Migration done: {status.get('moved_objects') or 0} objects "
              f"({human_size(status.get('moved_bytes') or 0)}) moved, {status.get('errors') or 0} errors")
        if state != "removed":
            print(f"{node} is {state}; it leaves shortly (check with list-nodes)")
        elif own == "removed":
            print(f"{node} is removed: it can be stopped")
        elif own == "unreachable":
            print(f"{node} is removed (it does not answer): it can be stopped")
        else:
            print(f"{node} is removed; it has not adopted its removal yet and may still answer S3 "
                  f"requests as a member: check {node}/health/cluster before stopping it")
    return EXIT_OK


def _own_view(client: Any, node: str, interval: float, timeout: float = 15.0) -> str:
    """What ``node`` says of itself once the leader removed it: ``removed`` (it adopted the
    topology and answers S3 with 503), ``unreachable``, or ``member`` (not yet, after ``timeout``)."""
    from buckets.admin.client import AdminCallError

    deadline = time.monotonic() + timeout
    while True:
        try:
            _, health = client.probe(node, "/health/cluster")
        except AdminCallError:
            return "unreachable"
        if (health or {}).get("removed") is True:
            return "removed"
        if time.monotonic() > deadline:
            return "member"
        time.sleep(min(interval, 0.2))


def _one_disk(arg: str) -> tuple[str, str]:
    url, paths = _node_and_paths(arg)
    if len(paths) != 1:
        raise CliError(f"{arg!r}: name one disk, as http://HOST:PORT/path")
    return url, paths[0]


def cmd_cluster_add_disk(args: argparse.Namespace) -> int:
    url, path = _one_disk(args.disk)
    client = _client(args)
    result = _change(args, client, "cluster/add-disk", _accepting(args, {"endpoint": url, "path": path}))
    return _run_add(args, client, result, lambda: _wait_queued_disk(args, client, result, "add-disk", url, path),
                    f"{url}{path} is a disk of the cluster already",
                    lambda r: f"Added disk {url}{path} ({r['disk']['id']}): generation {r['generation']}, "
                              f"migrating from generation {r['from_generation']}", "Filling")


def cmd_cluster_remove_disk(args: argparse.Namespace) -> int:
    url, path = _one_disk(args.disk)
    client = _client(args)
    result = _change(args, client, "cluster/remove-disk", _accepting(args, {"endpoint": url, "path": path}))
    result = _removal(args, client, result,
                      lambda: _wait_queued_disk(args, client, result, "remove-disk", url, path))
    if result is None:
        return EXIT_OK
    if not args.json:
        print(f"Draining disk {url}{path}: generation {result['generation']}, migrating from generation "
              f"{result['from_generation']}")
        _print_tolerance(result)
    code = _after_change(args, client, result, "Draining")
    if not args.no_wait:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:  # the leader drops the drained disk
            nodes = client.call("GET", "cluster/nodes")["nodes"]
            if not any(d["path"] == path for n in nodes if n["endpoint"] == url for d in n["disks"]):
                if not args.json:
                    print(f"{url}{path} is removed from the cluster: it can be unmounted")
                break
            time.sleep(args.interval)
        else:
            print(f"{url}{path} is drained; it leaves the node's record shortly (check with node-info)")
    return code


def _wait_queued_disk(args: argparse.Namespace, client: Any, result: dict[str, Any], op: str, url: str,
                      path: str) -> dict[str, Any] | None:
    """A disk change queued behind a running migration: as ``_wait_queued``, then the answer of
    the change itself (asked again: now it is applied, or a no-op)."""
    if _wait_queued(args, client, result, op, url, path=path, check=False) is None:
        return None
    listing = client.call("GET", "cluster/nodes")
    migration = listing.get("migration") or {}
    disk = next((d for n in listing["nodes"] if n["endpoint"] == url for d in n["disks"] if d["path"] == path), None)
    if op == "add-disk" and disk is None:
        raise CliError(f"the queued add-disk of {url}{path} was dropped: see the leader's log")
    return {"node": url, "added": op == "add-disk", "disk": disk or {"path": path}, "state": "draining",
            "generation": listing["generation"], "from_generation": migration.get("from_gen")}


def _after_change(args: argparse.Namespace, client: Any, result: dict[str, Any], what: str) -> int:
    if args.no_wait:
        if args.json:
            print_json(result)
        else:
            print(f"Follow the migration with: buckets-admin cluster migration-status {args.alias}")
        return EXIT_OK
    status = _follow_migration(args, client, what)
    if args.json:
        print_json({**result, "migration": status})
    else:
        print(f"Migration done: {status.get('moved_objects') or 0} objects "
              f"({human_size(status.get('moved_bytes') or 0)}) moved, {status.get('errors') or 0} errors")
    return EXIT_OK


def _disk_summary(n: dict[str, Any]) -> str:
    online = sum(1 for d in n["disks"] if d["online"])
    return f"{online}/{len(n['disks'])}"


def cmd_cluster_list_nodes(args: argparse.Namespace) -> int:
    listing = _client(args).call("GET", "cluster/nodes")
    if args.json:
        print_json(listing)
        return EXIT_OK
    layout = listing["layout"]
    print(f"Deployment {listing['deployment_id']}, generation {listing['generation']}, "
          f"{layout['k']} data + {layout['m']} parity"
          + (f", control level {listing['level']}" if listing.get("level") is not None else ""))
    print(f"Migration: {_migration_line(listing.get('migration'))}")
    for n, change in enumerate(listing.get("queued") or [], 1):
        print(f"Queued {n}:  {change.get('op')} {change.get('endpoint')}{change.get('path') or ''}"
              f"{' --force' if change.get('force') else ''} (after the running migration)")
    print()
    table(["NODE", "STATE", "ONLINE", "ROLE", "DISKS", "SLOTS", "LEVEL"],
          [[n["endpoint"] + ("  (this node)" if n["self"] else ""), n["state"],
            "online" if n["online"] else "OFFLINE",
            "leader" if n["leader"] else ("member" if n["raft_member"] else "-"), _disk_summary(n), n["slots"],
            "-" if n.get("level") is None else str(n["level"])]
           for n in listing["nodes"]])
    return EXIT_OK


def cmd_cluster_node_info(args: argparse.Namespace) -> int:
    name = args.node.split("://", 1)[-1].rstrip("/")
    listing = _client(args).call("GET", "cluster/nodes")
    info = next((n for n in listing["nodes"] if n["endpoint"].split("://", 1)[-1] == name), None)
    if info is None:
        raise CliError(f"no node {args.node} in the cluster (nodes: "
                       f"{', '.join(n['endpoint'] for n in listing['nodes'])})")
    info = {**info, "generation": listing["generation"], "migration": listing.get("migration")}
    if args.json:
        print_json(info)
        return EXIT_OK
    print(f"Node:      {info['endpoint']}{'  (this node)' if info['self'] else ''}")
    print(f"State:     {info['state']}, {'online' if info['online'] else 'OFFLINE'}")
    print(f"Control:   {info['control_address']}, "
          f"{'leader' if info['leader'] else ('member' if info['raft_member'] else 'not a member')}")
    print(f"Slots:     {info['slots']} partition slots in generation {info['generation']}")
    print()
    table(["DISK", "ID", "ONLINE", "PLACED", "SLOTS"],
          [[d["endpoint"], d["id"], "online" if d["online"] else "OFFLINE",
            "draining" if d.get("draining") else ("yes" if d["placed"] else "no"), d["slots"]]
           for d in info["disks"]])
    return EXIT_OK


def cmd_migration_status(args: argparse.Namespace) -> int:
    status = _client(args).call("GET", "cluster/migration")
    if args.json:
        print_json(status)
    else:
        _print_migration(status)
    return EXIT_OK


def cmd_migration_change(args: argparse.Namespace) -> int:
    body: dict[str, Any] | None = None
    if args.action == "throttle":
        body = {}
        if args.bytes_per_s is not None:
            body["bytes_per_s"] = args.bytes_per_s
        if args.objects is not None:
            body["objects"] = args.objects
        if not body:
            raise CliError("give --bytes-per-s N and/or --objects N")
    status = _client(args).call("POST", f"cluster/migration/{args.action}", body if body is not None else {})
    if args.json:
        print_json(status)
    else:
        _print_migration(status)
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
    sub.add_argument("--ca-file", metavar="FILE", help="verify the server with this CA bundle (PEM)")
    command(alias_group, "list", cmd_alias_list, "list aliases (secrets are never shown)", alias=False)
    sub = command(alias_group, "remove", cmd_alias_remove, "remove an alias", alias=False, json_flag=False)
    sub.add_argument("name", metavar="NAME")

    command(commands, "info", cmd_info, "version, uptime, disks, erasure layout, usage, registry")

    user_group = commands.add_parser("user", help="manage users").add_subparsers(
        dest="user_command", metavar="ACTION", required=True)
    sub = command(user_group, "add", cmd_user_add, "add a user, or set a new secret for one")
    sub.add_argument("access_key", metavar="ACCESS_KEY")
    sub.add_argument("secret_key", metavar="SECRET_KEY", help="8 to 128 characters")
    sub.add_argument("--policy", metavar="POLICY",
                     help="readwrite (a new user's default), readonly, writeonly, a named policy, "
                          "a JSON policy document, or @FILE holding one")
    command(user_group, "list", cmd_user_list, "list users")
    sub = command(user_group, "info", cmd_user_info, "a user's status, policy and the IDs S3 shows for it")
    sub.add_argument("access_key", metavar="ACCESS_KEY")
    sub = command(user_group, "policy", cmd_user_policy, "attach a policy to a user")
    sub.add_argument("access_key", metavar="ACCESS_KEY")
    sub.add_argument("policy", metavar="POLICY", help="a policy name, a JSON document, or @FILE")

    policy_group = commands.add_parser("policy", help="manage named access policies").add_subparsers(
        dest="policy_command", metavar="ACTION", required=True)
    command(policy_group, "list", cmd_policy_list, "list canned and named policies")
    sub = command(policy_group, "info", cmd_policy_info, "show a policy's document and its users")
    sub.add_argument("name", metavar="NAME")
    sub = command(policy_group, "add", cmd_policy_add, "add or replace a named policy from a JSON file")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("file", metavar="FILE", help="the policy document (AWS policy language, no Principal)")
    sub = command(policy_group, "remove", cmd_policy_remove, "remove a named policy no user has", json_flag=False)
    sub.add_argument("name", metavar="NAME")

    kms_group = commands.add_parser("kms", help="the key store for SSE-KMS").add_subparsers(
        dest="kms_command", metavar="OBJECT", required=True)
    kms_key_group = kms_group.add_parser("key", help="KMS keys").add_subparsers(
        dest="kms_key_command", metavar="ACTION", required=True)
    sub = command(kms_key_group, "create", cmd_kms_key_create,
                  "create a KMS key (x-amz-server-side-encryption-aws-kms-key-id NAME)")
    sub.add_argument("name", metavar="NAME", help="1 to 64 letters, digits, '.', '_' or '-'")
    command(kms_key_group, "list", cmd_kms_key_list, "the master key's state and every KMS key")
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

    def wait_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--no-wait", action="store_true", help="return once the change is committed")
        sub.add_argument("--interval", type=float, default=0.5, help="seconds between status polls")
        sub.add_argument("--wait-timeout", type=float, default=0.0, help="give up waiting after this many seconds")
        progress = sub.add_mutually_exclusive_group()
        progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                              help="always show the progress bar")
        progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show it")
        sub.add_argument("--accept-lower-tolerance", action="store_true",
                         help="go on when the change lowers the node failures the cluster tolerates (refused "
                              "without it)")

    cluster_group = commands.add_parser("cluster", help="nodes and the migration between generations").add_subparsers(
        dest="cluster_command", metavar="ACTION", required=True)
    sub = command(cluster_group, "add-node", cmd_cluster_add_node,
                  "place a node started with --join, then follow the migration to it")
    sub.add_argument("node", metavar="URL", help="the node and its disks, e.g. http://127.0.0.5:9000/data{1...4}")
    wait_flags(sub)
    sub = command(cluster_group, "remove-node", cmd_cluster_remove_node,
                  "drain a node (its data moves away first), then it leaves")
    sub.add_argument("node", metavar="URL", help="the node, e.g. http://127.0.0.5:9000")
    sub.add_argument("--force", action="store_true",
                     help="the node is dead: remove it at once; its shards are rebuilt from parity")
    wait_flags(sub)
    sub = command(cluster_group, "add-disk", cmd_cluster_add_disk,
                  "add one disk to a node (it formats and serves it), then follow the migration onto it")
    sub.add_argument("disk", metavar="URL", help="the node and the disk's path, e.g. http://127.0.0.2:9000/srv/d5")
    wait_flags(sub)
    sub = command(cluster_group, "remove-disk", cmd_cluster_remove_disk,
                  "drain one disk of a node (its shards move away first), then it leaves the cluster")
    sub.add_argument("disk", metavar="URL", help="the node and the disk's path, e.g. http://127.0.0.2:9000/srv/d3")
    wait_flags(sub)
    command(cluster_group, "list-nodes", cmd_cluster_list_nodes, "every node: state, online, role, disks")
    sub = command(cluster_group, "node-info", cmd_cluster_node_info, "one node and its disks")
    sub.add_argument("node", metavar="NODE", help="the node's URL or HOST:PORT")
    command(cluster_group, "migration-status", cmd_migration_status,
            "progress of the migration: objects and bytes moved, rate, ETA, errors")
    for action in ("pause", "resume"):
        sub = command(cluster_group, f"migration-{action}", cmd_migration_change, f"{action} the migration")
        sub.set_defaults(action=action)
    sub = command(cluster_group, "migration-throttle", cmd_migration_change,
                  "limit the migration's bandwidth and concurrency (takes effect within a second)")
    sub.add_argument("--bytes-per-s", type=int, default=None, metavar="N", help="bytes per second; 0: unlimited")
    sub.add_argument("--objects", type=int, default=None, metavar="N", help="objects moved at a time")
    sub.set_defaults(action="throttle")

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
