"""clean_sql: the first SQL statement in a teacher's free-form answer.

Teachers wrap SQL in reasoning, fences, labels and explanations. The order of the rules
follows how explicit the model was: a fenced block is a deliberate answer, a `SQL:` label
less so, a line that merely starts with a keyword least of all.
"""

from __future__ import annotations

import re
from typing import ClassVar

from shared.step import Row, Step, StepParams

_TAGS = "think|analysis|reasoning"
_BLOCK = re.compile(rf"<({_TAGS})\b[^>]*>.*?</\1\s*>", re.I | re.S)
# An unclosed block is reasoning cut off by max_tokens: nothing after it is an answer.
_UNCLOSED = re.compile(rf"<({_TAGS})\b[^>]*>.*", re.I | re.S)
# Some chat templates put the opening tag in the prompt, so only the closing one arrives.
_STRAY_CLOSE = re.compile(rf"^.*</({_TAGS})\s*>", re.I | re.S)

_SQL_FENCE = re.compile(r"```[ \t]*sql\b[^\n]*\n(.*?)(?:```|\Z)", re.I | re.S)
_ANY_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)
_LABEL = re.compile(r"\bsql\s*:", re.I)
_KEYWORDS = "SELECT|WITH|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|ATTACH|REPLACE|VALUES|EXPLAIN"
# Upper case first: prose such as "With the schema above, ..." starts with a keyword too.
_KEYWORD_LINES = (
    re.compile(rf"^[ \t]*(?:{_KEYWORDS})\b", re.M),
    re.compile(rf"^[ \t]*(?:{_KEYWORDS})\b", re.M | re.I),
)
_EXPLANATION = re.compile(r"^[ \t]*(?:(?:explanation|this query|the query|here)\b|note:)", re.M | re.I)


def strip_reasoning(text: str) -> str:
    text = _BLOCK.sub("", text)
    text = _STRAY_CLOSE.sub("", text)
    return _UNCLOSED.sub("", text)


def locate_sql(text: str) -> str:
    """The part of `text` the SQL starts in (may run on into prose); '' if there is none."""
    for fence in (_SQL_FENCE, _ANY_FENCE):
        match = fence.search(text)
        if match:
            return match.group(1)
    label = _LABEL.search(text)
    if label:
        return text[label.end() :]
    for keyword_line in _KEYWORD_LINES:
        match = keyword_line.search(text)
        if match:
            return text[match.start() :]
    return ""


def first_statement(sql: str) -> str:
    """Up to the first `;` that is not inside a quote or a comment, without the `;`."""
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            end = sql.find(close, i + 1)
            # A doubled quote is an escaped quote, so scanning on from `end + 1` handles it.
            i = n if end < 0 else end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch == ";":
            return sql[:i]
        else:
            i += 1
    return sql


def extract_sql(text: str | None) -> str:
    """The first SQL statement in `text`, ending with ';', or '' if there is none."""
    if not text:
        return ""
    candidate = locate_sql(strip_reasoning(text))
    explanation = _EXPLANATION.search(candidate)
    if explanation:
        candidate = candidate[: explanation.start()]
    statement = first_statement(candidate).strip()
    if not statement:
        return ""
    # A trailing `-- comment` would swallow a `;` put on the same line.
    closed = f"{statement};"
    return closed if first_statement(closed) == statement else f"{statement}\n;"


class CleanSqlParams(StepParams):
    field: str = "generation"
    output: str = "sql"


class CleanSqlStep(Step[CleanSqlParams]):
    name: ClassVar[str] = "clean_sql"
    outputs: ClassVar[tuple[str, ...]] = ("sql",)

    def renamed(self) -> dict[str, str]:
        return {"sql": self.params.output}

    def reads(self) -> set[str]:
        return {self.params.field}

    def process_row(self, row: Row) -> Row | None:
        text = row.get(self.params.field)
        if text is not None and not isinstance(text, str):
            raise TypeError(f"clean_sql: {self.params.field!r} is {type(text).__name__}, not a string")
        return {**row, self.params.output: extract_sql(text)}
