"""TLS for the server port and for peer calls: ``--certs-dir DIR``.

The directory follows MinIO's convention, so existing deployments carry over:
``DIR/public.crt`` (the certificate chain, leaf first) and ``DIR/private.key`` serve the
port, HTTPS only; ``DIR/CAs/*.crt`` (and ``*.pem``) are extra authorities this node trusts
when it calls its peers, beside the system store and its own certificate (so nodes that
share one self-signed certificate trust each other with nothing else to configure).

``ServerTLS.reload`` (SIGHUP) loads the files again into the live context: connections
already open keep their session, new handshakes get the new certificate, and a broken pair
on disk is refused (and logged) with the old one kept.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("buckets.tls")

CERT_FILE = "public.crt"
KEY_FILE = "private.key"
CA_DIR = "CAs"


class TLSConfigError(Exception):
    """The certificate directory cannot be used; the message says what to fix."""


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


class ServerTLS:
    def __init__(self, certs_dir: str) -> None:
        self.dir = Path(certs_dir).expanduser()
        self.cert = self.dir / CERT_FILE
        self.key = self.dir / KEY_FILE
        self.context = _server_context()
        self._load(self.context)
        self.fingerprint = self._fingerprint()

    def _load(self, context: ssl.SSLContext) -> None:
        for path, what in ((self.cert, "certificate"), (self.key, "private key")):
            if not path.is_file():
                raise TLSConfigError(f"TLS: no {what} at {path} (--certs-dir needs {CERT_FILE} and {KEY_FILE})")
            if not os.access(path, os.R_OK):
                raise TLSConfigError(f"TLS: cannot read the {what} {path} (permission denied)")
        try:
            context.load_cert_chain(str(self.cert), str(self.key))
        except ssl.SSLError as error:
            raise TLSConfigError(f"TLS: {self.cert} and {self.key} cannot be used together: "
                                 f"{error.reason or error}") from None
        except (OSError, ValueError) as error:
            raise TLSConfigError(f"TLS: cannot load {self.cert} / {self.key}: {error}") from None

    def _fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.cert.read_bytes()).hexdigest()[:16]

    def reload(self) -> bool:
        """Load the files again (SIGHUP); False (old certificate kept) when they are unusable."""
        try:
            self._load(_server_context())  # check the new pair first: a failed load leaves a context half-changed
            self._load(self.context)
        except TLSConfigError as error:
            log.error("certificate reload refused, still serving the previous one: %s", error)
            return False
        self.fingerprint = self._fingerprint()
        log.warning("TLS certificate reloaded from %s (sha256 %s...)", self.cert, self.fingerprint)
        return True

    def client_context(self) -> ssl.SSLContext:
        """What peer calls verify other nodes with: the system store, this node's own
        certificate, and every certificate in ``CAs/``."""
        return client_context(self.dir)


def client_context(certs_dir: str | Path | None = None, ca_file: str | None = None,
                   insecure: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as error:
            raise TLSConfigError(f"TLS: cannot load the CA file {ca_file}: {error}") from None
    if certs_dir is not None:
        base = Path(certs_dir).expanduser()
        files = [base / CERT_FILE] if (base / CERT_FILE).is_file() else []
        ca_dir = base / CA_DIR
        if ca_dir.is_dir():
            files += sorted(p for p in ca_dir.iterdir() if p.suffix in (".crt", ".pem") and p.is_file())
        for path in files:
            try:
                context.load_verify_locations(cafile=str(path))
            except (OSError, ssl.SSLError) as error:
                raise TLSConfigError(f"TLS: cannot load the authority {path}: {error}") from None
    return context
