"""Fixtures for every test of this directory."""

import pytest

from buckets.cluster import index


@pytest.fixture(autouse=True)
def _exchange_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's anti-entropy pass compares differing ranges twice more, a second apart, before
    exchanging them (``SETTLE_CHECKS``, ``SETTLE_SECONDS``). These tests' passes exchange at
    once, as before that rule: the history tests run a pass every 10-50 ms precisely to copy
    writes still in flight (as a lease's catch-up and an index move still do), and their
    passes would each wait seconds. The settle itself is tested with ``exchange(settle=...)``
    (``test_index_replication.py``) and on real clusters (tests/cluster)."""
    monkeypatch.setattr(index, "SETTLE_CHECKS", 0)
    monkeypatch.setattr(index, "SETTLE_SECONDS", 0.0)
