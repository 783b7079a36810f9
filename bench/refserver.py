"""The reference of issue 15: a bare aiohttp server that writes and fsyncs one file per PUT.

    python -m bench.refserver --port PORT --dir DIR

``PUT /<bucket>/<key>``: the body (read whole: the reference sizes are small) is written to a
file named by the key's hash, fsynced and closed, then 200: exactly "writes and fsyncs one
file per request", nothing more (not even the directory's fsync, which a store needs for the
new name to survive a power cut: the reference is the floor, not a store). ``GET /<bucket>/<key>``: the file, or 404. Anything else (``GET /``, the bucket's
creation) answers 200 with an empty body, so the S3 client of ``bench`` can drive it as it
drives Buckets (its signatures are ignored). The file work runs in the default thread pool,
as any aiohttp server doing blocking I/O must; uvloop like the Buckets server.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os

from aiohttp import web


def _store(directory: str, name: str, data: bytes) -> None:
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _load(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def make_app(directory: str) -> web.Application:
    loop_pool = None  # the loop's default executor

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if "/" not in path.strip("/"):  # the service or a bucket: nothing to do
            await request.read()
            return web.Response(body=b"")
        name = hashlib.blake2b(path.encode(), digest_size=16).hexdigest()
        loop = asyncio.get_running_loop()
        if request.method == "PUT":
            data = await request.read()
            await loop.run_in_executor(loop_pool, _store, directory, name, data)
            return web.Response(body=b"", headers={"ETag": '"' + hashlib.md5(data).hexdigest() + '"'})
        if request.method in ("GET", "HEAD"):
            data = await loop.run_in_executor(loop_pool, _load, os.path.join(directory, name))
            if data is None:
                return web.Response(status=404, body=b"")
            return web.Response(body=data)
        return web.Response(status=405, body=b"")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{path:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.refserver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(args.dir), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
