"""Log setup for the server: JSON lines for shippers, or a console format for people.

Every log record may carry structured fields in ``extra={"fields": {...}}`` (the access
line does: request id, API, bucket, key, status, bytes, duration, access key). The JSON
formatter puts them at the top level of the line; the console formatter appends them as
``key=value`` so both formats carry the same facts. ``set_log_level`` is what the admin
API calls to change the level of a running node.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

FIELDS = "fields"  # the LogRecord attribute (via ``extra``) holding structured fields
LOG_LEVELS = ("debug", "info", "warning", "error")

# Fields the JSON line owns; a structured field of the same name is prefixed, not lost.
_RESERVED = frozenset({"time", "level", "logger", "message", "error"})


def _timestamp(record: logging.LogRecord) -> str:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: what log shippers parse without a grok pattern."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in (getattr(record, FIELDS, None) or {}).items():
            entry[f"field_{name}" if name in _RESERVED else name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    """``2024-05-01 12:00:00,123 INFO    buckets.access: GET /b/k 200 ... key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, FIELDS, None)
        if not fields:
            return line
        head, newline, tail = line.partition("\n")  # keep a traceback below the fields
        pairs = " ".join(f"{name}={_console_value(value)}" for name, value in fields.items()
                         if value is not None and value != "")
        return f"{head} {pairs}{newline}{tail}"


def _console_value(value: object) -> str:
    text = str(value)
    if text == "" or any(char.isspace() or char in '"=' for char in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def configure_logging(log_format: str, level: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) in ``log_format`` at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter() if log_format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_log_level(level)
    # aiohttp's own access logger would repeat every request in its own format: ours is
    # buckets.access, so silence that one (errors still come through aiohttp.server).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler


def set_log_level(level: str) -> None:
    """Change the level of the running process (``debug``/``info``/``warning``/``error``)."""
    name = level.strip().lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}; got {level!r}")
    logging.getLogger().setLevel(name.upper())


def current_log_level() -> str:
    return logging.getLevelName(logging.getLogger().level).lower()
