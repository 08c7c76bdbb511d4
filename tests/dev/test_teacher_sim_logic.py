"""The simulator's pure parts: answer styles, wrong answers, latency draws, fault decisions, stats."""

from __future__ import annotations

import collections
import json
import sqlite3
import statistics
from pathlib import Path

import pytest

from fastdistill.dev.teacher_sim.answers import (
    UNKNOWN_ANSWER,
    AnswerBook,
    Style,
    StyleMix,
    choose_style,
    failing,
    question_of,
    wrong_but_runs,
)
from fastdistill.dev.teacher_sim.faults import Fault, FaultPlan, LatencySpec
from fastdistill.dev.teacher_sim.server import SimConfig, SimStats

TEMPLATE = "Schema: {schema}\nQuestion: {instruction}\nSQL:"
SCHEMA = "users(id, name, age); orders(id, user_id, amount)"
GOLDS = [
    "SELECT name FROM users ORDER BY id;",
    "SELECT COUNT(*) FROM orders WHERE amount > 100;",
    "SELECT name FROM users WHERE age >= 30 ORDER BY name;",
    "SELECT MAX(amount) FROM orders;",
    "SELECT name FROM users ORDER BY age DESC LIMIT 2;",
    "SELECT user_id, SUM(amount) FROM orders GROUP BY user_id;",
    "SELECT DISTINCT user_id FROM orders WHERE amount < 50;",
    "SELECT u.name FROM users u JOIN orders o ON o.user_id = u.id WHERE o.amount > 20;",
]


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(
        """
        CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, age INTEGER);
        CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INTEGER, amount REAL);
        INSERT INTO users VALUES (1, 'ann', 25), (2, 'bob', 34), (3, 'cy', 41), (4, 'dee', 19);
        INSERT INTO orders VALUES (1, 1, 120), (2, 1, 30), (3, 2, 250), (4, 3, 15), (5, 4, 75);
        """
    )
    return db


def _rows(db: sqlite3.Connection, sql: str) -> list[tuple]:
    return sorted(db.execute(sql).fetchall(), key=repr)


def _book(n: int) -> tuple[AnswerBook, list[str]]:
    answers = {
        f"Question number {i}: what does query {i % len(GOLDS)} return?": GOLDS[i % len(GOLDS)]
        for i in range(n)
    }
    prompts = [TEMPLATE.format(schema=SCHEMA, instruction=q) for q in answers]
    return AnswerBook(answers), prompts


def test_question_is_parsed_from_the_template() -> None:
    prompt = TEMPLATE.format(schema=SCHEMA, instruction="  List all\n user names. ")
    assert question_of(prompt) == "List all user names."
    assert question_of("hello") is None


