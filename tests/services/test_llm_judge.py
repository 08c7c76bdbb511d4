"""llm_judge: the parser on well-formed and malformed verdicts, and the step against the
simulator process (ratings and rankings, a malformed share retried, the rest left null)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fastdistill.dev.teacher_sim import tasks
from fastdistill.dev.teacher_sim.server import SimConfig
from services.llm_judge.parse import Unparsed, parse_ranking, parse_rating
from services.llm_judge.step import JudgeUnparsed, LLMJudgeStep
from tests.fakes import DictContext
from tests.sim import sim_process


@pytest.mark.parametrize(
    ("text", "value", "rationale"),
    [
        ("Rating: 4\nRationale: clear and correct", 4.0, "clear and correct"),
        ("**Rating:** 4/5\n\nRationale: fine", 4.0, "fine"),
        ("Score: 3 out of 5. Feedback: partly right", 3.0, "partly right"),
        ("Feedback: terse. [RESULT] 2", 2.0, "terse."),
        ("Grade = four", 4.0, None),
        ("5", 5.0, None),
        ("Rating: 2.5", 2.5, None),
        ("Score (1-5): 1", 1.0, None),
        ("Rating: 3\nOn reflection, Rating: 5", 5.0, "Rating: 3\nOn reflection,"),  # the last one wins
    ],
)
def test_ratings_in_many_wordings(text: str, value: float, rationale: str | None) -> None:
    parsed = parse_rating(text, 1, 5)
    assert parsed.value == value and parsed.rationale == rationale


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I think this response is quite good overall.", "no rating"),
        ("Rating: excellent\nRationale: great", "no rating"),
        ("Rating: 9\nRationale: great", "outside the 1-5 scale"),
        ("Rating: 0", "outside the 1-5 scale"),
        ("Rating: 8/10", "not on the 1-5 scale"),
        ("", "no rating"),
    ],
)
def test_malformed_ratings_are_unparsed_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(Unparsed, match=reason):
        parse_rating(text, 1, 5)


def test_rankings() -> None:
    assert parse_ranking("Ranking: 2 > 1 > 3\nRationale: x", 3).order == [1, 0, 2]
    assert parse_ranking("[3] > [1]\nbecause", 3).order == [2, 0, 1]  # unnamed ones keep their order
    assert parse_ranking("Ranking: 2, 1", 2).order == [1, 0]
    assert parse_ranking("Best: 2\nRationale: y", 2).order == [1, 0]
    for text, reason in (
        ("Both have merits.", "no ranking"),
        ("Ranking: 7 > 1", "outside 1-2"),
        ("Ranking: 1 > 1", "twice"),
    ):
        with pytest.raises(Unparsed, match=reason):
            parse_ranking(text, 2)


def test_the_simulators_judge_answers_agree_with_the_parser() -> None:
    """Every readable wording the simulator serves parses to its intended value; every unreadable
    one does not parse."""
    judge = LLMJudgeStep()
    pairwise = LLMJudgeStep(mode="pairwise")
    readable = unreadable = 0
    for i in range(200):
        prompt = judge.request({"instruction": f"q{i}", "generation": f"answer {i}"}).messages[0]["content"]
        text, ok = tasks.rating_answer(0, prompt, i % 3, 0.3)
        expected = 1 + round(tasks.quality(0, f"answer {i}") * 4)
        if ok:
            readable += 1
            assert parse_rating(text, 1, 5).value == expected, text
        else:
            unreadable += 1
            with pytest.raises(Unparsed):
                parse_rating(text, 1, 5)
        cands = [f"a{i}", f"bb{i}", f"ccc{i}"]
        prompt = pairwise.request({"instruction": "q", "generations": cands}).messages[0]["content"]
        text, ok = tasks.ranking_answer(0, prompt, 0, 0.0)
        best = max(range(3), key=lambda c: (tasks.quality(0, cands[c]), -c))
        assert parse_ranking(text, 3).order[0] == best, text
    assert readable > 100 and unreadable > 30


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {"sample_id": f"s{i}", "instruction": f"Explain topic {i}.", "generation": f"It is {i}."}
        for i in range(n)
    ]


async def _run(step: LLMJudgeStep, rows: list[dict[str, Any]]) -> list[Any]:
    try:
        return await asyncio.gather(*(step.process_row_async(dict(r)) for r in rows), return_exceptions=True)
    finally:
        await step.aclose()


def test_ratings_from_the_simulator_with_malformed_answers_retried(tmp_path: Path) -> None:
    with sim_process(tmp_path, SimConfig(judge_malformed_rate=0.3)) as sim:
        step = LLMJudgeStep(llm={"base_url": sim.base_url, "model": "judge-sim"}, max_parse_retries=2)
        ctx = DictContext()
        step.open(ctx)
        out = asyncio.run(_run(step, _rows(100)))
        first = sim.stats()
        again = asyncio.run(_run(step, _rows(100)))
        stats = sim.stats()
    assert all(isinstance(r, dict) for r in out), [r for r in out if not isinstance(r, dict)]
    rated = [r for r in out if r["rating"] is not None]
    unrated = [r for r in out if r["rating"] is None]
    for r in rated:
        assert r["rating"] == 1 + round(tasks.quality(0, r["generation"]) * 4)
        assert r["rationale"] and r["judge_error"] is None and r["judge_model"] == "judge-sim"
    # 0.3 malformed per answer, three answers each: about 0.3^3 = 2.7 % stay unrated, with the reason
    assert len(unrated) <= 8
    for r in unrated:
        assert r["judge_error"] and "after 3 answers" not in r["judge_error"]
        assert r["judge_prompt_tokens"] and r["judge_completion_tokens"]
    # the malformed answers were asked again: more requests than rows, each retry a fresh request
    assert first["requests"] > 100 and first["broken_answers"] == first["requests"] - len(rated)
    # only readable verdicts were cached: the second pass asks again for the unrated rows only
    asked_again = {r["sample_id"] for r in again if not r["judge_cached"]}
    assert asked_again == {r["sample_id"] for r in unrated}
    assert len(unrated) <= stats["requests"] - first["requests"] <= 3 * len(unrated)
    print(
        f"judge: 100 rows, {first['requests']} requests, {len(unrated)} unrated, {first['prompt_tokens']} "
        f"prompt + {first['completion_tokens']} completion tokens"
    )


def test_a_judge_that_never_answers_readably(tmp_path: Path) -> None:
    with sim_process(tmp_path, SimConfig(judge_malformed_rate=1.0)) as sim:
        nulls = LLMJudgeStep(llm={"base_url": sim.base_url}, max_parse_retries=1)
        (row,) = asyncio.run(_run(nulls, _rows(1)))
        strict = LLMJudgeStep(llm={"base_url": sim.base_url}, max_parse_retries=1, on_unparsed="error")
        (error,) = asyncio.run(_run(strict, _rows(1)))
        stats = sim.stats()
    assert (row["rating"] is None and "rating" in row["judge_error"]) or "no rating" in row["judge_error"]
    assert isinstance(error, JudgeUnparsed) and "(after 2 answers)" in str(error)
    assert stats["requests"] == 4


def test_pairwise_ranks_the_candidates(tmp_path: Path) -> None:
    rows = [
        {"sample_id": f"p{i}", "instruction": f"Q{i}", "generations": [f"first {i}", f"second answer {i}"]}
        for i in range(40)
    ]
    with sim_process(tmp_path, SimConfig(judge_malformed_rate=0.0)) as sim:
        step = LLMJudgeStep(mode="pairwise", llm={"base_url": sim.base_url})
        out = asyncio.run(_run(step, rows))
        stats = sim.stats()
    for row, result in zip(rows, out, strict=True):
        cands = row["generations"]
        best = max(range(2), key=lambda c: (tasks.quality(0, cands[c]), -c))
        assert result["ranking"][0] == best and sorted(result["ranking"]) == [0, 1]
        assert result["chosen"] == cands[best]
        assert "rating" not in result
    assert stats["kinds"] == {"ranking": 40}
    with pytest.raises(ValueError, match="non-empty list"):
        asyncio.run(LLMJudgeStep(mode="pairwise").process_row_async({"instruction": "q", "generations": []}))
