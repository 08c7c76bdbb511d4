"""The project's wheel, built once per session for every packaging test that installs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.venvs import REPO, build_wheel


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(REPO, tmp_path_factory.mktemp("wheel") / "dist")
