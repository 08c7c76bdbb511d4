"""The README's "Using it" commands work as typed once `make run` (or `make install`) made .venv:
`bin/fastdistill` runs the checkout's own CLI, from the checkout's root, without activating
anything. Every command of that block is checked against the CLI (the command exists, the
options it shows are its options), and `make install`'s editable install prints no warning."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastdistill.cli import app

REPO = Path(__file__).resolve().parents[2]
SHIM = "bin/fastdistill"


def _using_it_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using it", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def _typed(command: str) -> subprocess.CompletedProcess[str]:
    """`command` as a user types it in a shell at the checkout's root (PATH without .venv/bin)."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p)
    env = os.environ | {"PATH": path}
    return subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_every_using_it_command_goes_through_the_shim() -> None:
    commands = _using_it_commands()
    assert len(commands) >= 10
    assert all(c.startswith(f"{SHIM} ") for c in commands), commands


@pytest.mark.parametrize("command", _using_it_commands())
def test_using_it_command_exists_with_the_options_shown(command: str) -> None:
    assert_cli_command_exists(command)


@functools.cache
def _help(path: tuple[str, ...]) -> str | None:
    """`fastdistill <path> --help` as printed, None when it fails. In process (the shim is
    tested on its own below): a subprocess per documented command cost ~5 s each, minutes in all."""
    # Wide enough that no option name is cut or wrapped.
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    return result.output if result.exit_code == 0 else None


def assert_cli_command_exists(command: str) -> None:
    """`command` (`bin/fastdistill ...` as a doc shows it) names a command of the CLI, and every
    long option it shows is one of that command's (tests/docs checks every doc's commands so)."""
    words = command.split()[1:]
    # The command's words run up to the first placeholder, file, option or alternative.
    path = []
    for word in words:
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        path.append(word)
    help_text = _help(tuple(path))
    assert help_text is not None, f"`{command}`: no such command"
    for option in re.findall(r"--[a-z][a-z-]*", command):
        assert option in help_text, f"`{command}`: {option} not in `{' '.join(path)} --help`"


def test_the_shim_runs_from_the_checkout_root_and_says_when_nothing_is_installed(tmp_path: Path) -> None:
    done = _typed(f"{SHIM} --help")
    assert done.returncode == 0 and "Usage: fastdistill" in done.stdout
    # Typed as shown, a command that does something: this checkout's broker on a port nobody uses.
    done = _typed(f"{SHIM} dev broker status --port 1")
    assert done.returncode == 1 and done.stderr.splitlines()[0] == "stopped"
    # A checkout without .venv: one line saying what to run, not a shell error.
    (tmp_path / "bin").mkdir()
    (tmp_path / SHIM).write_bytes((REPO / SHIM).read_bytes())
    (tmp_path / SHIM).chmod(0o755)
    done = subprocess.run([str(tmp_path / SHIM), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 127 and "make install" in done.stderr


@pytest.mark.slow
def test_editable_install_prints_no_warning(tmp_path: Path) -> None:
    """What `make install` runs (a fresh venv, pip upgraded, `pip install -q -e .`), without the
    dependencies. (pip before 24 hid the build backend's warnings; the upgraded one shows them.)"""
    venv = tmp_path / "venv"
    pip = str(venv / "bin" / "pip")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([pip, "install", "-q", "--upgrade", "pip"], check=True, capture_output=True, timeout=300)
    done = subprocess.run(
        [pip, "install", "-q", "--no-deps", "-e", str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "warning" not in output.lower() and "!!" not in output, output
    # And the install works: the packages import from this checkout.
    code = "import fastdistill, services, shared; print(fastdistill.__file__)"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == str(REPO / "fastdistill" / "__init__.py"), out.stderr
