"""The server's one typed configuration object and the layers it is built from.

Owns :class:`Config` (every setting of ``buckets server``, with defaults that work for
``buckets server ./data`` and no file at all), the table of :class:`Setting` entries that
says, for each setting, its YAML key, its ``BUCKETS_*`` environment variable, its flag and
how to parse and check it, and :func:`build_config`, which applies the layers in order:

    defaults  <-  YAML file (--config / BUCKETS_CONFIG)  <-  environment  <-  flags

Every bad value becomes one :class:`ConfigError` line naming where it came from
("BUCKETS_PARITY: ..."), so the CLI can print it and exit 2 without a traceback. Nothing
here opens disks or sockets; the argparse parser is built from the same table in
``buckets.cli.server``, so ``--help`` cannot forget a setting.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from buckets.cli.ellipsis import Endpoint, names_cluster, parse_endpoints

DEFAULT_ROOT_USER = "bucketsadmin"
DEFAULT_ROOT_PASSWORD = "bucketsadmin"
DEFAULT_ADDRESS = ":9000"
MAX_INLINE_THRESHOLD = 1 << 20  # one erasure block: inlining more than that saves nothing
CONFIG_ENV = "BUCKETS_CONFIG"


class ConfigError(ValueError):
    """A setting is missing or invalid; the message is one line an operator can act on."""


@dataclass(slots=True)
class Config:
    """Every setting of a Buckets server. Built by :func:`build_config`; plain data."""

    paths: list[str] = field(default_factory=list)  # disk arguments as given, ellipses unexpanded
    address: str = DEFAULT_ADDRESS  # "HOST:PORT" or ":PORT" (every interface)
    domains: list[str] = field(default_factory=list)  # virtual-host-style bucket domains
    parity: int | None = None  # None: the default for the disk count
    root_user: str = DEFAULT_ROOT_USER
    root_password: str = DEFAULT_ROOT_PASSWORD
    region: str = "us-east-1"
    region_strict: bool = False  # refuse requests signed for another region (S3's behaviour)
    sync: bool = True  # fsync before acknowledging writes; off is for development only
    cache_size: int = 50_000  # registry LRU entries, admitted by reads (~2.6 KB of heap each)
    inline_threshold: int = 131072  # objects up to this many bytes live in the metadata file
    small_log: bool = True  # inline objects and delete markers go to each disk's record log (issue 15)
    read_leases: bool = True  # a cluster bucket's first index replica answers lookups alone (leases)
    small_copy_limit: int = 1024  # objects up to this size keep a copy in the registry (GETs read no disk)
    small_set_limit: int = 16384  # objects up to this size go to m + m disks when the set is wider
    direct_io: bool = True  # shard files are written with O_DIRECT where the file system takes it
    disk_reserve: float = 1.0  # percent of each disk kept free for deletions (new data refused below it)
    disk_timeout: float = 30.0  # seconds a disk call may take before the disk counts as hung (0: no limit)
    erasure_simd: bool = True  # Reed-Solomon through ISA-L (zfec's pieces, SIMD) where libisal is installed
    aio_fsync: bool = False  # record-log appends written on the event loop, fsynced through Linux AIO
    batch_threads: bool = True  # helper threads run as SCHED_BATCH (never preempt the event loop on wake-up)
    log_format: str = "json"  # "json" | "console"
    log_level: str = "info"  # "debug" | "info" | "warning" | "error"
    metrics_auth: str = "public"  # "public" | "bearer"
    metrics_token: str | None = None  # the bearer token /metrics wants in "bearer" mode
    cluster_secret: str | None = None  # signs peer RPC; None: derived from the root credentials
    certs_dir: str | None = None  # public.crt + private.key: the port speaks HTTPS only; CAs/ for peers
    notify_webhooks: list[str] = field(default_factory=list)  # "NAME=URL" bucket notification targets
    console: bool = True  # serve the web console (buckets.console)
    console_address: str | None = None  # "HOST:PORT": the console on a port of its own; None: /console/ here
    console_session_ttl: float = 43200.0  # seconds a console login lasts
    kms_secret_key: str | None = None  # the master key for SSE-S3/SSE-KMS, "NAME:BASE64"; None: the key file
    kms_key_file: str | None = None  # the master key's file; None: ~/.buckets/keys/<deployment id>.key
    join: str | None = None  # a member's URL: this new node joins that cluster (cluster add-node places it)
    scanner_rate: float = 100.0  # objects per second the background healer verifies; 0 = off
    scanner_mb_rate: float = 50.0  # megabytes per second the scanner may read for deep checks
    lifecycle_day_seconds: float = 86400.0  # length of a lifecycle "day"; shortened only for tests
    lifecycle_interval: float = 3600.0  # seconds between two passes of the lifecycle worker
    tombstone_retention: float = 7 * 86400.0  # cluster: seconds a delete's tombstone is kept at least
    shutdown_timeout: float = 30.0  # seconds in-flight requests get to finish on SIGTERM
    # Slow clients (buckets.s3.connections): how long each stage may take, how many connections.
    header_timeout: float = 10.0  # seconds from connect (or a request's first byte) to its whole header
    body_timeout: float = 60.0  # seconds an upload or download may stall (no bytes move)
    idle_timeout: float = 75.0  # seconds a keep-alive connection may wait for its next request
    max_connections: int = 4096  # open connections; lowered to fit the open-file limit
    max_connections_per_client: int = 512  # open connections per client IP address; 0 = no limit
    config_file: str | None = None  # the YAML file the settings were read from, if any
    endpoints: list[Endpoint] = field(default_factory=list)  # filled in by build_config

    @property
    def host(self) -> str:
        """The host part of ``address``; "" means every interface."""
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        return split_address(self.address)[1]

    @property
    def is_cluster(self) -> bool:
        """The endpoints are URLs: ``buckets.cluster.node`` serves this one of the nodes they
        name. One node named by URLs (``http://127.0.0.1:9000/data{1...4}``) is a cluster of
        one, which grows with ``buckets-admin cluster add-node``; plain paths are a single
        node without a cluster."""
        return names_cluster(self.endpoints) or any(e.url is not None for e in self.endpoints)

    @property
    def disk_paths(self) -> list[str]:
        """Absolute local paths of the disks, in command-line order (what Store.open takes)."""
        return [endpoint.path for endpoint in self.endpoints]

    @property
    def using_default_credentials(self) -> bool:
        """True while the root secret is the published default: anyone can log in."""
        return self.root_password == DEFAULT_ROOT_PASSWORD


# --- value parsers -------------------------------------------------------------------------
# Each takes a value from any layer (a string from the environment or a flag, a native
# value from YAML) and returns the typed value or raises ValueError(message).


def split_address(address: str) -> tuple[str, int]:
    """``":9000"`` -> ``("", 9000)``; ``"127.0.0.1:9100"``; ``"[::1]:9000"`` -> ``("::1", 9000)``."""
    host, colon, port_text = address.rpartition(":")
    if not colon:
        raise ValueError(f"address {address!r} must be HOST:PORT or :PORT, e.g. :9000 or 127.0.0.1:9000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {address!r}: write an IPv6 host in brackets, e.g. [::1]:9000")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"address {address!r}: port must be a number from 1 to 65535")
    if any(char.isspace() or char in "/@" for char in host):
        raise ValueError(f"address {address!r}: invalid host")
    return host, int(port_text)


def _parse_address(value: object) -> str:
    text = _text(value, "address").strip()
    split_address(text)
    return text


def _parse_optional_address(value: object) -> str | None:
    if value is None:
        return None
    return _parse_address(value)


def _parse_paths(value: object) -> list[str]:
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        items = [item for item in value if item.strip() != ""]
    else:
        raise ValueError("must be a list of paths or a space-separated string")
    return list(items)


_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def _parse_domains(value: object) -> list[str]:
    if isinstance(value, str):
        raw = [value]
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        raw = list(value)
    else:
        raise ValueError("must be a domain name, a comma-separated string or a list")
    domains: list[str] = []
    for chunk in raw:
        for name in chunk.split(","):
            name = name.strip().lower().rstrip(".")
            if not name:
                continue
            if not _DOMAIN.match(name):
                raise ValueError(f"{name!r} is not a domain name (no scheme, port or path: e.g. s3.example.com)")
            if name not in domains:
                domains.append(name)
    return domains


def _parse_parity(value: object) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    if isinstance(value, bool):
        raise ValueError(f"parity must be a whole number of disks, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError(f"parity must be a whole number of disks (or 'auto'), got {value!r}")
    if number < 0:
        raise ValueError(f"parity must not be negative, got {number}")
    return number


_TRUE = ("on", "true", "yes", "1")
_FALSE = ("off", "false", "no", "0")


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be on/off (or true/false, 1/0), got {value!r}")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return value


def _secret(min_length: int, what: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str):
            # Never echo the value: it may be a real secret with a YAML typo around it.
            raise ValueError(f"{what} must be a string")
        if len(value) < min_length:
            raise ValueError(f"{what} must be at least {min_length} characters long")
        if any(char.isspace() or not char.isprintable() for char in value):
            raise ValueError(f"{what} must not contain spaces or control characters")
        return value

    return parse


def _optional_secret(min_length: int, what: str) -> Callable[[object], str | None]:
    required = _secret(min_length, what)

    def parse(value: object) -> str | None:
        if value is None:
            return None
        return required(value)

    return parse


def _parse_kms_secret(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("the master key must be a string NAME:BASE64")  # never echo a secret
    from buckets.kms.master import MasterKeyError, parse_master_key

    try:
        parse_master_key(value, "the master key")
    except MasterKeyError as error:
        raise ValueError(str(error)) from None
    return value.strip()


def _parse_optional_path(what: str) -> Callable[[object], str | None]:
    def parse(value: object) -> str | None:
        if value is None:
            return None
        text = _text(value, what).strip()
        if not text:
            raise ValueError(f"{what} must not be empty")
        return text

    return parse


def _parse_webhooks(value: object) -> list[str]:
    if isinstance(value, str):
        raw = [value]
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        raw = list(value)
    else:
        raise ValueError("must be NAME=URL, a comma-separated string of them or a list")
    items = [item.strip() for chunk in raw for item in chunk.replace(",", " ").split() if item.strip()]
    from buckets.notify.service import parse_targets

    parse_targets(items, {})  # raises ValueError with the item at fault
    return items


def _parse_join(value: object) -> str | None:
    from urllib.parse import urlsplit

    if value is None:
        return None
    text = _text(value, "join").strip().rstrip("/")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        port = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or port is None \
            or parts.path or parts.query or parts.fragment:
        raise ValueError(f"must be a node's URL, http://HOST:PORT, got {value!r}")
    return text


def _positive(parse_number: Callable[[object], float], what: str) -> Callable[[object], float]:
    def parse(value: object) -> float:
        number = parse_number(value)
        if number <= 0:
            raise ValueError(f"{what} must be greater than 0, got {value!r}")
        return number

    return parse


def _integer(minimum: int, maximum: int | None, what: str) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise ValueError(f"{what} must be a whole number, got {value!r}")
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9][0-9_]*\s*", value):
            number = int(value.strip())
        elif isinstance(value, int):
            number = value
        else:
            raise ValueError(f"{what} must be a whole number, got {value!r}")
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise ValueError(f"{what} must be {bound}, got {number}")
        return number

    return parse


def _decimal(minimum: float, what: str) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{what} must be a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{what} must be a number, got {value!r}") from None
        if not number >= minimum or number == float("inf"):  # also rejects NaN
            raise ValueError(f"{what} must be a number of at least {minimum:g}, got {value!r}")
        return number

    return parse


def _parse_reserve(value: object) -> float:
    number = _decimal(0, "disk reserve")(value)
    if number > 50:
        raise ValueError(f"disk reserve is a percent of each disk, from 0 to 50; got {value!r}")
    return number


def _choice(choices: tuple[str, ...], what: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise ValueError(f"{what} must be one of {', '.join(choices)}; got {value!r}")

    return parse


def _parse_region(value: object) -> str:
    text = _text(value, "region").strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", text):
        raise ValueError(f"region {text!r} must be lower-case letters, digits and dashes, e.g. us-east-1")
    return text


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """How one Config field is named in each layer and how its values are checked."""

    name: str  # Config field and YAML key
    env: str  # environment variable
    flag: str | None  # command-line flag; None keeps secrets out of `ps` output
    parse: Callable[[object], Any]
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
METRICS_AUTH = ("public", "bearer")

SETTINGS: tuple[Setting, ...] = (
    Setting("paths", "BUCKETS_VOLUMES", None, _parse_paths,
            "disk paths or endpoint URLs, ellipsis syntax allowed (/data{1...4}); "
            "in the environment, space-separated"),
    Setting("address", "BUCKETS_ADDRESS", "--address", _parse_address,
            "listen address, HOST:PORT or :PORT for every interface", metavar="ADDR"),
    Setting("domains", "BUCKETS_DOMAIN", "--domain", _parse_domains,
            "domain for virtual-host-style requests (BUCKET.DOMAIN); repeat the flag or "
            "give a comma-separated list", metavar="DOMAIN"),
    Setting("parity", "BUCKETS_PARITY", "--parity", _parse_parity,
            "parity shards per object (m of k+m), at most half the disks; 'auto' is 0 for "
            "1 disk, 1 for 2-3 disks, 2 for 4-5, 3 for 6-7, 4 for 8-16", metavar="M"),
    Setting("root_user", "BUCKETS_ROOT_USER", None, _secret(3, "root user"),
            "root access key, at least 3 characters"),
    Setting("root_password", "BUCKETS_ROOT_PASSWORD", None, _secret(8, "root password"),
            "root secret key, at least 8 characters"),
    Setting("region", "BUCKETS_REGION", "--region", _parse_region,
            "region name the server reports and signs with", metavar="REGION"),
    Setting("region_strict", "BUCKETS_REGION_STRICT", "--region-strict", _parse_bool,
            "refuse requests signed for a region other than --region (off: any client region "
            "works, as with MinIO when no region is set)", metavar="on|off"),
    Setting("sync", "BUCKETS_SYNC", "--sync", _parse_bool,
            "fsync data before acknowledging writes; 'off' loses acknowledged writes on power "
            "failure (development only)", metavar="on|off"),
    Setting("cache_size", "BUCKETS_CACHE_SIZE", "--cache-size",
            _integer(0, None, "cache size"), "registry cache size in entries of recently read objects "
            "(about 2.6 KB of memory each; a miss costs one LMDB lookup)", metavar="N"),
    Setting("inline_threshold", "BUCKETS_INLINE_THRESHOLD", "--inline-threshold",
            _integer(0, MAX_INLINE_THRESHOLD, "inline threshold"),
            f"objects up to this many bytes are stored inside their metadata file "
            f"(max {MAX_INLINE_THRESHOLD})", metavar="BYTES"),
    Setting("small_log", "BUCKETS_SMALL_LOG", "--small-log", _parse_bool,
            "write inline objects and delete markers as records of each disk's append-only log "
            "(group-committed) instead of one metadata file per disk, on one node and on a "
            "cluster; objects written either way stay readable", metavar="on|off"),
    Setting("read_leases", "BUCKETS_READ_LEASES", "--read-leases", _parse_bool,
            "on a cluster, the first of a bucket's three index replicas holds a read lease and "
            "answers a GET's lookup alone (one peer call instead of two); writes then wait for "
            "it, or for its lease to end when it does not answer", metavar="on|off"),
    Setting("direct_io", "BUCKETS_DIRECT_IO", "--direct-io", _parse_bool,
            "write shard files with O_DIRECT (straight to the device, not through the page "
            "cache: far less CPU per byte); the fsync that makes a write durable is unchanged; "
            "turned off where the file system refuses it", metavar="on|off"),
    Setting("disk_reserve", "BUCKETS_DISK_RESERVE", "--disk-reserve", _parse_reserve,
            "percent of each disk kept free for deletions, compaction and metadata: new data is "
            "refused below it (507 StorageFull), so a full store can still delete (at least 256 MiB, "
            "or 5%% of a disk under 5 GiB; 0: none)", metavar="PERCENT"),
    Setting("disk_timeout", "BUCKETS_DISK_TIMEOUT", "--disk-timeout", _decimal(0, "disk timeout"),
            "seconds a call on a disk may take before the disk counts as hung: marked offline "
            "(as after an I/O error) so that requests go on without it, and brought back once it "
            "answers in time again; 0: no limit", metavar="SECONDS"),
    Setting("erasure_simd", "BUCKETS_ERASURE_SIMD", "--erasure-simd", _parse_bool,
            "compute Reed-Solomon parity (and rebuild lost pieces) with Intel's ISA-L where "
            "libisal.so.2 is installed: the same pieces as zfec, checked at startup, ~80 times "
            "less CPU; off, or without the library, zfec does it", metavar="on|off"),
    Setting("aio_fsync", "BUCKETS_AIO_FSYNC", "--aio-fsync", _parse_bool,
            "append small-object records on the event loop and fsync them through Linux AIO "
            "instead of handing each batch to the disk's thread (fewer context switches); a disk "
            "that hangs, or a file system frozen for a snapshot, then stops the whole node until "
            "it answers: off by default", metavar="on|off"),
    Setting("batch_threads", "BUCKETS_BATCH_THREADS", "--batch-threads", _parse_bool,
            "run the helper threads (disk I/O, hashing and coding, registry commits, the log "
            "writer) as SCHED_BATCH on Linux: a woken helper never preempts the event loop, "
            "which holds the GIL (same CPU share; more small writes per second)", metavar="on|off"),
    Setting("small_copy_limit", "BUCKETS_SMALL_COPY_LIMIT", "--small-copy-limit",
            _integer(0, MAX_INLINE_THRESHOLD, "small copy limit"),
            "objects up to this many bytes also keep a checksummed copy of their bytes in the "
            "registry, so GETs of them read no disk (0: none; above about 1900 bytes a copy takes "
            "whole overflow pages: a 4 KiB object's costs about 8 KB of registry)", metavar="BYTES"),
    Setting("small_set_limit", "BUCKETS_SMALL_SET_LIMIT", "--small-set-limit",
            _integer(0, MAX_INLINE_THRESHOLD, "small set limit"),
            "objects up to this many bytes are erasure-coded over m + m disks of their set when "
            "the set is wider (12+4 on 16 disks: 4+4 on 8 of them), with the same parity: half "
            "the records per small write, a third of the record reads per small GET (0: every "
            "object uses the whole set)", metavar="BYTES"),
    Setting("log_format", "BUCKETS_LOG_FORMAT", "--log-format", _choice(LOG_FORMATS, "log format"),
            "log line format", choices=LOG_FORMATS),
    Setting("log_level", "BUCKETS_LOG_LEVEL", "--log-level", _choice(LOG_LEVELS, "log level"),
            "lowest level logged", choices=LOG_LEVELS),
    Setting("metrics_auth", "BUCKETS_METRICS_AUTH", "--metrics-auth",
            _choice(METRICS_AUTH, "metrics auth"),
            "who may read /metrics: anyone, or requests with a bearer token", choices=METRICS_AUTH),
    Setting("metrics_token", "BUCKETS_METRICS_TOKEN", None, _optional_secret(16, "metrics token"),
            "bearer token Prometheus must send when metrics_auth is bearer, at least 16 characters"),
    Setting("cluster_secret", "BUCKETS_CLUSTER_SECRET", None, _optional_secret(16, "cluster secret"),
            "secret the nodes of a cluster sign peer requests with, the same on every node, at least "
            "16 characters; unset, it is derived from the root credentials"),
    Setting("kms_secret_key", "BUCKETS_KMS_SECRET_KEY", None, _parse_kms_secret,
            "master key for SSE-S3 and SSE-KMS as NAME:BASE64 (32 bytes, e.g. my-key:$(openssl rand "
            "-base64 32)), the same on every node of a cluster; unset, the key file is used"),
    Setting("kms_key_file", "BUCKETS_KMS_KEY_FILE", "--kms-key-file", _parse_optional_path("kms key file"),
            "file holding the master key (NAME:BASE64), created the first time encryption is used if no "
            "key was recorded yet; back it up (default: ~/.buckets/keys/<deployment id>.key)", metavar="FILE"),
    Setting("certs_dir", "BUCKETS_CERTS_DIR", "--certs-dir", _parse_optional_path("certs dir"),
            "directory with public.crt and private.key (MinIO's layout): the port then speaks HTTPS "
            "only; CAs/ holds extra authorities for calls to peers; SIGHUP reloads the certificate",
            metavar="DIR"),
    Setting("notify_webhooks", "BUCKETS_NOTIFY_WEBHOOK", "--notify-webhook", _parse_webhooks,
            "a bucket-notification target, NAME=URL (repeat the flag, or comma-separate); bucket "
            "configurations name it arn:buckets:sqs::NAME:webhook; a bearer token for it comes from "
            "BUCKETS_NOTIFY_WEBHOOK_TOKEN_<NAME>", metavar="NAME=URL"),
    Setting("console", "BUCKETS_CONSOLE", "--console", _parse_bool,
            "serve the web console at /console/ (login with an access key and secret)", metavar="on|off"),
    Setting("console_address", "BUCKETS_CONSOLE_ADDRESS", "--console-address", _parse_optional_address,
            "serve the web console on this HOST:PORT (or :PORT) of its own instead of at /console/ on the "
            "S3 port", metavar="ADDR"),
    Setting("console_session_ttl", "BUCKETS_CONSOLE_SESSION_TTL", "--console-session-ttl",
            _positive(_decimal(0, "console session ttl"), "console session ttl"),
            "seconds a console login lasts before it must be made again", metavar="SECONDS"),
    Setting("join", "BUCKETS_JOIN", "--join", _parse_join,
            "URL of a node of a running cluster (http://HOST:PORT) that this new node joins; its "
            "disk arguments name only its own disks, and `buckets-admin cluster add-node` places "
            "it; ignored once the node is a member", metavar="URL"),
    Setting("scanner_rate", "BUCKETS_SCANNER_RATE", "--scanner-rate", _decimal(0, "scanner rate"),
            "objects per second the background scanner verifies; 0 turns it off", metavar="N"),
    Setting("scanner_mb_rate", "BUCKETS_SCANNER_MB_RATE", "--scanner-mb-rate",
            _positive(_decimal(0, "scanner MB rate"), "scanner MB rate"),
            "megabytes per second the scanner may read when it verifies piece checksums", metavar="MB"),
    Setting("lifecycle_day_seconds", "BUCKETS_LIFECYCLE_DAY_SECONDS", "--lifecycle-day-seconds",
            _positive(_decimal(0, "lifecycle day seconds"), "lifecycle day seconds"),
            "seconds in a lifecycle day (rule Days, NoncurrentDays, DaysAfterInitiation); shorten it "
            "only to test lifecycle rules", metavar="SECONDS"),
    Setting("lifecycle_interval", "BUCKETS_LIFECYCLE_INTERVAL", "--lifecycle-interval",
            _positive(_decimal(0, "lifecycle interval"), "lifecycle interval"),
            "seconds between two passes of the worker that applies the buckets' lifecycle rules",
            metavar="SECONDS"),
    Setting("tombstone_retention", "BUCKETS_TOMBSTONE_RETENTION", "--tombstone-retention",
            _decimal(1, "tombstone retention"),
            "cluster: seconds a deleted key's tombstone is kept at least (then forgotten once every "
            "replica of its bucket's index holds it); what counts is the bucket's first replica's. "
            "Shorten it only to test: a write older than a forgotten delete could come back",
            metavar="SECONDS"),
    Setting("shutdown_timeout", "BUCKETS_SHUTDOWN_TIMEOUT", "--shutdown-timeout",
            _decimal(0, "shutdown timeout"),
            "seconds in-flight requests get to finish after SIGTERM/SIGINT", metavar="SECONDS"),
    Setting("header_timeout", "BUCKETS_HEADER_TIMEOUT", "--header-timeout",
            _positive(_decimal(0, "header timeout"), "header timeout"),
            "seconds a client has to send a whole request header, from connecting or from the "
            "first byte of the next request on a kept-alive connection", metavar="SECONDS"),
    Setting("body_timeout", "BUCKETS_BODY_TIMEOUT", "--body-timeout",
            _positive(_decimal(0, "body timeout"), "body timeout"),
            "seconds an upload may send nothing (400 RequestTimeout) or a download may read "
            "nothing (connection closed) before the server gives up", metavar="SECONDS"),
    Setting("idle_timeout", "BUCKETS_IDLE_TIMEOUT", "--idle-timeout",
            _positive(_decimal(0, "idle timeout"), "idle timeout"),
            "seconds a kept-alive connection may wait for its next request", metavar="SECONDS"),
    Setting("max_connections", "BUCKETS_MAX_CONNECTIONS", "--max-connections",
            _integer(1, None, "max connections"),
            "open client connections at most (lowered to fit the open-file limit); more are "
            "answered 503 SlowDown and closed", metavar="N"),
    Setting("max_connections_per_client", "BUCKETS_MAX_CONNECTIONS_PER_CLIENT",
            "--max-connections-per-client", _integer(0, None, "max connections per client"),
            "open connections from one client IP address at most; 0 turns the limit off "
            "(e.g. behind a reverse proxy)", metavar="N"),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
_CONFIG_FIELDS = {item.name for item in fields(Config)}
assert set(SETTINGS_BY_NAME) <= _CONFIG_FIELDS, "every setting must be a Config field"


def default_of(name: str) -> object:
    """The default of a Config field, for help texts and the example file."""
    return getattr(Config(), name)


# --- layers --------------------------------------------------------------------------------


def read_config_file(path: str) -> dict[str, object]:
    """Load a YAML config file into {setting name: raw value}; unknown keys are errors."""
    import yaml  # only servers with a config file pay for the import

    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path}: {problem}{where}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings at the top level")
    values: dict[str, object] = {}
    for key, value in document.items():
        if key not in SETTINGS_BY_NAME:
            close = difflib.get_close_matches(str(key).replace("-", "_"), SETTINGS_BY_NAME, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(SETTINGS_BY_NAME)})"
            raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
        values[str(key)] = value
    return values


def _layer_from_env(environ: Mapping[str, str]) -> dict[str, object]:
    # An empty variable counts as unset: `BUCKETS_PARITY= buckets server ...` in a shell
    # script that defaults a variable to "" must not be an error.
    return {setting.name: environ[setting.env] for setting in SETTINGS
            if environ.get(setting.env, "").strip() != ""}


def build_config(flags: Mapping[str, object] | None = None,
                 environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate the Config: defaults <- YAML file <- environment <- flags.

    ``flags`` maps setting names (plus ``config``, the file path) to values given on the
    command line; absent or None means "not given". ``environ`` defaults to an empty
    mapping so callers pass ``os.environ`` explicitly.
    """
    flags = {name: value for name, value in (flags or {}).items() if value is not None}
    environ = environ or {}
    config_path = flags.pop("config", None) or environ.get(CONFIG_ENV, "").strip() or None
    unknown = set(flags) - set(SETTINGS_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")

    file_values = read_config_file(str(config_path)) if config_path else {}
    env_values = _layer_from_env(environ)
    values: dict[str, object] = {}
    for setting in SETTINGS:
        # Later layers win; each value is checked where it came from so the message can
        # name the source even when a later layer would have replaced it.
        for layer, source in ((file_values, f"{setting.name} in {config_path}"),
                              (env_values, setting.env),
                              (flags, setting.flag or setting.name)):
            if setting.name in layer:
                try:
                    values[setting.name] = setting.parse(layer[setting.name])
                except ValueError as error:
                    raise ConfigError(f"{source}: {error}") from None
    config = Config(**values, config_file=str(config_path) if config_path else None)
    return validate(config)


def validate(config: Config) -> Config:
    """Cross-setting checks; fills in ``config.endpoints``. Returns the same object."""
    try:
        host, port = split_address(config.address)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not config.paths:
        raise ConfigError("no disk paths given: pass at least one PATH (e.g. buckets server ./data), "
                          "or set BUCKETS_VOLUMES or 'paths' in the config file")
    try:
        config.endpoints = parse_endpoints(config.paths, server_port=port, address_host=host)
        if names_cluster(config.endpoints):  # this node must be exactly one of them
            from buckets.cli.ellipsis import this_host_names
            from buckets.cluster.topology import cluster_spec

            cluster_spec(config.endpoints, host, port, this_host_names(host))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if config.join is not None:
        nodes = {(e.host, e.port) for e in config.endpoints}
        if any(e.url is None for e in config.endpoints) or len(nodes) != 1:
            raise ConfigError("--join: name only this node's own disks, as URLs "
                              "(e.g. --join http://127.0.0.1:9000 http://127.0.0.5:9000/srv/n5/d{1...4})")
    if config.console_address is not None and split_address(config.console_address)[1] == port:
        raise ConfigError(f"console address {config.console_address} uses the S3 port {port}: pick another port "
                          "(or leave console_address unset to serve the console at /console/ on the S3 port)")
    if config.metrics_auth == "bearer" and not config.metrics_token:
        raise ConfigError("metrics_auth is bearer but no token is set: set BUCKETS_METRICS_TOKEN "
                          "(or metrics_token in the config file)")
    disks = len(config.endpoints)
    if config.parity is not None and config.parity > disks // 2:
        raise ConfigError(
            f"parity {config.parity} is too high for {disks} disk{'s' if disks != 1 else ''}: "
            f"at most half the disks ({disks // 2}) can be parity")
    return config
