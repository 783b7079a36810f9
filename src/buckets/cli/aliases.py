"""Named endpoints with their credentials, shared by ``buckets-admin`` and ``buckets-client``.

An alias (``local`` -> ``http://127.0.0.1:9000`` + access key + secret key + region) is set
once with ``alias set`` and then used as the first segment of every target
(``local/photos/2024/cat.jpg``), as mc does. Aliases live in one JSON file,
``~/.buckets/config.json`` (``BUCKETS_CLIENT_CONFIG`` names another file), written
atomically with mode 0600 because it holds secrets.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

CONFIG_ENV = "BUCKETS_CLIENT_CONFIG"
ALIAS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
FILE_VERSION = 1


class CliError(Exception):
    """Something the user must fix; printed as one line, exit status 1."""


@dataclass(slots=True)
class Alias:
    name: str
    url: str  # scheme://host[:port], no path
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    insecure: bool = False  # skip TLS certificate checks (self-signed test servers)
    ca_file: str | None = None  # verify the server against this CA bundle (and not the system store's)

    def public(self) -> dict[str, object]:
        """Everything but the secret, for listings."""
        return {"name": self.name, "url": self.url, "access_key": self.access_key, "region": self.region,
                "insecure": self.insecure, "ca_file": self.ca_file}

    def tls_verify(self) -> bool | str:
        """What clients pass as ``verify``: False (insecure, with a warning on stderr), the
        CA bundle's path, or True (the system store)."""
        if self.insecure:
            import sys

            print(f"WARNING: the TLS certificate of {self.url} is not verified (alias {self.name} is "
                  "--insecure): anyone on the path can read and change this traffic.", file=sys.stderr)
            return False
        return self.ca_file or True


def config_path() -> Path:
    override = os.environ.get(CONFIG_ENV, "").strip()
    return Path(override).expanduser() if override else Path.home() / ".buckets" / "config.json"


def check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"{url!r} is not an endpoint URL: use http://HOST:PORT or https://HOST")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise CliError(f"{url!r}: an endpoint URL has no path; buckets and keys go after the alias")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise CliError(f"{url!r}: the port must be a number from 1 to 65535") from None
    return f"{parts.scheme}://{parts.netloc}"


class AliasStore:
    """The alias file: load, change, save."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_path()

    def _load(self) -> dict[str, dict]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise CliError(f"cannot read {self.path}: {error.strerror or error}") from None
        try:
            document = json.loads(text)
            aliases = document["aliases"]
            if not isinstance(aliases, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise CliError(f"{self.path} is not a valid alias file; fix or remove it") from None
        return aliases

    def all(self) -> list[Alias]:
        out = []
        for name, entry in sorted(self._load().items()):
            try:
                out.append(Alias(name=name, url=entry["url"], access_key=entry["access_key"],
                                 secret_key=entry["secret_key"], region=entry.get("region", "us-east-1"),
                                 insecure=bool(entry.get("insecure", False)), ca_file=entry.get("ca_file")))
            except (KeyError, TypeError):
                raise CliError(f"{self.path}: alias {name!r} is incomplete; set it again") from None
        return out

    def get(self, name: str) -> Alias:
        for alias in self.all():
            if alias.name == name:
                return alias
        known = ", ".join(alias.name for alias in self.all())
        hint = f" (known: {known})" if known else ""
        raise CliError(f"unknown alias {name!r}{hint}; add it with: alias set {name} URL ACCESS_KEY SECRET_KEY")

    def names(self) -> set[str]:
        return set(self._load())

    def set(self, alias: Alias) -> None:
        if not ALIAS_NAME.fullmatch(alias.name):
            raise CliError(f"alias name {alias.name!r} must start with a letter and hold only letters, "
                           "digits, '-' and '_'")
        alias.url = check_url(alias.url)
        if alias.ca_file is not None:
            ca = Path(alias.ca_file).expanduser()
            if not ca.is_file():
                raise CliError(f"--ca-file {alias.ca_file}: no such file")
            alias.ca_file = str(ca.resolve())
        aliases = self._load()
        entry = asdict(alias)
        entry.pop("name")
        aliases[alias.name] = entry
        self._save(aliases)

    def remove(self, name: str) -> None:
        aliases = self._load()
        if name not in aliases:
            raise CliError(f"unknown alias {name!r}")
        del aliases[name]
        self._save(aliases)

    def _save(self, aliases: dict[str, dict]) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=directory, prefix=".config-", suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                os.fchmod(out.fileno(), 0o600)
                json.dump({"version": FILE_VERSION, "aliases": aliases}, out, indent=2, sort_keys=True)
                out.write("\n")
            os.replace(temp, self.path)
        except OSError as error:
            raise CliError(f"cannot write {self.path}: {error.strerror or error}") from None
