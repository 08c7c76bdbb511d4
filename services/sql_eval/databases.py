"""Which database file a row's SQL runs against: one fixed file, or one per row from a folder.

A per-row database is named by a row column (Spider and BIRD call it `db_id`), so the name is
untrusted input. Only a safe name is looked up (letters, digits, `_`, `-`; no dots, slashes or
leading dash), and only a regular file whose real path (symlinks resolved) lies inside the folder
is used, at `<db_dir>/<db_id>.sqlite` or, as Spider lays it out, `<db_dir>/<db_id>/<db_id>.sqlite`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

#: A database name as seeds and rows may carry it (also what `services.seeds.model.Seed` accepts).
DB_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$"
_DB_ID = re.compile(DB_ID_PATTERN)
#: Names resolved and remembered (a pipeline has a handful of databases; the cap bounds hostile rows).
_CACHE_SIZE = 1024


def database_file(path: str | Path) -> Path:
    """The absolute path of an existing database file; a clear error naming it otherwise."""
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"sql_eval: database {path} does not exist (resolved to {resolved})")
    return resolved


class DatabaseFolder:
    """`<folder>/<db_id>.sqlite` or `<folder>/<db_id>/<db_id>.sqlite`, never anything outside."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"sql_eval: database folder {folder} does not exist (resolved to {self.folder})"
            )
        self._found: OrderedDict[str, Path] = OrderedDict()

    def path(self, db_id: object) -> Path:
        """The database file of `db_id`; ValueError for an unsafe name, FileNotFoundError if absent."""
        if not isinstance(db_id, str) or not _DB_ID.match(db_id):
            raise ValueError(f"sql_eval: database name {db_id!r} is not a safe name ({DB_ID_PATTERN})")
        found = self._found.get(db_id)
        if found is not None:
            self._found.move_to_end(db_id)
            return found
        found = self._lookup(db_id)
        self._found[db_id] = found
        if len(self._found) > _CACHE_SIZE:
            self._found.popitem(last=False)
        return found

    def _lookup(self, db_id: str) -> Path:
        candidates = (self.folder / f"{db_id}.sqlite", self.folder / db_id / f"{db_id}.sqlite")
        for candidate in candidates:
            if not candidate.exists():
                continue
            real = candidate.resolve()
            if not real.is_relative_to(self.folder):
                raise ValueError(f"sql_eval: database {db_id!r} resolves outside {self.folder}")
            if real.is_file():
                return real
        looked = f"{db_id}.sqlite and {db_id}/{db_id}.sqlite"
        raise FileNotFoundError(f"sql_eval: no database {db_id!r} in {self.folder} (looked for {looked})")
