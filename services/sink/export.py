"""`fastdistill export RUN --format F`: another format of a released run, from its released
files alone (nothing recomputed, no broker needed).

Each part's rows are read back (checked against their SHA-256), staged and merged as the sink
does, and handed to the format, so an export writes what the sink would have written had the
format been configured: same order, same parts, same layout under the target folder, plus
EXPORT.json with the SHA-256 of every file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from services.sink.formats import ReleasedPart, SinkFormat
from services.sink.released import ReleasedRun
from services.sink.staging import PartStager
from services.sink.writer import sha256

EXPORT = "EXPORT.json"


def export_run(run: ReleasedRun, fmt: SinkFormat, target: Path) -> dict[str, Any]:
    target.mkdir(parents=True, exist_ok=True)
    scratch = target / ".export-staging"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        parts = []
        for part, columns in run.parts():
            stager = PartStager(scratch / part.key, [name for name, _ in columns])
            for row in run.rows(part, columns):
                stager.add(row)
            parts.append(ReleasedPart(part, stager.merge()))
        written = fmt.write(parts, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record = {
        "run_id": run.run_id,
        "format": fmt.name,
        "options": fmt.options.model_dump(mode="json"),
        "released": sha256(run.folder / "RELEASED.json"),
        "files": {name: written.sha256.get(name) or sha256(target / name) for name in sorted(written.files)},
        "notes": written.notes,
    }
    (target / EXPORT).write_text(json.dumps(record, indent=2, sort_keys=True))
    return record
