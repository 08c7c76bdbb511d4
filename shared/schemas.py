"""Locating and loading the Avro schemas of the `schemas` package (the top-level `schemas/` folder).

They are package data, so a wheel install finds them as well as an editable one;
`FD_SCHEMAS_DIR` points at a folder of one's own instead.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any


def _schemas_dir() -> Traversable:
    override = os.environ.get("FD_SCHEMAS_DIR")
    return Path(override) if override else files("schemas")


SCHEMAS_DIR = _schemas_dir()


def _file(relpath: str) -> Traversable:
    path = Path(relpath)
    if path.is_absolute():  # taken as it is, as pathlib's `/` did before the schemas were package data
        return path
    # One segment at a time: not every Traversable (a zipped package's) takes "a/b" in one step.
    return SCHEMAS_DIR.joinpath(*path.parts)


@cache
def _load(relpath: str) -> dict[str, Any]:
    # A missing file raises FileNotFoundError (shared.step relies on it).
    record: dict[str, Any] = json.loads(_file(relpath).read_text(encoding="utf-8"))
    return record


def load_avsc(relpath: str) -> dict[str, Any]:
    """A fresh copy of the parsed `.avsc` at `schemas/<relpath>`."""
    return copy.deepcopy(_load(relpath))


def load_avsc_file(path: Path) -> dict[str, Any]:
    """A parsed `.avsc` anywhere (a step of another package keeps its schema beside its code)."""
    with open(path, encoding="utf-8") as fh:
        record: dict[str, Any] = json.load(fh)
    return record
