"""`chat`: `chat.jsonl`, one `{"messages": [{"role", "content"}, ...]}` per kept row, the shape
SFT trainers read (TRL's SFTTrainer, MLX-LM's chat data, OpenAI fine-tuning).

`roles` maps each role, in message order, to a field or a template over fields, e.g.
`{system: system_prompt, user: "Schema: {schema}\\nQuestion: {instruction}", assistant: sql}`.
A null or empty `system` leaves that message out; a row whose any other role is null or empty
is left out of the file and counted (by role) in the release record, never written half.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from services.sink.formats import FormatOptions, PartRows, SinkFormat, Written
from services.sink.formats.fields import fields_of, text_of

#: Roles whose message may be absent from a conversation.
OPTIONAL_ROLES = frozenset({"system"})


class ChatOptions(FormatOptions):
    roles: dict[str, str] = Field(min_length=1)
    file: str = Field("chat.jsonl", pattern=r"^[\w.-]+\.jsonl$")

    @field_validator("roles")
    @classmethod
    def _roles(cls, roles: dict[str, str]) -> dict[str, str]:
        if not any(role not in OPTIONAL_ROLES for role in roles):
            raise ValueError("a conversation needs a role besides system (user, assistant)")
        return roles


def messages(roles: dict[str, str], row: dict[str, Any]) -> list[dict[str, str]] | str:
    """The row's messages, or the first required role it lacks."""
    out = []
    for role, spec in roles.items():
        content = text_of(spec, row)
        if not content:
            if role in OPTIONAL_ROLES:
                continue
            return role
        out.append({"role": role, "content": content})
    return out


class ChatFormat(SinkFormat):
    name: ClassVar[str] = "chat"
    Options: ClassVar[type[FormatOptions]] = ChatOptions
    writes_rejected: ClassVar[bool] = False

    @property
    def chat(self) -> ChatOptions:
        assert isinstance(self.options, ChatOptions)
        return self.options

    def reads(self) -> set[str]:
        return {name for spec in self.chat.roles.values() for name in fields_of(spec)}

    def write_part(self, rows: PartRows, folder: Path) -> Written:
        name = self.chat.file
        written = 0
        lacking: Counter[str] = Counter()
        digest = hashlib.sha256()
        with open(folder / name, "wb") as fh:
            for row in rows.records():
                conversation = messages(self.chat.roles, row)
                if isinstance(conversation, str):
                    lacking[f"no {conversation}"] += 1
                    continue
                line = (json.dumps({"messages": conversation}, ensure_ascii=False) + "\n").encode("utf-8")
                digest.update(line)
                fh.write(line)
                written += 1
        note = {"rows": written, "skipped": dict(sorted(lacking.items()))}
        return Written([name], {name: note}, {name: digest.hexdigest()})
