"""Settings an operator may change on a running node (``buckets-admin config get/set``).

Each ``LiveSetting`` knows how to read its current value and how to parse, check and
apply a new one. A change lasts until the process restarts: the configuration file,
environment and flags stay the source of truth for startup, so a restart never
surprises anyone with a value set weeks ago from a shell history.

Scanner pace lives in the engine's ``ScannerConfig`` (``store.scanner.cfg``); a rate of 0
stops the periodic scan (an explicit ``heal start`` still runs, at the default pace).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from buckets.obs.endpoints import METRICS_AUTH_MODES, OpsEndpoints
from buckets.obs.logs import LOG_LEVELS, current_log_level, set_log_level

DEFAULT_CYCLE_PAUSE = 60.0  # seconds between periodic scanner passes
SCANNER_OFF_PAUSE = 1e9  # "never": a periodic pass every 30 years
MANUAL_PACE = 100.0  # objects/s of an explicit heal while the periodic scan is off


def apply_scanner_rate(scanner_cfg: Any, rate: float) -> None:
    """Set the scanner's object pace on an engine ``ScannerConfig``; 0 turns the periodic scan off."""
    if rate == 0:
        scanner_cfg.cycle_pause = SCANNER_OFF_PAUSE
        scanner_cfg.objects_per_sec = MANUAL_PACE
    else:
        scanner_cfg.cycle_pause = DEFAULT_CYCLE_PAUSE
        scanner_cfg.objects_per_sec = rate


def make_scanner_config(rate: float, mb_rate: float) -> Any:
    """The engine ``ScannerConfig`` for a server started with these settings."""
    from buckets.engine.scanner import ScannerConfig

    cfg = ScannerConfig(mb_per_sec=mb_rate)
    apply_scanner_rate(cfg, rate)
    return cfg


def _number(value: object, name: str, *, minimum: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: a JSON integer of 309+ digits
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(number) or math.isinf(number) or number < minimum or (strict and number == minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    return number


def _choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True, slots=True)
class LiveSetting:
    name: str
    help: str
    parse: Callable[[object], Any]
    read: Callable[[], Any]
    apply: Callable[[Any], None]


class LiveSettings:
    """The table of live settings of one node."""

    def __init__(self, store: Any, endpoints: OpsEndpoints, *, scanner_rate: float) -> None:
        self.store = store
        self.endpoints = endpoints
        self.scanner_rate = scanner_rate
        scanner_cfg = store.scanner.cfg
        self.table: dict[str, LiveSetting] = {setting.name: setting for setting in (
            LiveSetting("scanner_rate", "objects per second the background scanner verifies; 0 stops "
                        "the periodic scan", lambda v: _number(v, "scanner_rate", minimum=0, strict=False),
                        lambda: self.scanner_rate, self._set_scanner_rate),
            LiveSetting("scanner_mb_rate", "megabytes per second the scanner may read for deep checks",
                        lambda v: _number(v, "scanner_mb_rate", minimum=0, strict=True),
                        lambda: scanner_cfg.mb_per_sec, lambda v: setattr(scanner_cfg, "mb_per_sec", v)),
            LiveSetting("log_level", f"lowest level logged: {', '.join(LOG_LEVELS)}",
                        lambda v: _choice(v, "log_level", LOG_LEVELS), current_log_level, set_log_level),
            LiveSetting("metrics_auth", "who may read /metrics: public, or bearer (needs metrics_token)",
                        lambda v: _choice(v, "metrics_auth", METRICS_AUTH_MODES),
                        lambda: endpoints.metrics_auth, endpoints.set_metrics_auth),
        )}

    def _set_scanner_rate(self, rate: float) -> None:
        was_off = self.scanner_rate == 0
        apply_scanner_rate(self.store.scanner.cfg, rate)
        self.scanner_rate = rate
        if was_off and rate > 0:
            # The scan loop is asleep for "never"; a pass now puts it back on its period.
            self.store.scanner.trigger()

    def describe(self) -> dict[str, dict[str, Any]]:
        return {name: {"value": setting.read(), "help": setting.help} for name, setting in self.table.items()}

    def update(self, changes: dict[str, object]) -> dict[str, Any]:
        """Check every change first, then apply them all; raises ValueError naming the first bad one."""
        parsed: dict[str, Any] = {}
        for name, raw in changes.items():
            setting = self.table.get(name)
            if setting is None:
                raise ValueError(f"unknown live setting {name!r} (live settings: {', '.join(self.table)})")
            parsed[name] = setting.parse(raw)
        if parsed.get("metrics_auth") == "bearer" and not self.endpoints.metrics_token:
            raise ValueError("metrics_auth 'bearer' needs a token: set BUCKETS_METRICS_TOKEN "
                             "(or metrics_token in the config file) and restart")
        for name, value in parsed.items():
            self.table[name].apply(value)
        return {name: self.table[name].read() for name in parsed}
