"""``buckets server``: the entry point that turns a command line into a running node.

Owns the ``buckets`` console script: the argparse parser (generated from the settings
table in ``buckets.cli.config`` so ``--help`` documents every option and its environment
variable), the startup banner, logging setup, the assembly of the app (the S3 API plus
``/metrics``, health, the admin API and the access logger from ``buckets.obs`` and
``buckets.admin``, behind the connection limits and timeouts of ``buckets.s3.connections``,
fitted to the open-file limit), and the process lifecycle: open the store, serve on uvloop, and on
SIGTERM/SIGINT stop accepting, let in-flight requests finish, then close the app and the
store so the registry is closed cleanly.

Exit codes: 0 after a clean shutdown, 1 when the node cannot start (store refused to open,
address in use), 2 for a bad command line or configuration. Errors are one line on
stderr, never a traceback, because they are the operator's to fix, not a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import faulthandler
import logging
import os
import signal
import socket
import sys
from typing import Any, NoReturn, TextIO

from buckets import runtime
from buckets.runtime import cancel_and_wait, freeze_startup_objects, tune_process
from buckets.storage import local as local_storage
from buckets.erasure import isal as erasure_isal
from buckets import __version__
from buckets.cli.config import (
    CONFIG_ENV,
    DEFAULT_ROOT_PASSWORD,
    DEFAULT_ROOT_USER,
    SETTINGS,
    Config,
    ConfigError,
    build_config,
    default_of,
)
from buckets.errors import BucketsError, FormatError, define_error

PROG = "buckets"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# ``serve`` asks ``run_server`` to start the process again in place (same pid, same command
# line, the listening sockets inherited): a single node that became a cluster of one, or whose
# registry failed (``_registry_failure_hook``).
EXIT_RESTART = -1
LISTEN_FDS_ENV = "BUCKETS_LISTEN_FDS"  # set only across that re-exec: the inherited sockets
CONVERSION_ERROR_ENV = "BUCKETS_CONVERSION_ERROR"  # ... and why the conversion failed, if it did
# ... and the disks whose registry failed in the processes before (``_registry_failure_hook``)
REGISTRY_FAILED_ENV = "BUCKETS_REGISTRY_FAILED"

log = logging.getLogger("buckets.server")


# --- command line --------------------------------------------------------------------------


def _default_text(name: str) -> str:
    value = default_of(name)
    if value is None:
        return "auto" if name == "parity" else "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return "none"
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Buckets: an S3-compatible, erasure-coded object store.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    env_only = [setting for setting in SETTINGS if setting.flag is None and setting.name != "paths"]
    epilog_lines = [
        "settings are read from defaults, then the config file, then the environment, then flags "
        "(later wins).",
        "",
        "environment only (kept off the command line so secrets stay out of `ps`):",
        *[f"  {setting.env:<24} {setting.help} (default: {_default_text(setting.name)})"
          for setting in env_only],
        "",
        "examples:",
        "  buckets server ./data                      one disk, no erasure coding",
        "  buckets server /mnt/disk{1...4}             four disks, 2 data + 2 parity",
        "  buckets server --address 127.0.0.1:9100 --domain s3.example.com /data{01...08}",
    ]
    server = commands.add_parser(
        "server", help="start a node serving the S3 API",
        description="Start a Buckets node: serve the S3 API from the given disks.",
        epilog="\n".join(epilog_lines), formatter_class=argparse.RawDescriptionHelpFormatter)
    paths_setting = next(setting for setting in SETTINGS if setting.name == "paths")
    server.add_argument("paths", nargs="*", metavar="PATH",
                        help=f"{paths_setting.help} [env {paths_setting.env}]")
    server.add_argument("--config", metavar="FILE",
                        help=f"YAML config file, see configs/buckets.example.yaml [env {CONFIG_ENV}]")
    for setting in SETTINGS:
        if setting.flag is None:
            continue
        help_text = f"{setting.help} (default: {_default_text(setting.name)}) [env {setting.env}]"
        # Every value is parsed by the settings table, not argparse, so a bad flag and a
        # bad environment variable get the same message; choices only feed --help.
        action = "append" if setting.name in ("domains", "notify_webhooks") else "store"
        server.add_argument(setting.flag, dest=setting.name, action=action, metavar=setting.metavar
                            or "{" + ",".join(setting.choices or ()) + "}", help=help_text)
    return parser


# --- banner --------------------------------------------------------------------------------


def endpoint_urls(config: Config) -> list[str]:
    """URLs clients can use; for a wildcard bind, loopback and this host's name."""
    scheme_host = ("https" if config.certs_dir else "http") + "://{}:" + str(config.port)
    if config.host in ("", "0.0.0.0", "::"):
        return [scheme_host.format("127.0.0.1"), scheme_host.format(socket.gethostname())]
    host = f"[{config.host}]" if ":" in config.host else config.host
    return [scheme_host.format(host)]


