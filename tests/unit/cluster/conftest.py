"""Fixtures for every test of this directory."""

import pytest

from buckets.cluster import index


@pytest.fixture(autouse=True)
def _settle_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anti-entropy compares differing ranges again a second apart before exchanging them
    (``SETTLE_SECONDS``); these tests' replicas disagree for good or not at all, and their
    passes would each wait seconds."""
    monkeypatch.setattr(index, "SETTLE_SECONDS", 0.0)
