"""`preference`: `preference.jsonl`, chosen/rejected pairs for preference tuning (DPO, ORPO, KTO
pairs), from rows that carry a list of candidates and a list of their scores — what a DAG with
several generations per prompt, a judge and `group_generations` produces.

Per kept row: candidates and scores are paired by position; pairs whose candidate is not a
non-empty string or whose score is not a number (or is NaN) are left out. Of the rest, `chosen`
is the candidate with the highest score and `rejected` the one with the lowest; among equal
scores the earlier candidate wins either way (so the pair is a function of the row alone).
Rows give no pair, and are counted in the release record by reason, when:

- `single`: fewer than two scored candidates (one generation, or all but one unscored);
- `tie`: every scored candidate has the same score (nothing to prefer);
- `same_text`: the best and the worst candidate are the same text;
- `mismatched`: the two lists differ in length (a judge that lost a score).

A pairwise judge gives a `ranking` (candidate indexes, best first) instead of scores: with
`ranking: <field>` a candidate's score is its place counted from the worst (the best of n
scores n, the worst 1; a candidate the ranking leaves out is unscored), so `chosen` is the
ranking's first and `rejected` its last.

`style: text` writes `{"prompt", "chosen", "rejected", "score_chosen", "score_rejected"}` (plus
`system` when set); `style: chat` writes the conversational form: `prompt` a list of messages,
`chosen`/`rejected` each a one-message assistant list.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from services.sink.formats import FormatOptions, PartRows, SinkFormat, Written
from services.sink.formats.fields import fields_of, text_of


class PreferenceOptions(FormatOptions):
    #: a field or a template over fields: what the candidates answer
    prompt: str
    #: the field holding the list of candidate texts
    candidates: str = "generations"
    #: the field holding the list of their scores (one per candidate, same order)
    scores: str = "scores"
    #: instead of scores: the field holding a ranking (candidate indexes, best first)
    ranking: str | None = None
    system: str | None = None
    style: Literal["text", "chat"] = "text"
    file: str = Field("preference.jsonl", pattern=r"^[\w.-]+\.jsonl$")


Pair = tuple[tuple[str, float], tuple[str, float]]


def best_and_worst(candidates: Any, scores: Any) -> Pair | str:
    """((chosen, its score), (rejected, its score)), or why the row gives no pair."""
    if not isinstance(candidates, list) or not isinstance(scores, list) or len(candidates) != len(scores):
        return "mismatched"
    scored = [
        (text, float(score))
        for text, score in zip(candidates, scores, strict=True)
        if isinstance(text, str)
        and text
        and isinstance(score, int | float)
        and not isinstance(score, bool)
        and not math.isnan(score)
    ]
    if len(scored) < 2:
        return "single"
    # max/min return the first of equal items: the earlier candidate wins ties.
    chosen = max(scored, key=lambda pair: pair[1])
    rejected = min(scored, key=lambda pair: pair[1])
    if chosen[1] == rejected[1]:
        return "tie"
    if chosen[0] == rejected[0]:
        return "same_text"
    return chosen, rejected


def scores_from_ranking(ranking: Any, count: int) -> list[float | None] | None:
    """Scores by place in `ranking` (best of n scores n); None for a ranking that is not a list
    of distinct indexes of the `count` candidates (a judge's unreadable verdict)."""
    if not isinstance(ranking, list) or not all(type(i) is int and 0 <= i < count for i in ranking):
        return None
    if len(set(ranking)) != len(ranking):
        return None
    scores: list[float | None] = [None] * count
    for place, index in enumerate(ranking):
        scores[index] = float(len(ranking) - place)
    return scores


class PreferenceFormat(SinkFormat):
    name: ClassVar[str] = "preference"
    Options: ClassVar[type[FormatOptions]] = PreferenceOptions
    writes_rejected: ClassVar[bool] = False

    @property
    def pref(self) -> PreferenceOptions:
        assert isinstance(self.options, PreferenceOptions)
        return self.options

    def reads(self) -> set[str]:
        o = self.pref
        scored_by = o.ranking if o.ranking is not None else o.scores
        return {o.candidates, scored_by, *fields_of(o.prompt), *(fields_of(o.system) if o.system else ())}

    def record(self, row: dict[str, Any]) -> dict[str, Any] | str:
        o = self.pref
        prompt = text_of(o.prompt, row)
        if not prompt:
            return "no prompt"
        candidates = row.get(o.candidates)
        if o.ranking is None:
            scores = row.get(o.scores)
        else:
            count = len(candidates) if isinstance(candidates, list) else 0
            scores = scores_from_ranking(row.get(o.ranking), count)
            if scores is None:
                return "mismatched"
        pair = best_and_worst(candidates, scores)
        if isinstance(pair, str):
            return pair
        (chosen, score_chosen), (rejected, score_rejected) = pair
        system = text_of(o.system, row) if o.system else None
        pair_scores = {"score_chosen": score_chosen, "score_rejected": score_rejected}
        if o.style == "chat":
            turns = [{"role": "system", "content": system}] if system else []
            return {
                "prompt": [*turns, {"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                **pair_scores,
            }
        return {
            **({"system": system} if system else {}),
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            **pair_scores,
        }

    def write_part(self, rows: PartRows, folder: Path) -> Written:
        name = self.pref.file
        written = 0
        skipped: Counter[str] = Counter()
        digest = hashlib.sha256()
        with open(folder / name, "wb") as fh:
            for row in rows.records():
                record = self.record(row)
                if isinstance(record, str):
                    skipped[record] += 1
                    continue
                line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
                digest.update(line)
                fh.write(line)
                written += 1
        note = {"rows": written, "skipped": dict(sorted(skipped.items()))}
        return Written([name], {name: note}, {name: digest.hexdigest()})
