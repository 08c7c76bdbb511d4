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


def step_fields(step_name: str, rename: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The fields `schemas/steps/<step_name>.avsc` declares, with output names remapped.

    A step whose output column is a parameter (hash's `output`, canonicalize's `output`)
    declares it under its default name and passes `{default: chosen}` here.
    """
    path = SCHEMAS_DIR / "steps" / f"{step_name}.avsc"
    if not path.exists():
        return []
    fields = load_avsc(f"steps/{step_name}.avsc")["fields"]
    for field in fields:
        field["name"] = (rename or {}).get(field["name"], field["name"])
    return fields
