"""Locating and loading the Avro schemas kept in the repository's `schemas/` folder."""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

# The project is installed editable (also in the image), so `schemas/` sits beside `shared/`.
SCHEMAS_DIR = Path(os.environ.get("FD_SCHEMAS_DIR", Path(__file__).resolve().parents[1] / "schemas"))


@cache
def _load(relpath: str) -> dict[str, Any]:
    with open(SCHEMAS_DIR / relpath, encoding="utf-8") as fh:
        return json.load(fh)


def load_avsc(relpath: str) -> dict[str, Any]:
    """A fresh copy of the parsed `.avsc` at `schemas/<relpath>`."""
    return copy.deepcopy(_load(relpath))


def load_avsc_file(path: Path) -> dict[str, Any]:
    """A parsed `.avsc` anywhere (a step of another package keeps its schema beside its code)."""
    with open(path, encoding="utf-8") as fh:
        record: dict[str, Any] = json.load(fh)
    return record
