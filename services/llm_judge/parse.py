"""Reading a judge's answer: a rating on a scale, or a ranking of candidates, from text that
follows the requested form only loosely.

Accepted for a rating (the last labelled one wins, as models restate and correct themselves):
`Rating: 4`, `**Score:** 4/5`, `Rating: 4 out of 5`, `Grade = four`, Prometheus' `[RESULT] 4`,
or an answer that is just the number. A fraction on another scale (`8/10` for 1-5), a value
outside the scale, or no rating at all is `Unparsed`, with the reason. For a ranking:
`Ranking: 2 > 1 > 3`, `[2] > [1]` anywhere, `Ranking: 2, 1`, or `Best: 2` (the others keep their order);
labels are 1-based in the prompt and 0-based in the row. The rationale is what follows a
`Rationale:` / `Feedback:` / `Explanation:` label, else the rest of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
_NUMBER = r"(?:-?\d+(?:\.\d+)?|" + "|".join(_WORDS) + r")"
_OUT_OF = rf"(?:\s*(?:/|out\s+of)\s*(?P<denom>{_NUMBER}))?"
_LABELLED = re.compile(
    rf"(?:\[RESULT\]|\b(?:overall\s+)?(?:rating|score|grade)\b[^:=\n]{{0,20}}[:=])"
    rf"[\s*_`\[]*(?P<value>{_NUMBER})\b[*_`\]]*{_OUT_OF}",
    re.IGNORECASE,
)
_BARE = re.compile(rf"^[\s*_`\[]*(?P<value>{_NUMBER})[*_`\]]*{_OUT_OF}[\s.]*$", re.IGNORECASE)
_RATIONALE = re.compile(
    r"\b(?:rationale|feedback|explanation|reasoning)\b\s*[:=]\s*(?P<text>.+)", re.I | re.S
)
_RANKING = re.compile(r"\b(?:ranking|rank|order)\b[^:\n]{0,20}:\s*(?P<list>[^\n]+)", re.IGNORECASE)
#: `[2] > [1] > [3]` or `2 > 1` anywhere, unlabelled
_CHAIN = re.compile(r"\[?\d+\]?(?:\s*>\s*\[?\d+\]?)+")
_BEST = re.compile(
    r"\b(?:best|winner|preferred)\b(?:\s+(?:response|answer|candidate))?\s*(?:is|:|=)\s*[\s*\[]*(?P<n>\d+)",
    re.IGNORECASE,
)


class Unparsed(ValueError):
    """The judge's answer holds no usable rating or ranking."""


@dataclass(frozen=True)
class Rating:
    value: float
    rationale: str | None


@dataclass(frozen=True)
class Ranking:
    #: candidate indexes (0-based), best first
    order: list[int]
    rationale: str | None


def _number(text: str) -> float:
    word = _WORDS.get(text.lower())
    return float(word) if word is not None else float(text)


def _rationale(text: str, used: tuple[int, int] | None) -> str | None:
    rest = text if used is None else text[: used[0]] + text[used[1] :]
    match = _RATIONALE.search(rest)
    if match:
        rest = match.group("text")
    rest = rest.strip().strip("*_` \n")
    return rest or None


def parse_rating(text: str, low: float, high: float) -> Rating:
    matches = list(_LABELLED.finditer(text))
    match = matches[-1] if matches else _BARE.match(text)
    if match is None:
        raise Unparsed(f"no rating in the judge's answer: {_snippet(text)}")
    value = _number(match.group("value"))
    denom = match.group("denom")
    if denom is not None and _number(denom) != high:
        raise Unparsed(f"rating {match.group(0).strip()!r} is not on the {low:g}-{high:g} scale")
    if not low <= value <= high:
        raise Unparsed(f"rating {value:g} is outside the {low:g}-{high:g} scale")
    return Rating(value, _rationale(text, match.span()))


def parse_ranking(text: str, candidates: int) -> Ranking:
    if candidates < 1:
        raise Unparsed("no candidates to rank")
    labelled = list(_RANKING.finditer(text))
    order: list[int] = []
    used: tuple[int, int] | None = None
    if labelled:
        match = labelled[-1]
        order = [int(n) - 1 for n in re.findall(r"\d+", match.group("list"))]
        used = match.span()
    elif chains := list(_CHAIN.finditer(text)):
        order = [int(n) - 1 for n in re.findall(r"\d+", chains[-1].group(0))]
        used = chains[-1].span()
    else:
        best = list(_BEST.finditer(text))
        if best:
            order = [int(best[-1].group("n")) - 1]
            used = best[-1].span()
    if not order:
        raise Unparsed(f"no ranking in the judge's answer: {_snippet(text)}")
    if any(not 0 <= i < candidates for i in order):
        raise Unparsed(f"ranking {[i + 1 for i in order]} names a candidate outside 1-{candidates}")
    if len(set(order)) != len(order):
        raise Unparsed(f"ranking {[i + 1 for i in order]} names a candidate twice")
    order += [i for i in range(candidates) if i not in order]
    return Ranking(order, _rationale(text, used))


def _snippet(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")
