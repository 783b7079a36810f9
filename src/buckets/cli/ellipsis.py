"""Disk arguments: MinIO's ellipsis syntax and the endpoints it names.

Owns two steps that turn what an operator typed after ``buckets server`` into disks:

* :func:`expand` turns one argument with ``{a...b}`` groups into the list of strings it
  stands for (``/data{1...4}`` -> ``/data1 .. /data4``), in MinIO's order, so a command
  line copied from a MinIO deployment names the same disks in the same order.
* :func:`parse_endpoints` turns every expanded argument into an :class:`Endpoint` (a local
  path or an ``http(s)://host:port/path`` URL) and refuses what cannot work: mixed local
  paths and URLs, duplicates and malformed URLs. URLs naming several nodes are a cluster
  (``names_cluster``; ``buckets.cluster.topology`` finds this node among them).

Pure functions, no I/O except asking the OS for this host's name. Every failure is a
``ValueError`` whose message is one line an operator can act on.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

# One group: whatever sits between a pair of braces with no brace inside. What it holds is
# checked separately, so "{1..4}" or "{}" gets its own message instead of "no match".
_GROUP = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^([0-9]+|[A-Za-z])\.\.\.([0-9]+|[A-Za-z])$")

# An argument expanding to more than this is a typo ({1...100000}), not a deployment.
MAX_EXPANSION = 4096

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

@dataclass(frozen=True, slots=True)
class Endpoint:
    """One disk as named on the command line.

    A local path has ``url``, ``host`` and ``port`` set to ``None`` and ``path`` made
    absolute. A URL endpoint keeps its (normalised) URL, its host in lower case, its port
    (the server's own port when the URL has none, as MinIO does) and its absolute path.
    """

    url: str | None
    host: str | None
    port: int | None
    path: str
    is_local: bool

    def __str__(self) -> str:
        return self.url if self.url is not None else self.path


def has_ellipsis(arg: str) -> bool:
    """True if ``arg`` uses (or tries to use) the ellipsis syntax."""
    return "..." in arg or "{" in arg or "}" in arg


def _range_values(group: str, arg: str) -> list[str]:
    """The values one ``{a...b}`` group stands for; ``group`` is the text inside the braces."""
    where = f"{{{group}}} in {arg!r}"
    if group == "" or group == "...":
        raise ValueError(f"empty range {where}: write {{N...M}}, e.g. /data{{1...4}}")
    match = _RANGE.match(group)
    if match is None:
        if re.fullmatch(r"[0-9A-Za-z]+\.\.[0-9A-Za-z]+", group):
            raise ValueError(f"range {where} needs three dots: {{N...M}}")
        raise ValueError(
            f"invalid range {where}: write {{N...M}} with N <= M, both numbers (e.g. {{1...4}}, "
            f"{{01...16}}) or both single letters (e.g. {{a...d}})")
    low, high = match.groups()
    if low.isdigit() != high.isdigit():
        raise ValueError(f"invalid range {where}: both ends must be numbers or both single letters")
    if low.isdigit():
        start, end = int(low), int(high)
        if start > end:
            raise ValueError(f"range {where} is descending: the first number must not exceed the second")
        count = end - start + 1
        if count > MAX_EXPANSION:
            raise ValueError(f"range {where} names {count} disks; the limit is {MAX_EXPANSION}")
        # MinIO pads to the width of the first bound when it has a leading zero:
        # {01...16} -> 01..16. Keeping that rule keeps copied MinIO commands meaning the same.
        width = len(low) if low.startswith("0") and len(low) > 1 else 0
        return [str(number).zfill(width) for number in range(start, end + 1)]
    if low.islower() != high.islower():
        raise ValueError(f"invalid range {where}: both letters must be the same case")
    if low > high:
        raise ValueError(f"range {where} is descending: the first letter must not come after the second")
    return [chr(code) for code in range(ord(low), ord(high) + 1)]


def expand(arg: str) -> list[str]:
    """Expand every ``{a...b}`` group in ``arg``; an argument without groups is returned as is.

    Several groups multiply (cartesian product) in MinIO's order: the leftmost group varies
    fastest, so ``http://node{1...2}/data{1...2}`` gives node1/data1, node2/data1,
    node1/data2, node2/data2, spreading consecutive disks over different nodes.
    """
    if arg == "":
        raise ValueError("empty disk argument")
    if not has_ellipsis(arg):
        return [arg]
    pieces = _GROUP.split(arg)  # literal, group, literal, group, ..., literal
    literals, groups = pieces[0::2], pieces[1::2]
    for literal in literals:
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced or nested braces in {arg!r}: write {{N...M}}, e.g. /data{{1...4}}")
        if "..." in literal:
            raise ValueError(f"ellipsis outside braces in {arg!r}: write {{N...M}}, e.g. /data{{1...4}}")
    value_lists = [_range_values(group, arg) for group in groups]
    total = 1
    for values in value_lists:
        total *= len(values)
    if total > MAX_EXPANSION:
        raise ValueError(f"{arg!r} names {total} disks; the limit is {MAX_EXPANSION}")
    expanded = []
    # itertools.product varies its last iterable fastest; feed it the groups reversed so
    # the leftmost group varies fastest, as MinIO does.
    for combination in itertools.product(*reversed(value_lists)):
        chosen = combination[::-1]
        parts = [literals[0]]
        for value, literal in zip(chosen, literals[1:]):
            parts.append(value)
            parts.append(literal)
        expanded.append("".join(parts))
    return expanded


def expand_all(args: list[str]) -> list[str]:
    """Expand every argument, in order."""
    return [item for arg in args for item in expand(arg)]


def _is_url(arg: str) -> bool:
    return "://" in arg


def this_host_names(address_host: str) -> frozenset[str]:
    """Names that mean "this node": loopback, the machine's host name, the bound address.

    No DNS lookups: a slow resolver must not stall startup, and a name that only resolves
    to us through DNS needs ``--address`` to say which node this is.
    """
    names = set(LOOPBACK_HOSTS)
    hostname = socket.gethostname().lower()
    if hostname:
        names.add(hostname)
        names.add(hostname.split(".", 1)[0])
    if address_host:
        names.add(address_host.lower().strip("[]"))
    return frozenset(names)


def _parse_url(arg: str, server_port: int, local_names: frozenset[str]) -> Endpoint:
    parts = urlsplit(arg)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme in endpoint {arg!r}: use http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"endpoint {arg!r} must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError(f"endpoint {arg!r} must not have a query or fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"endpoint {arg!r} has no host")
    try:
        explicit_port = parts.port
    except ValueError:
        raise ValueError(f"endpoint {arg!r} has an invalid port (want 1-65535)") from None
    if explicit_port == 0:
        raise ValueError(f"endpoint {arg!r} has an invalid port (want 1-65535)")
    path = parts.path
    if not path.startswith("/") or path.rstrip("/") == "":
        raise ValueError(f"endpoint {arg!r} needs an absolute disk path after the host, e.g. http://node1:9000/data1")
    path = os.path.normpath(path)
    port = explicit_port if explicit_port is not None else server_port
    is_local = host in local_names and port == server_port
    netloc = f"[{host}]" if ":" in host else host
    url = f"{parts.scheme}://{netloc}:{port}{path}"
    return Endpoint(url=url, host=host, port=port, path=path, is_local=is_local)


def parse_endpoints(args: list[str], server_port: int, address_host: str = "") -> list[Endpoint]:
    """Expand and parse the disk arguments of ``buckets server``.

    ``server_port`` and ``address_host`` come from ``--address``; they decide whether a URL
    names this node. Raises ``ValueError`` with a one-line message.
    """
    if not args:
        raise ValueError("no disk paths given: pass at least one PATH, e.g. buckets server ./data")
    expanded = expand_all(args)
    url_args = [arg for arg in expanded if _is_url(arg)]
    if url_args and len(url_args) != len(expanded):
        local = next(arg for arg in expanded if not _is_url(arg))
        raise ValueError(
            f"local paths and URLs cannot be mixed ({local!r} and {url_args[0]!r}): "
            "name every disk as a path, or every disk as http(s)://host:port/path")
    endpoints: list[Endpoint] = []
    if url_args:
        local_names = this_host_names(address_host)
        endpoints = [_parse_url(arg, server_port, local_names) for arg in expanded]
    else:
        for arg in expanded:
            if arg.strip() == "":
                raise ValueError("empty disk path")
            endpoints.append(Endpoint(url=None, host=None, port=None,
                                      path=os.path.abspath(arg), is_local=True))
    seen: dict[tuple, str] = {}
    for endpoint, arg in zip(endpoints, expanded):
        # Two URLs that differ only in scheme, or name this node as localhost and as
        # 127.0.0.1, are still the same disk.
        identity = ("loopback" if endpoint.host in LOOPBACK_HOSTS else endpoint.host, endpoint.port,
                    endpoint.path)
        if identity in seen:
            raise ValueError(f"duplicate disk: {arg!r} names the same disk as {seen[identity]!r}")
        seen[identity] = arg
    return endpoints


def names_cluster(endpoints: list[Endpoint]) -> bool:
    """True when the endpoints name more than one node (distinct host:port), or one that is
    not this server: either way this server must find itself among them."""
    nodes = {(e.host, e.port) for e in endpoints if e.url is not None}
    return len(nodes) > 1 or any(not e.is_local for e in endpoints)
