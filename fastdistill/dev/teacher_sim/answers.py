"""The simulator's answer book and the seeded rule that decides how each answer is worded.

Pure: no I/O beyond loading the book. Every choice comes from a SHA-256 of (seed, purpose,
prompt), so the same prompt always gets the same answer and a rerun is reproducible without
sharing any RNG state between requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fastdistill.ingest import BOM, read_records

log = logging.getLogger(__name__)

UNKNOWN_ANSWER = "SELECT 1;"

_QUESTION = re.compile(r"Question:\s*(?P<q>.*?)\s*(?:\n\s*SQL:|\Z)", re.DOTALL)


class Style(StrEnum):
    PLAIN = "plain"
    FENCED = "fenced"
    THINK = "think"
    EXPLAINED = "explained"
    WRONG = "wrong"  # runs, but answers a different question
    ERROR = "error"  # fails to execute (missing column or syntax)


CORRECT_STYLES: tuple[Style, ...] = (Style.PLAIN, Style.FENCED, Style.THINK, Style.EXPLAINED)


class StyleMix(BaseModel):
    """Shares of correct / wrong-but-runs / failing answers; normalised, so only ratios matter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    correct: float = Field(0.60, ge=0)
    wrong: float = Field(0.25, ge=0)
    error: float = Field(0.15, ge=0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> StyleMix:
        if self.correct + self.wrong + self.error <= 0:
            raise ValueError("style mix needs at least one positive share")
        return self


def unit(*parts: object) -> float:
    """A deterministic float in [0, 1) from the given parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(u: float, n: int) -> int:
    return min(int(u * n), n - 1)


def normalise_question(text: str) -> str:
    # Seeds and prompts may differ in whitespace only (templates, YAML folding).
    return " ".join(text.split())


def question_of(prompt: str) -> str | None:
    """The instruction inside `Schema: …\\nQuestion: …\\nSQL:`, or None if the prompt is not one."""
    match = _QUESTION.search(prompt)
    return normalise_question(match.group("q")) if match else None


class AnswerBook:
    """instruction → gold SQL."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = {normalise_question(k): v for k, v in (answers or {}).items()}

    @classmethod
    def load(cls, path: Path | str | None) -> AnswerBook:
        """From a seed file (`instruction`, `gold_sql` per record; JSONL or CSV, read as
        `fastdistill produce` reads it) or a JSON object instruction → SQL. Records that cannot
        be read are skipped and named in one warning: a simulator serves the rest."""
        if path is None:
            return cls()
        path = Path(path)
        mapping = _json_map(path.read_bytes())
        if mapping is not None:
            return cls(mapping)
        answers: dict[str, str] = {}
        skipped: list[str] = []
        for record in read_records(path):
            value, where = record.value, f"{record.origin.file}:{record.origin.line}"
            if isinstance(value, Exception) or not isinstance(value, dict):
                skipped.append(f"{where}: {value if isinstance(value, Exception) else 'not an object'}")
                continue
            instruction, gold = value.get("instruction"), value.get("gold_sql")
            if isinstance(instruction, str) and isinstance(gold, str) and instruction and gold:
                answers[instruction] = gold
        if skipped:
            log.warning(
                "teacher-sim: skipped %d unreadable record(s) of %s: %s%s",
                len(skipped),
                path,
                "; ".join(skipped[:5]),
                "; ..." if len(skipped) > 5 else "",
            )
        return cls(answers)

    def __len__(self) -> int:
        return len(self.answers)

    def gold_for(self, prompt: str) -> str | None:
        question = question_of(prompt)
        return None if question is None else self.answers.get(question)

    def answer(self, prompt: str, seed: int, mix: StyleMix) -> tuple[str, Style | None]:
        """The completion text for `prompt` and the style used (None for an unknown prompt)."""
        gold = self.gold_for(prompt)
        if gold is None:
            return UNKNOWN_ANSWER, None
        style = choose_style(prompt, seed, mix)
        return render(gold, style, prompt, seed), style


def _json_map(data: bytes) -> dict[str, str] | None:
    """The book as one JSON object of instruction → SQL, or None if the file is not one."""
    try:
        value = json.loads(data.removeprefix(BOM).decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or JSONL with more than one line
        return None
    if isinstance(value, dict) and "instruction" not in value:
        return {str(k): str(v) for k, v in value.items()}
    return None


def choose_style(prompt: str, seed: int, mix: StyleMix) -> Style:
    total = mix.correct + mix.wrong + mix.error
    u = unit(seed, "style", prompt) * total
    if u < mix.correct:
        # Reuse the position inside the correct band so the four variants split it evenly.
        return CORRECT_STYLES[pick(u / mix.correct, len(CORRECT_STYLES))]
    if u < mix.correct + mix.wrong:
        return Style.WRONG
    return Style.ERROR


def _sql(gold: str) -> str:
    sql = gold.strip()
    return sql if sql.endswith(";") else sql + ";"


def _body(gold: str) -> str:
    return gold.strip().rstrip(";").strip()


def render(gold: str, style: Style, prompt: str, seed: int) -> str:
    if style is Style.WRONG:
        return _dress(wrong_but_runs(gold, unit(seed, "wrong", prompt)), unit(seed, "dress", prompt))
    if style is Style.ERROR:
        return _dress(failing(gold, unit(seed, "error", prompt)), unit(seed, "dress", prompt))
    sql = _sql(gold)
    if style is Style.FENCED:
        return f"```sql\n{sql}\n```"
    if style is Style.THINK:
        return (
            "<think>\nThe question needs the tables in the schema; I will select the asked "
            f"columns and apply the conditions.\n</think>\n{sql}"
        )
    if style is Style.EXPLAINED:
        return f"{sql}\nExplanation: This query reads the relevant table and returns what was asked."
    return sql


def _dress(sql: str, u: float) -> str:
    # Wrong answers come in the same wrappers as right ones, so cleaning cannot tell them apart.
    return render(sql, CORRECT_STYLES[pick(u, len(CORRECT_STYLES))], "", 0)


_COMPARISON = re.compile(r"(?<![<>!=])(<=|>=|<|>)(?![<>=])")
_SWAP = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}
_WHERE = re.compile(
    r"\bWHERE\b(?P<cond>.+?)(?=\bGROUP\s+BY\b|\bORDER\s+BY\b|\bLIMIT\b|\bHAVING\b|$)",
    re.IGNORECASE | re.DOTALL,
)
_MINMAX = re.compile(r"\b(MIN|MAX)\s*\(", re.IGNORECASE)
_ORDER_DIR = re.compile(r"\b(ASC|DESC)\b", re.IGNORECASE)


def wrong_but_runs(gold: str, u: float) -> str:
    """A plausible query that executes wherever gold does but answers something else."""
    body = _body(gold)
    rewrites: list[str] = []
    if "'" not in body and _COMPARISON.search(body):
        rewrites.append(_COMPARISON.sub(lambda m: _SWAP[m.group(1)], body, count=1))
    if _MINMAX.search(body):
        rewrites.append(
            _MINMAX.sub(lambda m: ("MAX" if m.group(1).upper() == "MIN" else "MIN") + "(", body, count=1)
        )
    if _ORDER_DIR.search(body) and re.search(r"\bLIMIT\b", body, re.IGNORECASE):
        rewrites.append(
            _ORDER_DIR.sub(lambda m: "DESC" if m.group(1).upper() == "ASC" else "ASC", body, count=1)
        )
    where = _WHERE.search(body)
    if where and "(" not in where.group("cond"):
        cond = where.group("cond").strip()
        rewrites.append(body[: where.start()] + f"WHERE NOT ({cond}) " + body[where.end() :].lstrip())
    # Counting instead of listing is the mistake every query admits.
    rewrites.append(f"SELECT COUNT(*) FROM ({body})")
    return _sql(rewrites[pick(u, len(rewrites))].strip())


def failing(gold: str, u: float) -> str:
    """A query that fails to execute: a column the schema lacks, or a misspelt keyword."""
    body = _body(gold)
    if u < 0.5 or not re.search(r"\bFROM\b", body, re.IGNORECASE):
        select = re.match(r"\s*SELECT\s+(DISTINCT\s+)?", body, re.IGNORECASE)
        if select:
            return _sql(body[: select.end()] + "record_label, " + body[select.end() :])
        return "SELECT record_label FROM missing_table;"
    return _sql(re.sub(r"\bFROM\b", "FORM", body, count=1, flags=re.IGNORECASE))