def erasure_text(data: int, parity: int) -> str:
    if parity == 0:
        return f"{data} data + 0 parity (no erasure coding: a lost disk loses data)"
    return (f"{data} data + {parity} parity per object "
            f"(survives {parity} lost disk{'s' if parity != 1 else ''})")


def format_banner(config: Config, layout: tuple[int, int] | None, disk_count: int | None = None) -> str:
    """The startup banner. ``layout`` is the store's (k, m); None before the store is open."""
    disks = config.disk_paths
    count = disk_count if disk_count is not None else len(disks)
    lines = [
        f"Buckets {__version__}",
        f"S3 endpoint: {'  '.join(endpoint_urls(config))}",
        f"Disks ({count}): {' '.join(disks)}",
        f"Erasure:     {erasure_text(*layout) if layout else 'decided when the store opens'}",
        f"Region:      {config.region}",
    ]
    from buckets.console.listener import console_url

    if console_url(config):
        lines.append(f"Console:     {console_url(config)}")
    if config.domains:
        lines.append(f"Domains:     {', '.join(config.domains)} (virtual-host-style buckets)")
    if not config.sync:
        lines.append("Sync:        off (development only: acknowledged writes can be lost on power failure)")
    if config.config_file:
        lines.append(f"Config:      {config.config_file}")
    lines.append(f"RootUser:    {config.root_user}")
    if config.using_default_credentials:
        lines.append(f"RootPass:    {config.root_password}")
    else:
        lines.append("RootPass:    (set from the configuration; not shown)")
    return "\n".join(lines)


def default_credentials_warning(config: Config) -> str:
    return "\n".join([
        f"WARNING: the root credentials are the published defaults "
        f"({DEFAULT_ROOT_USER} / {DEFAULT_ROOT_PASSWORD})."
        if config.root_user == DEFAULT_ROOT_USER else
        f"WARNING: the root password is the published default ({DEFAULT_ROOT_PASSWORD}).",
        "WARNING: anyone who can reach this port can read, overwrite and delete every object.",
        "WARNING: set BUCKETS_ROOT_USER and BUCKETS_ROOT_PASSWORD before exposing this server.",
    ])


def print_banner(config: Config, layout: tuple[int, int] | None, disk_count: int | None,
                 stream: TextIO) -> None:
    print(format_banner(config, layout, disk_count), file=stream)
    if config.using_default_credentials:
        warning = default_credentials_warning(config)
        if stream.isatty():
            warning = f"\x1b[1;31m{warning}\x1b[0m"  # bold red: it must not scroll past unseen
        print(warning, file=stream)
    stream.flush()


# --- logging and the app ------------------------------------------------------------------


def configure_logging(config: Config) -> None:
    from buckets.obs.logs import configure_logging as configure

    configure(config.log_format, config.log_level)


