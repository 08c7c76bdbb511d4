"""Prompt templates: Jinja2 with StrictUndefined, in a sandbox.

`variables` are the fields a template reads: an LLM step reports them through `reads()`, so a
template naming a field no input carries does not load. At row time a field that is absent or
null is a row error naming it (rather than the text "None" in a prompt); optional fields are
tested with `{% if field is defined %}`. A syntax error is a load-time error.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2 import StrictUndefined, meta
from jinja2.sandbox import SandboxedEnvironment

#: keep_trailing_newline: a template renders exactly as written (str.format kept it too)
ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class TemplateRowError(ValueError):
    """The row lacks a value the template needs."""


class Template:
    def __init__(self, source: str, name: str = "template") -> None:
        self.source = source
        self.name = name
        try:
            parsed = ENV.parse(source)
            self._compiled = ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"{name}: Jinja2 syntax error at line {exc.lineno}: {exc.message}") from None
        self.variables = frozenset(meta.find_undeclared_variables(parsed) - set(ENV.globals))

    def render(self, row: dict[str, Any], **extra: Any) -> str:
        values = {k: v for k, v in row.items() if v is not None} | extra
        try:
            return self._compiled.render(values)
        except jinja2.UndefinedError as exc:
            missing = sorted(v for v in self.variables if v not in values)
            what = (
                f"field {missing[0]!r}" if len(missing) == 1 else f"fields {missing}" if missing else str(exc)
            )
            raise TemplateRowError(
                f"{self.name} needs {what}, which the row lacks (absent or null)"
            ) from None
