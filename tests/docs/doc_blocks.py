"""The fenced ```sh blocks of README.md and docs/*.md, with where they are: what the doc tests
read. A block is runnable when the line right before its fence is `<!-- doc-test -->`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- doc-test -->"
SHIM = "bin/fastdistill"


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    text: str
    runnable: bool

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def sh_blocks(doc: Path) -> list[Block]:
    lines = doc.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```sh":
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"{doc.relative_to(REPO)}:{i + 1}: a ```sh block that never closes")
        marked = i > 0 and lines[i - 1].strip() == MARKER
        blocks.append(Block(doc, i + 1, "\n".join(lines[i + 1 : end]) + "\n", marked))
        i = end + 1
    return blocks


def misplaced_markers(doc: Path) -> list[str]:
    """Markers not right before a ```sh fence: they would silently mark nothing."""
    lines = doc.read_text().splitlines()
    return [
        f"{doc.relative_to(REPO)}:{i + 1}"
        for i, line in enumerate(lines)
        if line.strip() == MARKER and (i + 1 >= len(lines) or lines[i + 1].strip() != "```sh")
    ]


def cli_invocations(block: Block) -> list[str]:
    """Each `bin/fastdistill ...` of a block, up to the end of its shell command (a pipe, `)`,
    `&`, `;` or a comment), e.g. `bin/fastdistill runs` out of `RUN=$(bin/fastdistill runs | ...)`."""
    found = []
    for line in block.text.splitlines():
        for match in re.finditer(re.escape(SHIM) + r"(?=\s|$)([^|;&)#]*)", line):
            found.append(f"{SHIM}{match.group(1)}".strip())
    return found
