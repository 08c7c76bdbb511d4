"""The Hypothesis profile of `make test-fast` (loaded by `-p tests.fast_profile --hypothesis-profile=fast`).

A plugin rather than conftest.py because the profile must exist before Hypothesis' pytest plugin
loads it at configure time. Everything is as in the full suite (no deadline: see conftest.py)
except the fuzz test's example count, which reads the profile's name (tests/fuzz/test_seed_fuzz.py).
"""

from __future__ import annotations

from hypothesis import settings

FAST = "fast"

settings.register_profile(FAST, deadline=None)