def build_app(store: object, config: Config, peer_rpc: object | None = None):
    """The S3 app plus metrics, health and the admin API, wired to one store.

    Returns ``(app, runner_kwargs)``: the runner must get ``runner_kwargs`` so that the
    access logger (one line and the request metrics per request) sees every response,
    and the connection guard (limits and timeouts for slow clients, whose counts are in
    the metrics) is enforced.
    """
    from buckets.admin import AdminApi, LiveSettings
    from buckets.cluster.rpcserver import build_node_rpc
    from buckets.obs import AccessLogger, OpsEndpoints, ServerMetrics
    from buckets.obs.access import METRICS_KEY, timing_middleware
    from buckets.s3.app import create_app
    from buckets.s3.connections import BEFORE_STOP_KEY, ConnectionCollector

    metrics = ServerMetrics(store)
    endpoints = OpsEndpoints(store, metrics, metrics_auth=config.metrics_auth,
                             metrics_token=config.metrics_token)
    settings = LiveSettings(store, endpoints, scanner_rate=config.scanner_rate)
    admin = AdminApi(store, config, settings)
    if peer_rpc is None:  # one node: /_buckets/peer/v1/... answers ping and info (a cluster node brings its own)
        peer_rpc = build_node_rpc(store, config)
    middlewares = [timing_middleware, endpoints.middleware]
    # (a removed node, or one behind the control plane, refuses S3: obs.endpoints.serving_refusal)
    peer_rpc.domains = list(config.domains or [])  # a virtual-host request's /_buckets/peer/... is S3's
    notifier = None
    if config.notify_webhooks:
        from buckets.notify import Notifier, parse_targets
        from buckets.notify.service import NotifyCollector

        notifier = Notifier(store, parse_targets(config.notify_webhooks), region=config.region)
        metrics.registry.register(NotifyCollector(notifier))
    console = None
    if getattr(config, "console", True):  # the web console: at /console/ here, or on its own port
        from buckets.console import Console

        console = Console(store, config, admin=admin, metrics=metrics, notifier=notifier)
    console_routes = console.routes() if console is not None and not config.console_address else []
    app = create_app(store, config, extra_routes=[*admin.routes(), *peer_rpc.routes(), *console_routes],
                     extra_middlewares=middlewares, notifier=notifier)
    app[METRICS_KEY] = metrics

    async def channels_drain(app) -> None:  # the peers' channels: new calls go elsewhere, no call is cut
        await peer_rpc.drain(app)

    async def channels_go_away(app) -> None:
        await peer_rpc.go_away(app)

    app[BEFORE_STOP_KEY] = [channels_drain]  # (GuardedAppRunner runs it while the server still reads)
    # A channel a peer opened after the drain, before the port closed, is sent away too: else
    # its caller keeps it open and the stop waits for the shutdown timeout.
    app.on_shutdown.append(channels_go_away)
    from buckets.lifecycle.worker import attach_worker

    attach_worker(app, store, config, notifier)  # applies the buckets' lifecycle rules while the app runs
    if console is not None:
        from buckets.console.listener import CONSOLE_KEY

        console.attach(app)
        app[CONSOLE_KEY] = console  # serve() starts its own port, if it has one
    guard = connection_guard(config)
    metrics.registry.register(ConnectionCollector(guard))
    runner_kwargs = {"access_log_class": AccessLogger, "access_log": logging.getLogger("buckets.access"),
                     "guard": guard}
    return app, runner_kwargs


def connection_guard(config: Config):
    """The limits and timeouts for client connections, the connection limit fitted to the
    open-file limit (raised toward its hard limit first when that is needed)."""
    from dataclasses import replace

    from buckets.s3.connections import ConnectionGuard, ConnectionLimits, fit_to_fd_limit

    limits = ConnectionLimits.from_config(config)
    allowed, fd_limit = fit_to_fd_limit(limits.max_connections)
    if allowed < limits.max_connections:
        log.warning("max_connections lowered from %d to %d to fit the open-file limit of %s "
                    "(raise it with `ulimit -n` or LimitNOFILE= to allow more)",
                    limits.max_connections, allowed, fd_limit)
        limits = replace(limits, max_connections=allowed)
    return ConnectionGuard(limits)


# --- lifecycle -----------------------------------------------------------------------------


class StartupError(Exception):
    """The node cannot start for a reason the operator must fix; the message is one line."""


def _listen_error(config: Config, error: OSError) -> StartupError:
    where = config.address if config.host else f"port {config.port}"
    if error.errno == errno.EADDRINUSE:
        return StartupError(f"cannot listen on {where}: address already in use "
                            "(another server is running there; pick one with --address)")
    if error.errno == errno.EACCES:
        return StartupError(f"cannot listen on {where}: permission denied (ports below 1024 need privileges)")
    if error.errno == errno.EADDRNOTAVAIL:
        return StartupError(f"cannot listen on {where}: {config.host} is not an address of this machine")
    return StartupError(f"cannot listen on {where}: {error.strerror or error}")