def test_load_from_seeds_jsonl_and_json_map(tmp_path: Path) -> None:
    jsonl = tmp_path / "seeds.jsonl"
    rows = [
        {"task_id": "t1", "instruction": "List all user names ordered by id.", "gold_sql": GOLDS[0]},
        {"task_id": "t2", "instruction": "no gold here"},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    book = AnswerBook.load(jsonl)
    assert len(book) == 1
    assert (
        book.gold_for(TEMPLATE.format(schema="s", instruction="List all user names ordered by id."))
        == GOLDS[0]
    )
    mapping = tmp_path / "book.json"
    mapping.write_text(json.dumps({"Q one": "SELECT 1 + 1;"}, indent=2))
    assert AnswerBook.load(mapping).gold_for("Question: Q one\nSQL:") == "SELECT 1 + 1;"
    single = tmp_path / "one.jsonl"
    single.write_text(json.dumps(rows[0]))
    assert len(AnswerBook.load(single)) == 1


def test_unknown_prompt_gets_select_1() -> None:
    book, _ = _book(3)
    assert book.answer(TEMPLATE.format(schema=SCHEMA, instruction="never seen"), 0, StyleMix()) == (
        UNKNOWN_ANSWER,
        None,
    )
    assert book.answer("free text, no template", 0, StyleMix())[0] == UNKNOWN_ANSWER


def test_answers_are_deterministic_per_prompt_and_seed() -> None:
    book, prompts = _book(200)
    first = [book.answer(p, 7, StyleMix()) for p in prompts]
    assert first == [book.answer(p, 7, StyleMix()) for p in prompts]
    other_seed = [book.answer(p, 8, StyleMix()) for p in prompts]
    assert sum(a != b for a, b in zip(first, other_seed, strict=True)) > 50


def test_style_proportions_over_1000_prompts() -> None:
    _, prompts = _book(1000)
    counts = collections.Counter(choose_style(p, 0, StyleMix()) for p in prompts)
    correct = sum(counts[s] for s in (Style.PLAIN, Style.FENCED, Style.THINK, Style.EXPLAINED))
    assert 0.55 <= correct / 1000 <= 0.65
    assert 0.21 <= counts[Style.WRONG] / 1000 <= 0.29
    assert 0.11 <= counts[Style.ERROR] / 1000 <= 0.19
    for style in (Style.PLAIN, Style.FENCED, Style.THINK, Style.EXPLAINED):
        assert 0.11 <= counts[style] / 1000 <= 0.19, (style, counts)


def test_custom_mix_is_respected() -> None:
    _, prompts = _book(300)
    only_errors = collections.Counter(
        choose_style(p, 0, StyleMix(correct=0, wrong=0, error=1)) for p in prompts
    )
    assert set(only_errors) == {Style.ERROR}
    with pytest.raises(ValueError):
        StyleMix(correct=0, wrong=0, error=0)


def test_correct_styles_wrap_the_gold_sql() -> None:
    book, prompts = _book(400)
    seen = set()
    for prompt in prompts:
        text, style = book.answer(prompt, 0, StyleMix())
        gold = book.gold_for(prompt)
        assert gold is not None
        if style in (Style.WRONG, Style.ERROR):
            assert gold not in text
            continue
        seen.add(style)
        assert gold in text
        if style is Style.PLAIN:
            assert text == gold
        elif style is Style.FENCED:
            assert text.startswith("```sql\n") and text.endswith("\n```")
        elif style is Style.THINK:
            assert text.startswith("<think>") and text.index("</think>") < text.index(gold)
        else:
            assert "\nExplanation: " in text
    assert seen == {Style.PLAIN, Style.FENCED, Style.THINK, Style.EXPLAINED}


@pytest.mark.parametrize("gold", GOLDS)
def test_wrong_answers_run_but_differ(gold: str) -> None:
    db = _db()
    expected = _rows(db, gold)
    variants = {wrong_but_runs(gold, u / 40) for u in range(40)}
    assert gold not in variants
    differing = 0
    for sql in variants:
        differing += _rows(db, sql) != expected  # must execute: raises otherwise
    assert differing >= 1, variants


@pytest.mark.parametrize("gold", GOLDS)
def test_error_answers_fail_to_execute(gold: str) -> None:
    db = _db()
    for u in (0.1, 0.9):
        with pytest.raises(sqlite3.Error):
            db.execute(failing(gold, u)).fetchall()


def test_latency_parsing_and_draws() -> None:
    assert LatencySpec.parse("fixed:200").sample_ms(0, "p", 0) == 200
    spec = LatencySpec.parse("lognormal:200:1.0")
    assert str(spec) == "lognormal:200:1"
    draws = [spec.sample_ms(0, f"prompt {i}", 0) for i in range(2000)]
    assert 170 <= statistics.median(draws) <= 230
    assert max(draws) > 1500  # sigma 1: a heavy tail
    assert draws[:10] == [spec.sample_ms(0, f"prompt {i}", 0) for i in range(10)]
    assert spec.sample_ms(0, "p", 0) != spec.sample_ms(0, "p", 1)  # a retry is a new draw
    for bad in ("fixed", "fixed:x", "lognormal:200", "uniform:1:2"):
        with pytest.raises(ValueError):
            LatencySpec.parse(bad)


def test_sim_config_takes_latency_as_text_and_round_trips() -> None:
    cfg = SimConfig(latency="lognormal:150:0.5", fault_rate=0.2)
    assert cfg.latency == LatencySpec(kind="lognormal", median_ms=150, sigma=0.5)
    assert SimConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValueError):
        SimConfig(fault_rate=1.5)


