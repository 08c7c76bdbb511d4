"""`chat`: `chat.jsonl`, one `{"messages": [{"role", "content"}, ...]}` per kept row, the shape
SFT trainers read (TRL's SFTTrainer, MLX-LM's chat data, OpenAI fine-tuning).

`roles` maps `user`, `assistant` and optionally `system` to a field or a template over fields,
e.g. `{system: system_prompt, user: "Schema: {schema}\\nQuestion: {instruction}", assistant: sql}`.
Messages come in that order (system, user, assistant) whatever the order of the mapping, so a
tool re-sorting YAML keys changes nothing. A null or empty `system` leaves that message out; a
row whose user or assistant is null or empty is left out of the file and counted (by role) in
the release record, never written half.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from services.sink.formats import FormatOptions, PartRows, SinkFormat, Written
from services.sink.formats.fields import fields_of, text_of

Role = Literal["system", "user", "assistant"]
#: Roles in message order.
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
#: Roles whose message may be absent from a conversation.
OPTIONAL_ROLES = frozenset({"system"})


class ChatOptions(FormatOptions):
    roles: dict[Role, str]
    file: str = Field("chat.jsonl", pattern=r"^[\w.-]+\.jsonl$")

    @field_validator("roles")
    @classmethod
    def _roles(cls, roles: dict[Role, str]) -> dict[Role, str]:
        missing = [role for role in ROLES if role not in OPTIONAL_ROLES and role not in roles]
        if missing:
            raise ValueError(f"a conversation needs a user and an assistant; no {', '.join(missing)} given")
        return roles


def messages(roles: dict[Role, str], row: dict[str, Any]) -> list[dict[str, str]] | str:
    """The row's messages, or the first required role it lacks."""
    out = []
    for role in ROLES:
        spec = roles.get(role)
        if spec is None:
            continue
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