def check_address_free(config: Config) -> None:
    """Fail before opening the store (which may rebuild a registry) if we cannot listen.

    Binds and releases the same addresses the server will listen on, with the same
    SO_REUSEADDR, so a lingering TIME_WAIT is not mistaken for a running server. The real
    bind later still reports its own error if another process wins the race.
    """
    for sock in bind_sockets(config, listen=False):
        sock.close()


async def serve(config: Config, stream: TextIO = sys.stderr) -> int:
    """Open the store, serve until SIGTERM/SIGINT, shut down cleanly. Returns the exit code."""
    from aiohttp import web

    from buckets.runtime import quiet_body_writer_errors

    quiet_body_writer_errors(asyncio.get_running_loop())

    from buckets.s3.connections import GuardedAppRunner

    from buckets.cluster.convert import check_not_member, membership_config

    try:
        # A single node converted into a cluster of one starts as a cluster node from
        # then on, with the same plain paths on its command line.
        config = membership_config(config)
    except FormatError as error:
        raise StartupError(str(error)) from None
    inherited = inherited_sockets()
    if not inherited:
        check_address_free(config)  # blocking, but nothing else runs yet
    try:
        from buckets.admin.settings import make_scanner_config
        from buckets.engine.store import Store
        from buckets.engine.users import derive_kek
    except ModuleNotFoundError as error:
        if error.name not in ("buckets.engine.store", "buckets.s3.app", "buckets.engine", "buckets.s3"):
            raise
        raise StartupError(f"this build cannot serve yet: module {error.name} is missing") from None

    # Signals are handled from here on, so a Ctrl-C while the store opens (which may take
    # a while: registry rebuild) still closes it cleanly instead of a KeyboardInterrupt.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    signalled: list[int] = []  # a stop asked for by a signal (a conversion then does not restart)

    def on_signal(signum: int) -> None:
        signalled.append(signum)
        name = signal.Signals(signum).name
        if stopping.is_set():
            log.warning("%s again: still waiting up to %gs for in-flight requests",
                        name, config.shutdown_timeout)
            return
        log.info("%s received: stopping (in-flight requests get %gs to finish)",
                 name, config.shutdown_timeout)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    tls = setup_tls(config)
    loop.add_signal_handler(signal.SIGHUP, lambda: tls.reload() if tls is not None else
                            log.info("SIGHUP: no --certs-dir, nothing to reload"))
    from buckets.obs.taskdump import install as install_task_dump

    install_task_dump(loop, signal.SIGUSR1)  # what the node waits on (docs/operations.md)

    store_kwargs = dict(parity=config.parity, sync=config.sync, cache_size=config.cache_size,
                        inline_threshold=config.inline_threshold, small_log=config.small_log,
                        small_copy_limit=config.small_copy_limit, small_set_limit=config.small_set_limit,
                        scanner_config=make_scanner_config(config.scanner_rate, config.scanner_mb_rate))
    node = None
    forming: FormingListener | None = None
    sockets: list[socket.socket] = []  # a single node's listening sockets (kept across a re-exec)
    convert_to: list[str] = []  # the URL this single node becomes a cluster of one at, once asked
    registry_failed: list[str] = []  # why this single node's registry failed (it restarts to move it)
    avoid = frozenset(filter(None, os.environ.pop(REGISTRY_FAILED_ENV, "").split(",")))
    try:
        if config.is_cluster:
            # Forming a cluster waits for peers: a signal meanwhile stops the wait.
            opening = asyncio.ensure_future(open_cluster_store(config, store_kwargs, inherited))
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({opening, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not opening.done():
                await cancel_and_wait(opening)
                if opening.cancelled() or opening.exception() is not None:
                    log.info("stopped before the cluster formed")
                    return EXIT_OK
                # (a cancel swallowed as the opening finished: it opened, and is closed below
                # without serving, since the stop was asked for)
            node, store, forming = opening.result()
        else:
            sockets = inherited  # bound once the store is open, unless a re-exec passed them on
            store = await Store.open(config.disk_paths, registry_avoid=avoid, **store_kwargs)
            try:
                check_not_member(store)
            except FormatError:
                await store.close()
                raise
            store.become_cluster = _conversion_hook(config, convert_to, stopping,
                                                    os.environ.pop(CONVERSION_ERROR_ENV, None))
            store.registry.on_failure = _registry_failure_hook(store, avoid, registry_failed, stopping)
    except (FormatError, BucketsError, ValueError) as error:
        # The engine's refusals (foreign or mismatched disks, bad parity for the disk
        # count) are the operator's to fix: one line; the traceback only at debug level.
        log.debug("store open failed", exc_info=True)
        raise StartupError(str(error)) from None
    except OSError as error:
        target = f" {error.filename}" if error.filename else ""
        raise StartupError(f"cannot open disk{target}: {error.strerror or error}") from None

    runner: web.AppRunner | None = None
    console_runner: web.AppRunner | None = None  # --console-address: the console's own port
    try:
        if stopping.is_set():  # signalled while the store was opening: never start serving
            log.info("stopped before serving")
            return EXIT_OK
        # User secrets are sealed under a key derived from the root credentials: without
        # it no user added with buckets-admin could sign a request.
        store.users.set_kek(derive_kek(config.root_user, config.root_password, store.deployment_id))
        # Encryption at rest: the master key, checked against the one the deployment recorded
        # (a missing or different key is logged as an error; the node serves what it can).
        from buckets.kms import open_key_manager

        store.kms = await open_key_manager(store, config)
        app, runner_kwargs = build_app(store, config, node.rpc if node is not None else None)
        # handle_signals=False: the signals are ours, so the order below (drain requests,
        # close the app, then close the store) is not left to aiohttp's own handler.
        runner = GuardedAppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout,
                                  **runner_kwargs)
        await runner.setup()
        from buckets.console.listener import start_console_listener

        try:  # --console-address: listening before the S3 port takes requests
            console_runner = await start_console_listener(app, config, runner_kwargs, server_ssl())
        except OSError as error:
            from dataclasses import replace

            why = str(_listen_error(replace(config, address=config.console_address), error))
            raise StartupError("--console-address: " + why.replace("--address", "--console-address")) from None
        if forming is not None:
            # The cluster node's port is handed over without closing it: peers never see it down.
            await forming.hand_over(runner)
        else:
            if not sockets:
                sockets = bind_sockets(config)
            try:
                for sock in sockets:  # the site owns a duplicate: the socket itself outlives it
                    await web.SockSite(runner, sock.dup(), ssl_context=server_ssl()).start()
            except OSError as error:
                raise _listen_error(config, error) from None

        freeze_startup_objects()
        print_banner(config, tuple(store.layout), store.disk_count, stream)
        if node is not None:
            print(node.banner(), file=stream, flush=True)
        log.info("serving on %s", " ".join(endpoint_urls(config)))
        log.info("erasure coding: %s", "ISA-L (SIMD, zfec's pieces)" if erasure_isal.available()
                 else "zfec" + ("" if not config.erasure_simd else " (libisal.so.2 not found)"))
        await stopping.wait()
    finally:
        try:
            if console_runner is not None:
                await console_runner.cleanup()
            if runner is not None:
                await runner.cleanup()  # stops listening, drains in-flight requests, app cleanup
            if forming is not None:
                await forming.close()  # the peer connections accepted while the cluster formed
        finally:
            try:
                if node is not None:
                    await node.stop()  # anti-entropy and read repairs end before the registry closes
            finally:
                try:
                    if convert_to and not registry_failed:
                        await _convert(store, config, convert_to[0])
                finally:
                    await store.close()
                    if node is not None:
                        await node.close()
    if (convert_to or registry_failed) and not signalled:
        for sock in sockets:
            os.set_inheritable(sock.fileno(), True)
        _RESTART_SOCKETS[:] = sockets
        return EXIT_RESTART
    for sock in sockets:
        sock.close()
    log.info("stopped cleanly")
    return EXIT_OK


_RESTART_SOCKETS: list[socket.socket] = []
_SERVER_TLS: list = []  # the ServerTLS of --certs-dir, once set up (one per process)


def setup_tls(config: Config):
    """``--certs-dir``: the port's certificate and the authorities peer calls trust (a
    problem with the files is a StartupError saying which)."""
    _SERVER_TLS.clear()
    if not config.certs_dir:
        return None
    from buckets.cluster import rpcclient
    from buckets.tls import ServerTLS, TLSConfigError

    try:
        tls = ServerTLS(config.certs_dir)
        rpcclient.set_client_tls(tls.client_context())
    except TLSConfigError as error:
        raise StartupError(str(error)) from None
    _SERVER_TLS.append(tls)
    return tls


def server_ssl():
    """The SSL context every listening site serves with (None: plain HTTP)."""
    return _SERVER_TLS[0].context if _SERVER_TLS else None


async def _convert(store, config: Config, url: str) -> None:
    """Make the (no longer serving) single-node store a cluster of one; on failure the node
    restarts as the single node it was, says why in its log, and answers the next add-node
    with it (``CONVERSION_ERROR_ENV`` across the re-exec) instead of trying again."""
    from buckets.cluster.convert import become_cluster_of_one
    from buckets.cluster.rpcauth import cluster_secret

    try:
        await become_cluster_of_one(store, url, cluster_secret(config.cluster_secret, config.root_user,
                                                               config.root_password))
    except BucketsError as error:
        log.error("this node could not become a cluster (it restarts as a single node): %s", error)
        os.environ[CONVERSION_ERROR_ENV] = str(error)
    except Exception as error:  # noqa: BLE001 - the node restarts either way; the log has the traceback
        log.exception("this node could not become a cluster (it restarts as a single node)")
        os.environ[CONVERSION_ERROR_ENV] = f"{type(error).__name__}: {error}"


def _registry_failure_hook(store: Any, avoid: frozenset[str], failed: list[str], stopping: asyncio.Event):
    """``store.registry.on_failure(reason)`` on a single node: its registry's disk (or the LMDB
    environment there) failed, and no write can be committed any more. The node stops serving
    (the requests in flight finish, answering 503), closes the store and starts again in place
    with its port kept open (``restart_in_place``), naming that disk in ``REGISTRY_FAILED_ENV``:
    the new process rebuilds the registry on another disk from the disks' metadata
    (``choose_registry``) and serves again, the disk counted offline if it no longer answers.
    A registry is an index of what the disks hold: every acknowledged write is on them."""
    def on_failure(reason: str) -> None:
        if failed:
            return
        failed.append(reason)
        if store.registry_disk_id is not None:
            os.environ[REGISTRY_FAILED_ENV] = ",".join(sorted(avoid | {store.registry_disk_id}))
        log.error("this node's registry failed (%s): the node stops serving for a moment and starts again, "
                  "rebuilding its registry on another disk from the disks' metadata", reason)
        stopping.set()

    return on_failure


def _conversion_hook(config: Config, convert_to: list[str], stopping: asyncio.Event, failed: str | None):
    """``store.become_cluster(request_host)``, called by ``cluster add-node`` on a single node:
    checks what it can at once, then stops serving; ``serve`` converts the store once every
    request in flight has finished (nothing changes buckets, users or uploads meanwhile) and
    starts the process again as a cluster node. The port stays open throughout: connections
    wait in its queue and are answered by the new process."""
    from buckets.cluster.control import control_address
    from buckets.cluster.convert import node_url

    last_failure = [failed]  # the conversion that restarted this process failed: say so, once

    async def become_cluster(request_host: str | None, joining: str) -> dict:
        if last_failure[0]:
            why, last_failure[0] = last_failure[0], None
            raise ConversionFailed(f"this node could not become a cluster of one and restarted as a single node: "
                                   f"{why}; fix that, then run add-node again")
        url = node_url(config, request_host)
        if joining.rstrip("/") == url:
            raise _invalid(f"{joining} is this node itself: name the node to add")
        try:
            control = control_address(url)
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        if not convert_to:
            convert_to.append(url)
            log.info("cluster add-node %s: this single node becomes a cluster of one at %s (control plane %s); "
                     "it stops serving for a moment and starts again as a cluster node", joining, url, control)
            stopping.set()
        return {"node": joining, "added": False, "converting": True, "url": convert_to[0],
                "message": f"this single node becomes a cluster of one at {convert_to[0]} and restarts as a "
                           f"cluster node; add {joining} once it answers again"}

    return become_cluster


ConversionFailed = define_error("ConversionFailed", "ConversionFailed", 409,
                                "This node could not become a cluster of one: see its log.")


def _invalid(message: str) -> BucketsError:
    from buckets.errors import InvalidArgument

    return InvalidArgument(message)


def inherited_sockets() -> list[socket.socket]:
    """The listening sockets a re-exec of this process passed on (``LISTEN_FDS_ENV``)."""
    value = os.environ.pop(LISTEN_FDS_ENV, "")
    out = []
    for text in filter(None, value.split(",")):
        sock = socket.socket(fileno=int(text))
        sock.set_inheritable(False)
        sock.setblocking(False)
        out.append(sock)
    return out


def restart_in_place(sockets: list[socket.socket]) -> NoReturn:
    """Exec this program again with the same command line and environment, handing it the
    listening sockets, so the port never closes (connections wait in its accept queue)."""
    env = dict(os.environ)
    env[LISTEN_FDS_ENV] = ",".join(str(sock.fileno()) for sock in sockets)
    argv = [sys.executable, *sys.orig_argv[1:]]
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def bind_sockets(config: Config, *, listen: bool = True) -> list[socket.socket]:
    """The node's listening sockets, bound once (as asyncio's create_server would: every
    address the host resolves to, SO_REUSEADDR, IPv6 only on IPv6 sockets). Sites serve
    duplicates of them, so a listener can hand the port to another without closing it.
    ``listen=False``: bound only (``check_address_free`` closes them at once)."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(config.host or None, config.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StartupError(f"cannot listen on {config.address}: cannot resolve {config.host!r} "
                           f"({error.strerror})") from None
    seen = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            if (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # e.g. IPv6 disabled, as asyncio's create_server skips it
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
                if listen:
                    sock.listen(1024)
            except OSError as error:
                raise _listen_error(config, error) from None
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise StartupError(f"cannot listen on {config.address}: no usable address")
    return sockets


class FormingListener:
    """The cluster node's port while the cluster forms: the peer routes (this node's disks,
    its hello, its index answering "not ready") and a retryable 503 to S3 clients.

    The listening sockets are this node's own, bound once: this listener serves a duplicate
    of each, and :meth:`hand_over` starts the full app on another duplicate before it stops
    accepting here (one listening socket, one accept queue, never closed in between), so the port never closes and a peer never sees this node down
    (which would mark its disks offline just as the first writes arrive). Connections
    accepted before (peers' pooled keep-alive connections) stay with this listener's app,
    which serves the same peer services, and each is closed after its next answer, so the
    peer's following call reaches the full app (access log, metrics, connection limits); an
    S3 client's connection is closed after its 503 at any time. Idle ones are closed by the
    peers' pools, or when the node stops.
    """

    def __init__(self, config: Config, peer_routes: list, sockets: list[socket.socket] | None = None,
                 peer_rpc: object | None = None) -> None:
        from aiohttp import web

        self.config = config
        self.peer_rpc = peer_rpc  # its channels opened here are sent away at the hand-over
        self.sockets: list[socket.socket] = list(sockets or [])  # inherited across a re-exec, or bound at start
        self.app = web.Application()
        self.app.router.add_routes(peer_routes)
        self.app.router.add_route("*", "/{tail:.*}", self._forming)
        self.app.on_response_prepare.append(self._after_hand_over)
        self.handed_over = False
        self.runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=config.shutdown_timeout)
        self._sites: list = []

    @staticmethod
    async def _forming(request):
        from buckets.errors import ServiceUnavailable
        from buckets.s3.errors import error_response

        error = ServiceUnavailable("This node is joining its cluster; retry shortly.")
        response = error_response(error, request_id="0", host_id="", resource=request.path,
                                  head=request.method == "HEAD")
        response.force_close()  # the retry comes on a new connection: to the full app once it serves
        return response

    async def _after_hand_over(self, request, response) -> None:
        if self.handed_over:
            # Each connection still here closes after its answer: the peer's next call opens
            # a new one, to the full app (access log, metrics, connection limits). aiohttp has
            # computed the headers before this hook runs, so force_close alone would close the
            # connection without telling the peer, whose pool would then pick a closing
            # connection for its next call: say it in the header too.
            response.headers["Connection"] = "close"
            response.force_close()

    async def start(self) -> None:
        from aiohttp import web

        try:
            if not self.sockets:
                self.sockets = bind_sockets(self.config)
            await self.runner.setup()
            for sock in self.sockets:
                site = web.SockSite(self.runner, sock.dup(), ssl_context=server_ssl())
                await site.start()
                self._sites.append(site)
        except BaseException:
            await self.close()
            raise

    async def hand_over(self, runner) -> None:
        """Serve ``runner``'s app on the same sockets, then stop accepting here."""
        from aiohttp import web

        sockets, self.sockets = self.sockets, []
        try:
            for sock in sockets:
                await web.SockSite(runner, sock.dup(), ssl_context=server_ssl()).start()
        except OSError as error:
            raise _listen_error(self.config, error) from None
        finally:
            for sock in sockets:
                sock.close()  # each site holds its own descriptor of the same listening socket
        self.handed_over = True
        for site in self._sites:
            await site.stop()
        self._sites = []
        if self.peer_rpc is not None:  # peers' channels opened here: their next calls reach the full app
            await self.peer_rpc.go_away(self.app)

    async def close(self) -> None:
        try:
            await self.runner.cleanup()
        finally:
            for sock in self.sockets:
                sock.close()
            self.sockets = []


async def open_cluster_store(config: Config, store_kwargs: dict, sockets: list[socket.socket] | None = None):
    """A cluster node: serve the peer routes (this node's disks, its hello) on the node's own
    port while the cluster forms and the store opens. Returns the node, the store and the
    listener, whose port ``serve`` hands to the full app (:class:`FormingListener`)."""
    from buckets.cluster.control import ControlPlaneError
    from buckets.cluster.node import ClusterNode, ClusterStartError

    try:
        node = ClusterNode.create(config)
    except ClusterStartError as error:
        raise StartupError(str(error)) from None
    forming = FormingListener(config, node.rpc.routes(), sockets, peer_rpc=node.rpc)
    try:
        await forming.start()
    except BaseException:
        await node.close()
        raise
    if node.join is not None:
        log.info("cluster node %s: joining the cluster of %s", node.spec.me.url, node.join)
    else:
        log.info("cluster node %s: waiting for its peers (%d)", node.spec.me.url, len(node.clients))
    try:
        store = await node.open_store(**store_kwargs)
    except BaseException as error:
        try:
            await forming.close()
        finally:
            await node.close()
        if isinstance(error, (ClusterStartError, ControlPlaneError)):  # (the operator's to fix: one line)
            raise StartupError(str(error)) from None
        raise
    return node, store, forming


def run_server(config: Config) -> int:
    import uvloop

    runtime.batch_threads = config.batch_threads  # before the first helper thread (the log writer's)
    configure_logging(config)
    # A fatal signal (SIGBUS: a registry page its disk cannot read, met through LMDB's map) ends
    # the process with the Python stack of every thread on stderr, not without a line.
    faulthandler.enable(file=sys.stderr, all_threads=True)
    tune_process()
    local_storage.direct_writes = config.direct_io
    local_storage.disk_reserve = config.disk_reserve
    local_storage.disk_timeout = config.disk_timeout
    erasure_isal.enabled = config.erasure_simd
    local_storage.aio_fsync = config.aio_fsync
    try:
        code = uvloop.run(serve(config))
    except StartupError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if code == EXIT_RESTART:
        restart_in_place(_RESTART_SOCKETS)
    return code


def main(argv: list[str] | None = None) -> NoReturn:
    """Console script ``buckets``. Always exits (SystemExit) with the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        sys.exit(EXIT_USAGE)
    flags = {name: value for name, value in vars(args).items() if name != "command"}
    if not flags.get("paths"):
        flags.pop("paths", None)  # no positional PATH: let BUCKETS_VOLUMES or the file decide
    try:
        config = build_config(flags, os.environ)
    except ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(run_server(config))
