"""The seed row of the text-to-SQL example, validated before anything reaches Kafka.

Seeds come from files people edit by hand, so validation is strict: no coercion ("128" is
not a token count), no unknown keys (a typo would silently lose a field), bounded string
sizes (one runaway line must not become a 100 MB message) and no NUL characters (they break
SQLite, C-string consumers and many terminals downstream). `model_dump()` matches
`schemas/rows/seed.avsc` field for field.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.sql_eval.databases import DB_ID_PATTERN

MAX_CHARS = 20_000

Text = Annotated[str, StringConstraints(max_length=MAX_CHARS)]
NonEmptyText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHARS)]
#: The database a seed's SQL runs against (Spider/BIRD `db_id`); a file name, so safe characters only.
DbId = Annotated[str, StringConstraints(pattern=DB_ID_PATTERN)]


def _reject_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class DecodeProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    temperature: float = Field(ge=0.0, le=2.0)
    max_tokens: int = Field(ge=1, le=8192)


with warnings.catch_warnings():
    # `schema` is the seed format's own name for the field; BaseModel.schema() is a deprecated
    # v1 alias nobody here calls, so shadowing it is deliberate.
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class Seed(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

        task_id: NonEmptyText
        schema: Text  # type: ignore[assignment]
        instruction: NonEmptyText
        gold_sql: Text | None = None
        decode_profile: DecodeProfile | None = None
        system_prompt: Text | None = None
        db_id: DbId | None = None

        _no_nul = field_validator("task_id", "schema", "instruction", "gold_sql", "system_prompt")(
            _reject_nul
        )


class PromptSeed(BaseModel):
    """A seed of any instruction-following task (examples/answers): an instruction, and
    optionally a system prompt. `model_dump()` matches `schemas/rows/prompt.avsc`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    task_id: NonEmptyText
    instruction: NonEmptyText
    system_prompt: Text | None = None

    _no_nul = field_validator("task_id", "instruction", "system_prompt")(_reject_nul)
