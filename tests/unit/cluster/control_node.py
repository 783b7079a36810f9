"""One control-plane node in its own process, driven by tests over stdin/stdout.

``python control_node.py '<json ControlConfig fields>'`` starts a real ``ControlPlane``
(real pysyncobj, real sockets, journal in the given directory), prints a ``ready`` frame
once its port is bound, then answers msgpack requests ``{"id", "call", ...}`` read from
stdin with ``{"id", "ok": value}`` or ``{"id", "error": code, "type", "status",
"message"}`` frames on stdout. Requests run concurrently. EOF on stdin closes the node
cleanly; tests also kill it with SIGKILL. The log goes to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import msgpack

from buckets.cluster.control import ControlConfig, ControlPlane, ControlPlaneError
from buckets.cluster.control_records import Layout
from buckets.errors import BucketsError


class NodeProcess:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.out = sys.stdout.buffer

    def send(self, frame: dict) -> None:
        self.out.write(msgpack.packb(frame, use_bin_type=True))
        self.out.flush()

    async def handle(self, request: dict) -> None:
        started = time.monotonic()
        frame: dict[str, Any] = {"id": request.get("id")}
        try:
            frame["ok"] = await self.dispatch(request)
        except BucketsError as exc:
            frame.update(error=exc.code, type=type(exc).__name__, status=exc.status, message=exc.message)
        frame["elapsed"] = time.monotonic() - started
        self.send(frame)

    async def dispatch(self, request: dict) -> Any:
        plane, call, timeout = self.plane, request["call"], request.get("timeout")
        if call == "apply":
            return await plane.apply(request["op"], timeout=timeout, **request.get("args", {}))
        if call == "read":
            snapshot = await plane.read(linearizable=request.get("linearizable", False), timeout=timeout)
            return snapshot.to_wire()
        if call == "status":
            return plane.status().as_dict()
        if call == "wait_leader":
            return await plane.wait_leader(timeout)
        if call == "bootstrap":
            return await plane.bootstrap(request["deployment_id"], Layout.from_wire(request["layout"]),
                                         request["nodes"], timeout=timeout)
        if call == "propose_generation":
            return await plane.propose_generation(request["nodes"], timeout=timeout)
        if call == "add_member":
            return await plane.add_member(request["address"], timeout=timeout)
        if call == "remove_member":
            return await plane.remove_member(request["address"], timeout=timeout)
        if call == "stand_aside":
            plane.stand_aside(bool(request["aside"]))
            return True
        if call == "isolate":
            return isolate(plane, set(request["peers"]))
        raise ValueError(f"unknown call {call!r}")


def isolate(plane: ControlPlane, peers: set[str]) -> list[str]:
    """Drop every Raft message to and from ``peers`` (an empty set heals), leaving the TCP
    connections up: a partition whose packets vanish, as a firewall rule or a dead switch port
    makes it, which a node cannot tell from slow peers. The test calls it on both sides."""
    transport = plane._raft._SyncObj__transport
    if not hasattr(transport, "cut_peers"):
        send, receive = transport.send, transport._onMessageReceivedCallback

        def filtered_send(node, message):
            return False if node.id in transport.cut_peers else send(node, message)

        def filtered_receive(node, message):
            if node.id not in transport.cut_peers:
                receive(node, message)

        transport.send, transport._onMessageReceivedCallback = filtered_send, filtered_receive
    transport.cut_peers = frozenset(peers)
    return sorted(peers)


async def main(config: dict) -> int:
    config["members"] = tuple(config["members"])
    if "election_timeout" in config:
        config["election_timeout"] = tuple(config["election_timeout"])
    plane = ControlPlane(ControlConfig(**config))
    try:
        await plane.start()
    except ControlPlaneError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    node = NodeProcess(plane)
    node.send({"event": "ready"})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)  # tests send bad input on purpose
    tasks: set[asyncio.Task] = set()
    while data := await reader.read(65536):
        unpacker.feed(data)
        for request in unpacker:
            task = asyncio.create_task(node.handle(request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    for task in tasks:
        task.cancel()
    await plane.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))
