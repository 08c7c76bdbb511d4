"""The pytest plugin of `make test-fast` (`-p tests.fast_loop --hypothesis-profile=fast`).

- The Hypothesis profile `fast`: as in the full suite (no deadline: see conftest.py), and the
  fuzz test reads the profile's name to run 500 examples instead of 5,000
  (tests/fuzz/test_seed_fuzz.py). A plugin rather than conftest.py because the profile must
  exist before Hypothesis' pytest plugin loads it at configure time.
- The branch coverage printed is that of the runtime (shared/runtime) by its own tests
  (tests/runtime): every other test runs untraced. Tracing them too gave the same figure, line
  for line, for ~60% more CPU over the whole loop (Python 3.11's tracer sees every call).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

FAST = "fast"
RUNTIME_TESTS = Path(__file__).resolve().parent / "runtime"

settings.register_profile(FAST, deadline=None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not item.path.is_relative_to(RUNTIME_TESTS):
            item.add_marker(pytest.mark.no_cover)  # pytest-cov pauses its tracer for the test's call
