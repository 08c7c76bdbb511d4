"""Answers to prompts of every LLM step, beyond the text-to-SQL answer book: pure functions of
(seed, prompt, attempt) like the rest of the simulator.

- A judge prompt (`on a scale of A to B` ... `Rating:`) gets a rating in one of several
  readable wordings, or, at `judge_malformed_rate`, an unreadable one; a ranking prompt
  (`[1] ...`, `[2] ...`, `Ranking:`) a ranking. A candidate's quality is a hash of its text, so
  rating and ranking agree and every run ranks alike.
- A request with a JSON schema gets an instance of that schema, or, at `json_invalid_rate`, JSON
  that breaks it (a required property missing, a wrong type) or no JSON at all.
- A Self-Instruct prompt gets its numbered queries; an Evol-Instruct prompt its rewritten prompt.
- Anything else gets a deterministic paragraph seeded by the prompt (and, when the request asks
  for sampling, temperature > 0, by how often the prompt was asked: N asks, N answers).
Malformed and invalid shares are drawn per attempt, so a step that asks again can succeed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastdistill.dev.teacher_sim.answers import pick, unit

_SCALE = re.compile(r"scale of\s+(-?\d+(?:\.\d+)?)\s+to\s+(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_CANDIDATE = re.compile(r"^\[(\d+)\]\s?(.*?)(?=^\[\d+\]|\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)
_QUERIES = re.compile(r"Develop\s+(\d+)\s+user queries", re.IGNORECASE)
_CONTEXT = re.compile(r"# Context\n(?P<c>.*?)\n\s*# Output", re.DOTALL)
_EVOL = re.compile(r"#(?:The )?Given Prompt#:\n(?P<p>.*?)\n#(?P<kind>Rewritten|Created) Prompt#:", re.DOTALL)

SENTENCES = (
    "The short answer depends on the details, but the main idea is simple.",
    "First, identify what is being asked and which facts matter.",
    "A worked example usually makes the point clearer than a definition.",
    "Most of the difficulty comes from edge cases rather than the common path.",
    "In practice, the simplest approach that meets the requirements is the right one.",
    "It helps to check the result against a case whose answer is known.",
    "Several factors interact here, and their relative weight changes with context.",
    "The trade-off is between speed and accuracy, and both can be measured.",
    "Historically, the idea developed in small steps rather than all at once.",
    "A common misconception is that it applies everywhere in the same way.",
    "The underlying mechanism is easier to see with a diagram in mind.",
    "Experts disagree on some details, but the core facts are well established.",
    "Comparing two contrasting cases shows what really makes the difference.",
    "Small changes in the inputs can lead to surprisingly large effects.",
    "The best way to remember it is to connect it to something familiar.",
    "In summary, the answer combines a clear principle with careful application.",
)
QUERY_FORMS = (
    "Explain {t} in simple terms for a beginner.",
    "What are the main causes and effects of {t}?",
    "Summarize the key facts about {t} in two sentences.",
    "Compare {t} with a related idea and list the differences.",
    "Describe a practical use of {t} in everyday life.",
    "Give three tips for someone learning about {t}.",
    "Draw a picture that shows {t}.",  # unsuitable: the Self-Instruct filter drops it
    "Why does {t} matter, and who benefits from it?",
)
EVOL_ADDITIONS = {
    "constraints": "Answer in no more than 100 words and give one concrete example.",
    "depth and breadth": "Also explain why it matters and what follows from it.",
    "specific concepts": "Focus on one specific, real-world case.",
    "multiple-step reasoning": "Reason step by step before giving the final answer.",
}


def kind_of(prompt: str, response_format: dict[str, Any] | None) -> str:
    if response_format is not None:
        return "json"
    if "Rating:" in prompt and _SCALE.search(prompt):
        return "rating"
    if "Ranking:" in prompt and len(candidates(prompt)) >= 1:
        return "ranking"
    if _QUERIES.search(prompt):
        return "self_instruct"
    if _EVOL.search(prompt):
        return "evol"
    return "generic"


def candidates(prompt: str) -> list[str]:
    return [m.group(2).strip() for m in _CANDIDATE.finditer(prompt)]


def quality(seed: int, text: str) -> float:
    return unit(seed, "quality", text)


def _rationale(seed: int, prompt: str) -> str:
    return SENTENCES[pick(unit(seed, "rationale", prompt), len(SENTENCES))]


def rating_answer(seed: int, prompt: str, attempt: int, malformed_rate: float) -> tuple[str, bool]:
    """(answer, readable)"""
    match = _SCALE.search(prompt)
    assert match is not None
    low, high = float(match.group(1)), float(match.group(2))
    # The response judged: after `Response:` up to the next blank line (the whole prompt without one).
    response = prompt.split("Response:", 1)[-1].split("\n\n", 1)[0].strip()
    value = low + round(quality(seed, response) * (high - low))
    why = _rationale(seed, prompt)
    bad = (
        "I think this response is quite good overall.",
        f"Rating: excellent\nRationale: {why}",
        f"Rating: {high + 4:g}\nRationale: {why}",
    )
    good = (
        f"Rating: {value:g}\nRationale: {why}",
        f"**Rating:** {value:g}/{high:g}\n\nRationale: {why}",
        f"Score: {value:g} out of {high:g}. Feedback: {why}",
        f"Feedback: {why} [RESULT] {value:g}",
    )
    return _judge_form(seed, prompt, attempt, malformed_rate, bad, good)


def ranking_answer(seed: int, prompt: str, attempt: int, malformed_rate: float) -> tuple[str, bool]:
    found = candidates(prompt)
    order = sorted(range(len(found)), key=lambda i: (-quality(seed, found[i]), i))
    labels = [str(i + 1) for i in order]
    why = _rationale(seed, prompt)
    bad = (
        "Both responses have their merits.",
        f"Ranking: {len(found) + 5} > 1\nRationale: {why}",
        f"Ranking: 1 > 1\nRationale: {why}",
    )
    good = (
        f"Ranking: {' > '.join(labels)}\nRationale: {why}",
        f"{' > '.join(f'[{label}]' for label in labels)}\n{why}",
        f"Best: {labels[0]}\nRationale: {why}",
    )
    return _judge_form(seed, prompt, attempt, malformed_rate, bad, good)


def _judge_form(
    seed: int, prompt: str, attempt: int, malformed_rate: float, bad: tuple[str, ...], good: tuple[str, ...]
) -> tuple[str, bool]:
    """One of the unreadable answers (at `malformed_rate`, drawn anew at each attempt), else one
    of the readable forms a real judge writes (the same for a prompt at every attempt)."""
    if unit(seed, "judge-malformed", prompt, attempt) < malformed_rate:
        return bad[pick(unit(seed, "judge-bad", prompt, attempt), len(bad))], False
    return good[pick(unit(seed, "judge-form", prompt), len(good))], True


def schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        inner = fmt.get("json_schema")
        schema = inner.get("schema") if isinstance(inner, dict) else None
        if isinstance(schema, dict):
            return schema
        return {"type": "object"}
    return None


def instance(schema: dict[str, Any], seed: int, where: str) -> Any:
    """A value satisfying `schema` (the common keywords), chosen by hash."""
    u = unit(seed, "json", where)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][pick(u, len(schema["enum"]))]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            return instance(schema[combinator][0], seed, where)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: instance(sub, seed, f"{where}/{name}") for name, sub in props.items()}
    if kind == "array":
        lo = int(schema.get("minItems", 1))
        hi = max(lo, int(schema.get("maxItems", lo + 2)))
        n = lo + pick(u, hi - lo + 1)
        return [instance(schema.get("items", {}), seed, f"{where}/{i}") for i in range(n)]
    if kind in ("integer", "number"):
        lo = schema.get("minimum", 0)
        hi = schema.get("maximum", lo + 100)
        value = lo + u * (hi - lo)
        return int(value) if kind == "integer" else round(value, 3)
    if kind == "boolean":
        return u < 0.5
    if kind == "null":
        return None
    words = SENTENCES[pick(u, len(SENTENCES))].rstrip(".").split()
    text = " ".join(words[: 2 + pick(unit(seed, "len", where), 6)])
    lo_len, hi_len = int(schema.get("minLength", 0)), schema.get("maxLength")
    text = text.ljust(lo_len, "x")
    return text[: int(hi_len)] if hi_len is not None else text


def json_answer(
    schema: dict[str, Any], seed: int, prompt: str, attempt: int, invalid_rate: float
) -> tuple[str, bool]:
    value = instance(schema, seed, prompt)
    if unit(seed, "json-invalid", prompt, attempt) >= invalid_rate:
        return json.dumps(value), True
    how = pick(unit(seed, "json-how", prompt, attempt), 3)
    if how == 0 or not isinstance(value, dict) or not value:
        text = json.dumps(value)
        return text[: max(1, len(text) // 2)], False  # cut short: not JSON
    broken = dict(value)
    required = [r for r in schema.get("required", []) if r in broken]
    if how == 1 and required:
        del broken[required[0]]
    else:
        name = next(iter(broken))
        kind = schema.get("properties", {}).get(name, {}).get("type")
        broken[name] = 12345 if kind == "string" else "not-a-" + str(kind or "value")
    return json.dumps(broken), False


def self_instruct_answer(seed: int, prompt: str) -> str:
    match = _QUERIES.search(prompt)
    assert match is not None
    n = int(match.group(1))
    context = _CONTEXT.search(prompt)
    topic = " ".join((context.group("c") if context else "the topic").split()[:6]).rstrip(".?!") or "it"
    start = pick(unit(seed, "queries", prompt), len(QUERY_FORMS))
    return "\n".join(
        f"{i + 1}. {QUERY_FORMS[(start + i) % len(QUERY_FORMS)].format(t=topic)}" for i in range(n)
    )


def evol_answer(seed: int, prompt: str) -> str:
    match = _EVOL.search(prompt)
    assert match is not None
    given = match.group("p").strip()
    if match.group("kind") == "Created":
        return f"In a less common setting, {given[0].lower()}{given[1:]}"
    for cue, addition in EVOL_ADDITIONS.items():
        if cue in prompt:
            return f"{given} {addition}"
    return f"{given} {EVOL_ADDITIONS['constraints']}"


def generic_answer(seed: int, prompt: str, variant: int, model: str = "") -> str:
    """3-6 sentences drawn by hash of (seed, model, prompt, variant): another model, another seed
    or another sample answers differently (16^3 or more ways)."""
    n = 3 + pick(unit(seed, "generic-len", model, prompt, variant), 4)
    topic = " ".join(prompt.split()[:6]).rstrip(".?!:")
    picks = [
        SENTENCES[pick(unit(seed, "generic", model, prompt, variant, i), len(SENTENCES))] for i in range(n)
    ]
    return f"About {topic}: " + " ".join(picks)
