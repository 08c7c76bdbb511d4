"""chat_generation, evol_instruct and self_instruct: their logic, and each against the simulator
process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from fastdistill.dev.teacher_sim.server import SimConfig
from services.chat_generation.step import ChatGenerationStep, ConversationError
from services.evol_instruct.step import DEPTH_PROMPT, EvolInstructStep, failed, prompt_for
from services.llm.step import LLMStep
from services.self_instruct.step import SelfInstructStep, kept, split_instructions
from tests.sim import sim_process

CONVERSATION = [
    {"role": "user", "content": "What is a prime number?"},
    {"role": "assistant", "content": "A number with exactly two divisors."},
    {"role": "user", "content": "Give me three examples."},
]


async def _run(step: LLMStep[Any], rows: list[dict[str, Any]]) -> list[Any]:
    try:
        return await asyncio.gather(*(step.process_row_async(dict(r)) for r in rows), return_exceptions=True)
    finally:
        await step.aclose()


def test_chat_messages_are_checked_and_a_system_prompt_added() -> None:
    step = ChatGenerationStep(system_prompt="Be brief.")
    assert step.messages({"messages": CONVERSATION})[0] == {"role": "system", "content": "Be brief."}
    assert step.messages({"messages": json.dumps(CONVERSATION)})[1:] == CONVERSATION
    for bad, reason in (
        ([], "non-empty list"),
        ([{"role": "robot", "content": "x"}], "role in"),
        ([{"role": "user", "content": 3}], "no text content"),
        (CONVERSATION[:2], "end with a user turn"),
        ("{not json", "not JSON"),
    ):
        with pytest.raises(ConversationError, match=reason):
            step.messages({"messages": bad})


def test_chat_generation_against_the_simulator(tmp_path: Path) -> None:
    rows = [
        {"sample_id": f"c{i}", "messages": [*CONVERSATION[:2], {"role": "user", "content": f"Q {i}"}]}
        for i in range(10)
    ]
    with sim_process(tmp_path, SimConfig()) as sim:
        out = asyncio.run(_run(ChatGenerationStep(llm={"base_url": sim.base_url, "model": "chat-sim"}), rows))
        stats = sim.stats()
    assert all(isinstance(r, dict) and r["generation"] and r["teacher_model"] == "chat-sim" for r in out)
    assert len({r["generation"] for r in out}) > 1
    # the whole conversation was sent: prompt tokens count every turn
    assert all(
        r["prompt_tokens"] == sum(len(m["content"].split()) for m in row["messages"])
        for r, row in zip(out, rows, strict=True)
    )
    assert stats["requests"] == 10


def test_evol_instruct_prompts_and_elimination() -> None:
    assert prompt_for("constraints", "How do plants grow?").startswith("I want you act as a Prompt Rewriter.")
    assert "Please add one more constraints/requirements" in prompt_for("constraints", "x")
    assert "#Created Prompt#:" in prompt_for("breadth", "x")
    assert DEPTH_PROMPT.count("{prompt}") == 1
    assert failed("") == "empty"
    assert failed("the of and") == "only punctuation and stop words"
    assert failed("#Rewritten Prompt#: How do plants grow?") == "copies the prompt's scaffolding"
    assert failed("Sorry, I cannot do that.") == "a refusal"
    assert failed("How do plants grow in low light, step by step?") is None
    step = EvolInstructStep(num_evolutions=3)
    # the same instruction evolves the same way in every run
    assert [step.mutation("x", r) for r in range(3)] == [
        EvolInstructStep(num_evolutions=3).mutation("x", r) for r in range(3)
    ]


def test_evol_instruct_against_the_simulator(tmp_path: Path) -> None:
    rows = [{"sample_id": f"e{i}", "instruction": f"How does process {i} work?"} for i in range(12)]
    with sim_process(tmp_path, SimConfig()) as sim:
        step = EvolInstructStep(num_evolutions=2, llm={"base_url": sim.base_url})
        out = asyncio.run(_run(step, rows))
        stats = sim.stats()
    for row, result in zip(rows, out, strict=True):
        assert isinstance(result, dict), result
        assert len(result["evolved_instructions"]) == 2 == len(result["evolutions"])
        assert result["evolved_instruction"] == result["evolved_instructions"][-1]
        assert result["evolved_instruction"] != row["instruction"]
        assert all(
            m.split()[0] in {"constraints", "deepen", "concretizing", "reasoning", "breadth"}
            for m in result["evolutions"]
        )
    assert stats["requests"] == 24 and stats["kinds"] == {"evol": 24}


def test_self_instruct_split_and_filters() -> None:
    lines = [
        "1. Explain the water cycle simply.",
        "2) Draw a picture of a cloud.",
        "- Why is rain wet?",
        "3. Hi",
    ]
    text = "\n".join([*lines, "# Output"])
    assert split_instructions(text) == [
        "Explain the water cycle simply.",
        "Draw a picture of a cloud.",
        "Why is rain wet?",
        "Hi",
    ]
    assert [kept(i) for i in split_instructions(text)] == [True, False, True, False]
    assert not kept("¿Qué es la lluvia en verano?") and not kept("- a b c")


def test_self_instruct_against_the_simulator(tmp_path: Path) -> None:
    rows = [
        {"sample_id": f"s{i}", "input": f"Photosynthesis in plant {i} converts light into energy."}
        for i in range(5)
    ]
    with sim_process(tmp_path, SimConfig()) as sim:
        lists = asyncio.run(_run(SelfInstructStep(num_instructions=5, llm={"base_url": sim.base_url}), rows))
        exploded = asyncio.run(
            _run(SelfInstructStep(num_instructions=5, explode=True, llm={"base_url": sim.base_url}), rows[:1])
        )
        stats = sim.stats()
    for result in lists:
        assert isinstance(result, dict)
        # five asked; the simulator's one "draw a picture" query is filtered when it comes up
        assert 4 <= len(result["instructions"]) <= 5
        assert not any("Draw" in i for i in result["instructions"])
    (children,) = exploded
    assert [c["sample_id"] for c in children] == [f"s0:{i}" for i in range(len(children))]
    assert [c["generated_instruction"] for c in children] == lists[0]["instructions"]
    assert stats["requests"] == 6 and stats["kinds"] == {"self_instruct": 6}
