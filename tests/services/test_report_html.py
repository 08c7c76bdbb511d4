"""The HTML run report: the funnel in DAG order, the score histograms, escaped data."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser

from services.coordinator.report_html import render_report
from tests.services.test_run_state import _events, _run


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    return parser


def test_the_report_shows_the_funnel_scores_and_latencies() -> None:
    state = _run(_events(6, random.Random(0)))
    page = render_report("pipe", state, state.reports())
    parsed = _parse(page)
    text = " ".join(parsed.text)
    assert "script" not in parsed.tags and "img" not in parsed.tags  # self-contained, no script
    # funnel rows in stage order, each with its numbers: score read 6, emitted 6, dropped 1, 2 dead letters
    funnel = page[page.index("<h2>Funnel</h2>") : page.index("<h2>Scores</h2>")]
    assert [m for m in re.findall(r"<tr><td>(\w+)</td>", funnel)] == ["seeds", "hash", "score"]
    score_row = re.search(r"<tr><td>score</td>(.*?)</tr>", funnel)
    assert score_row is not None
    assert re.findall(r"<td>([^<]+)</td>", score_row.group(1))[:5] == ["6", "6", "1", "0", "2"]
    # one histogram: teacher_score at the stage that adds it, a bar per value with its count
    scores = page[page.index("<h2>Scores</h2>") : page.index("<h2>Quality per stage</h2>")]
    assert scores.count("<svg") == 1 and "teacher_score at score" in scores
    assert re.findall(r"<title>([^<]+)</title>", scores) == ["0.0..0.0: 2", "0.5..0.5: 2", "1.0..1.0: 2"]
    assert "gate passed" in text and "exec_pass_rate 0.6667" in text
    assert page == render_report("pipe", state, state.reports())  # same state, same bytes


def test_text_from_the_data_is_escaped() -> None:
    events = _events(4, random.Random(2))
    hostile = "<script>alert(1)</script>"
    for kind, payload in events:
        if kind == "rows" and payload[0] == "score":
            for row in payload[1]:
                row["reject_reason"] = hostile
    state = _run(events)
    state.verdict = {"passed": False, "failures": [f"score: {hostile}"]}
    page = render_report("<b>pipe</b>", state, state.reports())
    assert "<script>" not in page and "<b>pipe" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "gate failed" in page
