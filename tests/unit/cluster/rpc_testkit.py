"""A real peer RPC server for the unit tests: an aiohttp app with a ``PeerRpcServer`` on a
free port of 127.0.0.1, in the test's own event loop, that can be stopped and started
again on the same port (a peer going down and coming back).

Imported by name (``from rpc_testkit import ...``), like the other test kits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from buckets.cluster.rpcauth import PeerVerifier, ReplayCache
from buckets.cluster.rpcclient import HealthPolicy, PeerClient, PeerTimeouts, close_shared_session
from buckets.cluster.rpcserver import PeerRpcServer
from serverproc import free_port  # one port per call, never the same twice in a test run

SECRET = b"unit-test-cluster-secret-0123456789"




@dataclass
class RpcNode:
    """One peer: its RPC server (register handlers on ``rpc``) and its listening state."""

    rpc: PeerRpcServer
    port: int = field(default_factory=free_port)
    runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_routes(self.rpc.routes())

        async def go_away(app: web.Application) -> None:  # as buckets server does: channels close at once
            await self.rpc.go_away(app)

        app.on_shutdown.append(go_away)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()

    def client(self, secret: bytes = SECRET, **options: object) -> PeerClient:
        # Generous defaults: a loaded 2-core machine must not turn a test into a timeout.
        timeouts = options.pop("timeouts", None) or PeerTimeouts(connect=10.0, call=30.0, idle=30.0, probe=5.0)
        policy = options.pop("policy", None) or HealthPolicy(failures_to_offline=3, probe_interval=0.05)
        assert not options, options
        return PeerClient(self.endpoint, secret, timeouts=timeouts, policy=policy)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
async def closed_peer_session() -> AsyncIterator[None]:
    """Close the process's shared peer session after each test (each test has its own loop).
    Autouse in every module that imports it."""
    yield
    await close_shared_session()


def make_rpc(secret: bytes = SECRET, window: float = 60.0, replay: bool = True) -> PeerRpcServer:
    return PeerRpcServer(PeerVerifier(secret, window=window, replay=ReplayCache() if replay else None))
