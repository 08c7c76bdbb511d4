"""chat_generation: the next assistant turn of a multi-turn conversation held in a row.

`messages_field` holds the conversation: a list of `{role, content}` (system, user, assistant)
ending with a user turn, or that list as JSON text. `system_prompt` is put first when the
conversation has no system turn of its own. The row gets the same fields as text_generation.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from services.llm.step import LLMParams, LLMStep
from services.text_generation.step import TextGenerationStep
from shared.llm import LLMRequest
from shared.schemas import load_avsc
from shared.step import Row

ROLES = frozenset({"system", "user", "assistant"})


class ChatParams(LLMParams):
    messages_field: str = "messages"
    system_prompt: str | None = None
    decode_profile_field: str | None = None
    output: str = "generation"


class ConversationError(ValueError):
    """The row's conversation cannot be sent."""


class ChatGenerationStep(LLMStep[ChatParams]):
    name: ClassVar[str] = "chat_generation"
    outputs: ClassVar[tuple[str, ...]] = TextGenerationStep.outputs[:6]
    schema: ClassVar[dict[str, Any]] = load_avsc("steps/text_generation.avsc")

    def renamed(self) -> dict[str, str]:
        return {"generation": self.params.output}

    def reads(self) -> set[str]:
        return {self.params.messages_field}

    def messages(self, row: Row) -> list[dict[str, Any]]:
        field = self.params.messages_field
        value = row.get(field)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConversationError(f"{field} is not JSON: {exc}") from None
        if not isinstance(value, list) or not value:
            raise ConversationError(f"{field} must be a non-empty list of messages")
        turns = []
        for i, message in enumerate(value):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise ConversationError(f"{field}[{i}] is not a message with a role in {sorted(ROLES)}")
            if not isinstance(message.get("content"), str):
                raise ConversationError(f"{field}[{i}] has no text content")
            turns.append({"role": message["role"], "content": message["content"]})
        if turns[-1]["role"] != "user":
            raise ConversationError(f"{field} must end with a user turn, not {turns[-1]['role']}")
        if self.params.system_prompt and turns[0]["role"] != "system":
            turns.insert(0, {"role": "system", "content": self.params.system_prompt})
        return turns

    async def process_row_async(self, row: Row) -> Row:
        request = LLMRequest(self.messages(row), self.settings(row, self.params.decode_profile_field))
        generation = await self.generate(request)
        return row | {self.params.output: generation.text, **self.meta([generation])}
