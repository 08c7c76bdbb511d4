"""Fresh virtual environments outside the source tree, for the packaging tests.

The project's wheel is built once per session from a copy of the source tree (no stale
`build/`, nothing written into the checkout); each test module installs it into a venv of its
own and runs commands from a temporary folder with no variable pointing back at the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Never copied into a build: environments, caches, outputs, and what a previous build left.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "out", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)
#: pip of this interpreter, pointed at another venv with --python (that venv needs none of its own)
PIP = [sys.executable, "-m", "pip"]


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done


def build_wheel(source: Path, dist: Path) -> Path:
    """The wheel of the package at `source`, built from a copy of it, offline (with this venv's
    setuptools: the build-system requirements are dev dependencies)."""
    copy = dist.parent / f"{source.name}-source"
    shutil.copytree(source, copy, symlinks=True, ignore=NOT_SOURCE)
    run([*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), "."], copy)
    (wheel,) = dist.glob("*.whl")
    return wheel


def new_venv(path: Path) -> Path:
    # No pip of its own: this one installs into it (the venv's own pip would only cost time).
    run([sys.executable, "-m", "venv", "--without-pip", str(path)], path.parent)
    return path


def install(venv: Path, *args: str) -> None:
    run([*PIP, "--python", str(venv / "bin" / "python"), "install", "-q", *args], venv.parent)


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python*/site-packages")
    return found


def borrow_dependencies(venv: Path) -> None:
    """Make this environment's installed packages importable in `venv`, after its own: a `.pth`
    line naming our site-packages. Python adds that folder to sys.path as it is and reads no
    `.pth` file inside it, so the checkout's editable install (one of those) stays invisible:
    the project itself must come from what `venv` installs."""
    here = Path(sysconfig.get_paths()["purelib"])
    (site_packages(venv) / "_borrowed_dependencies.pth").write_text(f"{here}\n")


def outside_env(venv: Path, home: Path, **extra: str) -> dict[str, str]:
    """The machine's environment less anything that could point at the checkout or configure a service."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        and not k.startswith(("FD_", "KAFKA_", "OPENAI_", "SCHEMA_REGISTRY_"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(home / "xdg-cache")
    return env | extra
