"""`echo`: an LLM client that answers every request with its last user message, with no network.

Deterministic (the same request always gets the same answer), so a pipeline runs offline and a
test can predict every row. It honours one decode setting, `max_tokens`, as a number of words,
so `llm.generation_kwargs` visibly changes answers (and, being part of the wire body, cache keys).
"""

from __future__ import annotations

from typing import Any

from shared.llm import LLMEndpoint, LLMRequest, LLMResponse, Rejected, normalised_url

#: The endpoint identity when `llm.base_url` is not given: part of every generation cache key.
DEFAULT_ENDPOINT = "echo://local"


class EchoClient:
    def __init__(self, endpoint: LLMEndpoint) -> None:
        self.model = endpoint.model
        self.endpoint = normalised_url(endpoint.base_url) if endpoint.base_url else DEFAULT_ENDPOINT

    def body(self, request: LLMRequest) -> dict[str, Any]:
        # Everything that decides the answer, as a real API would receive it: the cache key covers it.
        body: dict[str, Any] = {"model": self.model, "messages": request.messages, **request.settings}
        if request.response_format is not None:
            body["response_format"] = request.response_format
        return body

    async def complete(self, request: LLMRequest) -> LLMResponse:
        users = [m for m in request.messages if m.get("role") == "user"]
        text = users[-1].get("content") if users else None
        if not isinstance(text, str) or not text.strip():
            # What a server's 4xx maps to: asking again changes nothing, the row is dead-lettered.
            raise Rejected("echo: the request has no user message to echo")
        words = text.split()
        limit = request.settings.get("max_tokens")
        cut = isinstance(limit, int) and len(words) > limit
        answer = words[:limit] if cut and isinstance(limit, int) else words
        prompt = sum(len(str(m.get("content", "")).split()) for m in request.messages)
        return LLMResponse(
            text=" ".join(answer),
            model=self.model,
            prompt_tokens=prompt,
            completion_tokens=len(answer),
            finish_reason="length" if cut else "stop",
        )

    async def probe(self) -> None:
        """Always there: nothing to reach."""

    async def aclose(self) -> None:
        """Nothing to release."""
