"""Headless Chromium for the browser tests (Playwright driving Debian's chromium, which
`make tools` installs; Playwright's own browser download does not work here). The tests
skip, saying why, where no browser can run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_executable() -> str | None:
    explicit = os.environ.get("BUCKETS_TEST_CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def launch_browser() -> Iterator[object]:
    """A generator for a module-scoped fixture: one headless Chromium, closed afterwards."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed ({exc}); `make test` installs it")
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no chromium on this machine (`make tools` installs Debian's chromium)")
    manager = sync_playwright().start()
    try:
        try:
            chromium = manager.chromium.launch(executable_path=executable, headless=True)
        except PlaywrightError as exc:
            pytest.skip(f"chromium at {executable} cannot run here: {str(exc).splitlines()[0]}")
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        manager.stop()
