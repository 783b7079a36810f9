"""``--console-address``: the console on a port of its own, as MinIO's console has.

The same :class:`~buckets.console.Console` (so the same sessions) serves an app of its own
on that address, with the S3 port's TLS context and connection guard and the same access
log and request metrics; ``/`` leads to ``/console/``. The S3 port then leaves ``/console``
to the S3 API.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

log = logging.getLogger("buckets.console")

CONSOLE_KEY: web.AppKey[Any] = web.AppKey("buckets_console", object)


async def start_console_listener(app: web.Application, config: Any, runner_kwargs: dict,
                                 ssl_context: Any = None) -> web.AppRunner | None:
    """Serve the console of ``app`` (``build_app`` put it under ``CONSOLE_KEY``) on
    ``config.console_address``; None when the console is on the S3 port or off. An address
    that cannot be bound raises ``OSError`` (the caller says which address)."""
    from buckets.cli.config import split_address
    from buckets.s3.connections import GuardedAppRunner

    console = app.get(CONSOLE_KEY)
    address = getattr(config, "console_address", None)
    if console is None or not address:
        return None
    host, port = split_address(address)
    runner = GuardedAppRunner(console.own_app(), handle_signals=False,
                              shutdown_timeout=getattr(config, "shutdown_timeout", 30.0), **runner_kwargs)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or None, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("console serving on %s", console_url(config))
    return runner


def console_url(config: Any) -> str | None:
    """Where the console is, for the banner (None: off)."""
    if not getattr(config, "console", True):
        return None
    scheme = "https" if getattr(config, "certs_dir", None) else "http"
    address = getattr(config, "console_address", None)
    if address:
        from buckets.cli.config import split_address

        host, port = split_address(address)
    else:
        host, port = config.host, config.port
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/console/"
