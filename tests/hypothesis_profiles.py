"""Hypothesis profiles: ``ci`` (the default) and ``fuzz`` (``HYPOTHESIS_PROFILE=fuzz``).

A random example must never decide whether a change lands, so ``make test`` and CI run
``ci``: derandomized (the same examples on every run and every machine, chosen from the
test's own source), no example database (nothing a previous run left behind changes the
next one), and no deadline (the machine is shared: a slow example is not a failure).
``make test-fuzz`` runs ``fuzz``: random seeds, many more examples, a local database so
a failure it finds is replayed first on the next run, and the failing example printed
as a reproducible blob (``@reproduce_failure``).

Tests that pin ``max_examples`` themselves keep their count in both profiles; the
fuzzing tests (tests/unit/auth/test_auth_fuzz.py) leave it to the profile.
``HYPOTHESIS_MAX_EXAMPLES`` overrides the fuzz profile's count.
"""

from __future__ import annotations

import os

from hypothesis import settings

CI = "ci"
FUZZ = "fuzz"

settings.register_profile(CI, derandomize=True, database=None, print_blob=True, deadline=None)
settings.register_profile(FUZZ, derandomize=False, print_blob=True, deadline=None,
                          max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "3000")))


def load() -> str:
    """Load the profile named by ``HYPOTHESIS_PROFILE`` (default ``ci``); returns its name.

    An unknown name fails loudly (hypothesis raises InvalidArgument) rather than falling
    back to random examples.
    """
    name = os.environ.get("HYPOTHESIS_PROFILE", CI)
    settings.load_profile(name)
    return name
