"""Serve the S3 app over TLS for tests: `python tls_runner.py PORT CERT KEY DISK...`.

`buckets server` has no TLS option, but boto3 sends aws-chunked bodies with trailing
checksums (STREAMING-UNSIGNED-PAYLOAD-TRAILER) only over https, which is how real
deployments behind TLS see them. This runner wraps the same `create_app` the server
uses, so those tests exercise the production request path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from dataclasses import dataclass, field

import uvloop
from aiohttp import web

from buckets.engine.store import Store
from buckets.s3.app import create_app


@dataclass
class TestConfig:
    # TEST_REGION / TEST_REGION_STRICT=1 stand in for the operator's region settings.
    region: str = os.environ.get("TEST_REGION", "us-east-1")
    region_strict: bool = os.environ.get("TEST_REGION_STRICT") == "1"
    domains: list[str] = field(default_factory=list)
    root_user: str = os.environ["BUCKETS_ROOT_USER"]
    root_password: str = os.environ["BUCKETS_ROOT_PASSWORD"]


async def main(port: int, cert: str, key: str, disks: list[str]) -> None:
    store = await Store.open(disks, sync=False)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(create_app(store, TestConfig()), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"serving https on {port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await store.close()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]))
