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
import threading
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


class BatchingStreamHandler(logging.StreamHandler):
    """A stream handler that writes lines in batches: a busy node logs one access line per
    request, and one write system call per line was a measurable share of a small PUT's CPU.

    A line at WARNING or above is written at once, with everything buffered before it (a
    traceback is never held back), and so is a line on a quiet node (nothing written in the
    last ``delay`` seconds); other lines wait at most ``delay`` seconds or until ``limit``
    bytes are buffered. ``flush()`` (called by ``logging.shutdown`` at exit) writes
    what is buffered; a process killed with ``kill -9`` loses at most ``delay`` of info lines.
    """

    def __init__(self, stream: TextIO | None = None, delay: float = 0.1, limit: int = 65536) -> None:
        super().__init__(stream)
        self.delay = delay
        self.limit = limit
        self._lines: list[str] = []
        self._size = 0
        self._written = float("-inf")  # time.monotonic() of the last write
        self._due = threading.Event()
        self._closed = False
        self._flusher = threading.Thread(target=self._run, name="log-flusher", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)
            return
        now = time.monotonic()
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            self._size += len(line)
            if (record.levelno >= logging.WARNING or self._size >= self.limit or self._closed
                    or (len(self._lines) == 1 and now - self._written >= self.delay)):
                self._write_locked()
                return
            first = len(self._lines) == 1
        if first:
            self._due.set()

    def _write_locked(self) -> None:
        if not self._lines:
            return
        self._written = time.monotonic()
        text = "".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the stream is gone (closed pipe at shutdown)
            pass

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_locked()

    def _run(self) -> None:
        from buckets.runtime import helper_thread_started
        helper_thread_started()
        while not self._closed:
            self._due.wait()
            self._due.clear()
            time.sleep(self.delay)
            self.flush()

    def close(self) -> None:
        self._closed = True
        self._due.set()
        self.flush()
        super().close()


def configure_logging(log_format: str, level: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) in ``log_format`` at ``level``."""
    # No record carries the caller's file/line, thread or process (no format prints them):
    # looking them up was a measurable part of every access line.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingStreamHandler(stream or sys.stderr)
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
