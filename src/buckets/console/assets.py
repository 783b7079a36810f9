"""The console's static files: plain HTML, CSS and ES modules shipped inside the package
(``buckets/console/static``, package data), read once when the console starts.

Nothing is fetched from elsewhere at run time and nothing is built at install time: the
browser loads the modules as they are in the source tree. Only files found there are
served (a fixed table, so no path from a request ever reaches the file system); each
answer carries a strong ETag and ``Cache-Control: no-cache`` (the browser revalidates, a
304 costs nothing), plus the console's security headers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _walk(node, prefix: str = ""):
    for child in node.iterdir():
        name = f"{prefix}{child.name}"
        if child.is_dir():
            yield from _walk(child, name + "/")
        else:
            yield name, child


def load_assets(package: str = "buckets.console", directory: str = "static") -> dict[str, Asset]:
    """{relative path: Asset} of every file with a known type under the package directory."""
    root = resources.files(package) / directory
    assets: dict[str, Asset] = {}
    for name, node in _walk(root):
        suffix = name[name.rfind("."):] if "." in name else ""
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is None:
            continue
        body = node.read_bytes()
        assets[name] = Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return assets
