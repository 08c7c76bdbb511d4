"""Every command the docs show works as typed.

Broker-free: each `bin/fastdistill ...` in a ```sh block of README.md or docs/*.md names a command
and options the CLI has. With a broker: the blocks marked `<!-- doc-test -->` run in order, per
doc, in one shell session (variables carry from block to block), in a scratch folder that
links the checkout's files, so `out/` and `.cache/stack` land in the scratch folder; each must
exit 0, and a failing one fails the test naming its file and line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_readme_commands import assert_cli_command_exists
from tests.docs.doc_blocks import REPO, Block, cli_invocations, doc_files, misplaced_markers, sh_blocks

#: Left out of the scratch folder: what the commands write (and the git metadata).
NOT_LINKED = {".git", "out", ".cache"}
#: One block's limit: `up` of the tutorial takes ~30-60 s on 2 shared cores.
BLOCK_TIMEOUT_S = 240


def _all_invocations() -> list[tuple[str, str]]:
    return [(b.where, c) for d in doc_files() for b in sh_blocks(d) for c in cli_invocations(b)]


def _runnable() -> dict[Path, list[Block]]:
    found = {d: [b for b in sh_blocks(d) if b.runnable] for d in doc_files()}
    return {d: bs for d, bs in found.items() if bs}


@pytest.mark.parametrize(("where", "command"), _all_invocations(), ids=lambda v: str(v))
def test_every_doc_command_exists_with_the_options_shown(where: str, command: str) -> None:
    try:
        assert_cli_command_exists(command)
    except AssertionError as exc:
        raise AssertionError(f"{where}: {exc}") from None


def test_the_docs_mark_runnable_blocks_where_they_are_read() -> None:
    assert [m for d in doc_files() for m in misplaced_markers(d)] == []
    tutorial = [b.text for b in _runnable()[REPO / "docs" / "tutorial.md"]]
    # The tutorial's whole path is run: validate, up, the inspection commands and export.
    joined = "".join(tutorial)
    for command in ("validate", "up --seeds", "runs", "status", "dlq", "tail", "export"):
        assert f"bin/fastdistill {command}" in joined, command


def _scratch(tmp_path: Path) -> Path:
    """A folder that looks like the checkout (links to its files) but keeps what runs write."""
    root = tmp_path / "checkout"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in NOT_LINKED:
            (root / entry.name).symlink_to(entry)
    # The local broker's jars, if this checkout has them (not its data: the test's broker is given).
    (root / ".cache").mkdir()
    if (REPO / ".cache" / "kafka").exists():
        (root / ".cache" / "kafka").symlink_to(REPO / ".cache" / "kafka")
    return root


def _run_in_order(blocks: list[Block], cwd: Path, env: dict[str, str]) -> None:
    state = cwd.parent / f"{blocks[0].doc.stem}.env.sh"
    state.write_text("")
    for block in blocks:
        # set -a: a variable a block sets (RUN=...) is there for the next block too.
        script = f"set -a -eo pipefail\nsource {state}\n{block.text}\nexport -p > {state}\n"
        try:
            done = subprocess.run(
                ["bash", "-c", script],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{block.where}: still running after {BLOCK_TIMEOUT_S} s") from None
        assert done.returncode == 0, (
            f"{block.where}: exit {done.returncode}\n{block.text}"
            f"--- stdout ---\n{done.stdout[-2000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
        )


@pytest.mark.kafka
def test_marked_doc_blocks_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FD_", "OPENAI_"))}
    env |= {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "HOME": str(tmp_path)}
    runnable = _runnable()
    assert REPO / "docs" / "tutorial.md" in runnable
    for blocks in runnable.values():
        _run_in_order(blocks, root, env)
    # The tutorial's run was released where it says, with its kept set as chat JSONL.
    (run,) = (root / "out" / "tutorial").glob("run-*")
    assert (run / "RELEASED.json").is_file()
    assert (run / "keep_good" / "chat.jsonl").read_text().count('"role": "assistant"') > 0
    assert (run / "exports" / "hf").is_dir() and (root / "out" / "tutorial-parquet").is_dir()


def test_a_failing_marked_block_names_its_file_and_line(tmp_path: Path) -> None:
    doc = REPO / "docs" / "tutorial.md"
    blocks = [Block(doc, 7, "true\nX=1\n", True), Block(doc, 12, 'test "$X" = 2\n', True)]
    with pytest.raises(AssertionError, match=r"^docs/tutorial\.md:12: exit 1"):
        _run_in_order(blocks, tmp_path, dict(os.environ))
