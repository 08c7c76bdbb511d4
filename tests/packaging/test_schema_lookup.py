"""Where `shared.schemas` finds the Avro files: the `schemas` package, or FD_SCHEMAS_DIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import schemas
from shared.schemas import SCHEMAS_DIR, load_avsc

REPO = Path(__file__).resolve().parents[2]


def test_the_packaged_schemas_are_the_source_folder() -> None:
    assert Path(str(SCHEMAS_DIR)) == Path(schemas.__file__).parent == REPO / "schemas"
    batch = load_avsc("envelope/batch.avsc")
    assert batch == json.loads((REPO / "schemas" / "envelope" / "batch.avsc").read_text())
    # A fresh copy each time: a caller editing its record cannot change the next caller's.
    batch["fields"].clear()
    assert load_avsc("envelope/batch.avsc")["fields"]


def test_an_absolute_path_is_read_as_it_is(tmp_path: Path) -> None:
    own = tmp_path / "own.avsc"
    own.write_text(json.dumps({"type": "record", "name": "Own", "fields": []}))
    assert load_avsc(str(own))["name"] == "Own"


def test_a_missing_schema_raises_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        load_avsc("steps/no_such_step.avsc")


def test_fd_schemas_dir_replaces_the_packaged_folder(tmp_path: Path) -> None:
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "dedup.avsc").write_text(
        json.dumps({"type": "record", "name": "Mine", "fields": []})
    )
    code = "from shared.schemas import load_avsc; print(load_avsc('steps/dedup.avsc')['name'])"
    env = os.environ | {"FD_SCHEMAS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Mine"
