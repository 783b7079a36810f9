"""The pure pieces of the operations tooling: log formats, human output, aliases, settings."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

import pytest

from buckets.admin.settings import SCANNER_OFF_PAUSE, apply_scanner_rate
from buckets.cli.aliases import Alias, AliasStore, CliError
from buckets.cli.client import parse_duration
from buckets.cli.output import human_duration, human_size, table
from buckets.obs.logs import FIELDS, ConsoleFormatter, JsonLineFormatter
from buckets.obs.metrics import status_class, write_quorum


def _record(message: str, fields: dict | None = None) -> logging.LogRecord:
    record = logging.LogRecord("buckets.access", logging.INFO, __file__, 1, message, None, None)
    if fields is not None:
        setattr(record, FIELDS, fields)
    return record


def test_json_line_carries_structured_fields_at_top_level() -> None:
    line = JsonLineFormatter().format(_record("GET /b/k 200", {"request_id": "ABC", "status": 200,
                                                               "message": "clash"}))
    entry = json.loads(line)
    assert entry["message"] == "GET /b/k 200" and entry["field_message"] == "clash"
    assert entry["request_id"] == "ABC" and entry["status"] == 200 and entry["level"] == "info"
    assert "\n" not in line


def test_console_line_appends_key_values_and_quotes_spaces() -> None:
    line = ConsoleFormatter().format(_record("GET /b/k 200", {"request_id": "ABC", "user_agent": "a b",
                                                             "key": None}))
    assert line.endswith('GET /b/k 200 request_id=ABC user_agent="a b"')


@pytest.mark.parametrize(("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                            (5 * 2**20 + 2**19, "5.5 MiB"), (3 * 2**40, "3.0 TiB"), (None, "-")])
def test_human_size(size, text) -> None:
    assert human_size(size) == text


def test_human_duration() -> None:
    assert [human_duration(s) for s in (5, 65, 3700, 90000)] == ["5s", "1m 5s", "1h 1m", "1d 1h 0m"]


def test_table_aligns_columns_and_right_aligns_numbers() -> None:
    out = io.StringIO()
    table(["NAME", "SIZE"], [["a", "1.0 KiB"], ["longer", "12 B"]], out)
    assert out.getvalue().splitlines() == ["NAME       SIZE", "a       1.0 KiB", "longer     12 B"]


def test_alias_store_round_trip_and_errors(tmp_path) -> None:
    store = AliasStore(tmp_path / "sub" / "config.json")
    store.set(Alias("local", "http://127.0.0.1:9000/", "ak", "sk"))
    assert store.get("local").url == "http://127.0.0.1:9000"
    assert (tmp_path / "sub" / "config.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(CliError, match="unknown alias 'x'.*known: local"):
        store.get("x")
    with pytest.raises(CliError, match="has no path"):
        store.set(Alias("p", "http://host:9000/bucket", "ak", "sk"))
    (tmp_path / "sub" / "config.json").write_text("{broken")
    with pytest.raises(CliError, match="not a valid alias file"):
        store.all()


@pytest.mark.parametrize(("text", "seconds"), [("60", 60), ("30m", 1800), ("12h", 43200), ("7d", 604800)])
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == seconds


def test_scanner_rate_zero_stops_the_periodic_pass_without_a_zero_pace() -> None:
    cfg = SimpleNamespace(cycle_pause=60.0, objects_per_sec=100.0)
    apply_scanner_rate(cfg, 0)
    assert cfg.cycle_pause == SCANNER_OFF_PAUSE and cfg.objects_per_sec > 0  # the throttle divides by it
    apply_scanner_rate(cfg, 25)
    assert (cfg.cycle_pause, cfg.objects_per_sec) == (60.0, 25)


def test_quorum_and_status_class() -> None:
    assert [write_quorum(k, m) for k, m in ((1, 0), (2, 1), (2, 2), (4, 2), (4, 4))] == [1, 2, 3, 4, 5]
    assert [status_class(s) for s in (200, 304, 404, 503, 42)] == ["2xx", "3xx", "4xx", "5xx", "other"]


def _batching_logger(stream: io.StringIO, delay: float):
    from buckets.obs.logs import BatchingStreamHandler

    handler = BatchingStreamHandler(stream, delay=delay)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"buckets.test.batching.{delay}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger, handler


def test_batching_handler_holds_info_lines_and_writes_warnings_at_once() -> None:
    stream = io.StringIO()
    logger, handler = _batching_logger(stream, delay=600)
    try:
        logger.info("quiet")  # nothing written for a while: at once
        assert stream.getvalue() == "INFO quiet\n"
        logger.info("first")
        logger.info("second")
        assert stream.getvalue() == "INFO quiet\n"  # held: one write for the batch
        logger.warning("trouble")  # written at once, after what was held
        assert stream.getvalue() == "INFO quiet\nINFO first\nINFO second\nWARNING trouble\n"
        logger.info("last")
    finally:
        handler.close()
    assert stream.getvalue().endswith("INFO last\n")  # close() writes what is held


def test_batching_handler_writes_held_lines_after_its_delay() -> None:
    import time

    stream = io.StringIO()
    logger, handler = _batching_logger(stream, delay=0.5)
    try:
        logger.info("now")
        logger.info("later")  # within the delay of the last write: held
        deadline = time.monotonic() + 10
        while "later" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue() == "INFO now\nINFO later\n"  # the flusher wrote it without a flush() call
    finally:
        handler.close()