def test_fault_rate_and_split() -> None:
    plan = FaultPlan(rate=0.2)
    decisions = collections.Counter(plan.decide(0, f"prompt {i}", 0) for i in range(5000))
    assert 0.18 <= 1 - decisions[Fault.NONE] / 5000 <= 0.22
    assert {Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.TIMEOUT, Fault.MALFORMED, Fault.EMPTY} <= set(
        decisions
    )
    faults = 5000 - decisions[Fault.NONE]
    assert 0.22 <= decisions[Fault.RATE_LIMIT] / faults <= 0.38
    assert FaultPlan(rate=0.0).decide(0, "p", 0) is Fault.NONE
    only_429 = FaultPlan(rate=1.0, weights={Fault.RATE_LIMIT: 1.0})
    assert {only_429.decide(0, f"p{i}", a) for i in range(50) for a in range(3)} == {Fault.RATE_LIMIT}


def test_faults_are_per_attempt_so_retries_recover() -> None:
    plan = FaultPlan(rate=0.3)
    prompts = [f"prompt {i}" for i in range(2000)]
    # Same (prompt, attempt) → same decision, in any order and any process.
    assert [plan.decide(3, p, 1) for p in prompts] == [plan.decide(3, p, 1) for p in reversed(prompts)][::-1]
    failed_first = [p for p in prompts if plan.decide(0, p, 0) is not Fault.NONE]
    recovered = [p for p in failed_first if plan.decide(0, p, 1) is Fault.NONE]
    assert 0.6 <= len(recovered) / len(failed_first) <= 0.8
    # Attempts are independent: three faults in a row is about 0.3^3.
    streaks = sum(all(plan.decide(0, p, a) is not Fault.NONE for a in range(3)) for p in prompts)
    assert 0.015 <= streaks / len(prompts) <= 0.04
    first_success = [next(a for a in range(20) if plan.decide(0, p, a) is Fault.NONE) for p in prompts]
    assert max(first_success) < 20


def test_retry_after_within_bounds() -> None:
    plan = FaultPlan(rate=1.0, retry_after_s=(0.2, 1.0))
    waits = [plan.retry_after(0, f"p{i}", 0) for i in range(500)]
    assert all(0.2 <= w <= 1.0 for w in waits)
    assert max(waits) - min(waits) > 0.5
    with pytest.raises(ValueError):
        FaultPlan(retry_after_s=(1.0, 0.5))
    with pytest.raises(ValueError):
        FaultPlan(rate=0.1, weights={Fault.NONE: 1.0})


def test_stats_mean_inflight_is_time_weighted() -> None:
    now = [0.0]
    stats = SimStats(clock=lambda: now[0])
    stats.enter(0)
    stats.enter(0)
    now[0] = 1.0  # 2 in flight for 1 s
    stats.leave("ok")
    now[0] = 3.0  # 1 in flight for 2 s
    stats.leave("server_error")
    now[0] = 10.0  # idle 7 s
    stats.enter(1)
    now[0] = 11.0  # 1 in flight for 1 s
    snap = stats.snapshot()
    assert snap["busy_s"] == pytest.approx(4.0)
    assert snap["inflight_area_s"] == pytest.approx(5.0)
    assert snap["mean_inflight"] == pytest.approx(5.0 / 4.0)
    assert snap["mean_inflight_wall"] == pytest.approx(5.0 / 11.0)
    assert snap["requests"] == 3 and snap["retried_requests"] == 1
    assert snap["faults_served"] == 1 and snap["max_inflight"] == 2
