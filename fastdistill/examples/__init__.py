"""The examples a wheel carries: `fastdistill example NAME DIR` copies one out to run it.

`fastdistill/examples/<name>/` links to the files of the source tree's `examples/<name>/`
(the one copy; compose, k8s, the tests and the benchmarks use it there), and setuptools
packages what the links point at.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path


def _shipped() -> dict[str, Traversable]:
    return {
        entry.name: entry
        for entry in files(__name__).iterdir()
        if entry.is_dir() and not entry.name.startswith(("_", "."))
    }


def names() -> list[str]:
    return sorted(_shipped())


def copy_example(name: str, dest: Path) -> Path:
    """Copy example `name` to `dest/examples/<name>/` and return that folder.

    That is where the pipeline's relative paths (`sql_eval`'s `db_path`) and the default
    `FD_PIPELINE` expect it, so commands run from `dest` work as they do in a checkout.
    Files already there are never overwritten.
    """
    source = _shipped().get(name)
    if source is None:
        raise ValueError(f"no example {name!r}; there are: {', '.join(names())}")
    target = dest / "examples" / name
    entries = [entry for entry in source.iterdir() if entry.is_file()]
    clash = [str(target / entry.name) for entry in entries if (target / entry.name).exists()]
    if clash:
        raise FileExistsError(f"already there, not overwritten: {', '.join(clash)}")
    target.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        (target / entry.name).write_bytes(entry.read_bytes())
    return target
