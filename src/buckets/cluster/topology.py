"""The cluster as named on the command line: nodes, their disks, and which node is this one.

Every node is started with the same endpoint list (MinIO's way); this module turns the parsed
endpoints into a ``ClusterSpec`` (nodes in first-appearance order, each with its disk paths),
finds this node by ``--address`` (which must match exactly one node) or else by the host's
own names, and computes a fingerprint of the list so that two nodes started with different
lists refuse each other with one clear line instead of placing data differently.

Pure values and functions: no I/O, no sockets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node: its base URL (``http://127.0.0.2:9000``) and its disk paths, in order."""

    url: str
    host: str
    port: int
    paths: tuple[str, ...]

    def disk_endpoint(self, path: str) -> str:
        return f"{self.url}{path}"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: tuple[NodeSpec, ...]
    self_index: int

    @property
    def me(self) -> NodeSpec:
        return self.nodes[self.self_index]

    @property
    def peers(self) -> tuple[NodeSpec, ...]:
        return tuple(n for i, n in enumerate(self.nodes) if i != self.self_index)

    @property
    def disk_count(self) -> int:
        return sum(len(n.paths) for n in self.nodes)

    def fingerprint(self) -> str:
        """Identical on every node started with the same list (order included)."""
        h = hashlib.sha256()
        for n in self.nodes:
            h.update(n.url.encode() + b"\n")
            for p in n.paths:
                h.update(b"\t" + p.encode() + b"\n")
        return h.hexdigest()[:32]

    def node_by_url(self, url: str) -> NodeSpec | None:
        for n in self.nodes:
            if n.url == url:
                return n
        return None


def cluster_spec(endpoints: Iterable, address_host: str, address_port: int,
                 local_names: frozenset[str] = frozenset()) -> ClusterSpec:
    """Group URL endpoints (``buckets.cli.ellipsis.Endpoint``) by node and find this node.

    ``address_host`` empty means "any address": this node is then the one whose host is one
    of ``local_names`` (loopback, the host name) on ``address_port``; that must be unique.
    Raises ``ValueError`` with one line an operator can act on.
    """
    order: list[tuple[str, int]] = []
    paths: dict[tuple[str, int], list[str]] = {}
    schemes: dict[tuple[str, int], str] = {}
    for ep in endpoints:
        if ep.url is None or ep.host is None or ep.port is None:
            raise ValueError(f"cluster endpoints must all be URLs, got the local path {ep.path!r}")
        ident = (ep.host, ep.port)
        if ident not in paths:
            order.append(ident)
            paths[ident] = []
            schemes[ident] = ep.url.split("://", 1)[0]
        paths[ident].append(ep.path)
    nodes = []
    for host, port in order:
        netloc = f"[{host}]" if ":" in host else host
        nodes.append(NodeSpec(f"{schemes[(host, port)]}://{netloc}:{port}", host, port,
                              tuple(paths[(host, port)])))
    if address_host and address_host not in ("0.0.0.0", "::"):
        matches = [i for i, n in enumerate(nodes) if n.host == address_host.lower().strip("[]")
                   and n.port == address_port]
        what = f"--address {address_host}:{address_port}"
    else:
        matches = [i for i, n in enumerate(nodes) if n.host in local_names and n.port == address_port]
        what = f"this host's own addresses on port {address_port} ({', '.join(sorted(local_names))})"
    if not matches:
        listed = ", ".join(n.url for n in nodes)
        raise ValueError(f"no node in the endpoint list matches {what}; the nodes are {listed}")
    if len(matches) > 1:
        names = ", ".join(nodes[i].url for i in matches)
        raise ValueError(f"{what} matches several nodes ({names}): pass --address HOST:PORT naming exactly one")
    return ClusterSpec(tuple(nodes), matches[0])
