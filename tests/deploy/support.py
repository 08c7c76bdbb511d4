"""What the deployment tests share: the CLI check of a container command, the environment variables
the services really read, and the PromQL of the Grafana dashboards."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings
from typer.main import get_command
from typer.testing import CliRunner

from fastdistill.cli import app
from shared.config import KafkaSettings, RegistrySettings, ServiceSettings
from shared.pipeline import PipelineSpec

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "examples/text2sql/pipeline.yaml"
DASHBOARDS = REPO / "deploy/grafana/dashboards"
#: `fastdistill serve X` accepts these besides the step ids of the pipeline.
SERVE_EXTRA = ("sink", "coordinator")
#: Read by the OpenAI-compatible LLM client (services/llm/openai_client.py) when `llm:` names no
#: base URL and no api_key_env.
TEACHER_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY")
SETTINGS: tuple[type[BaseSettings], ...] = (KafkaSettings, RegistrySettings, ServiceSettings)


def pipeline() -> PipelineSpec:
    return PipelineSpec.load(PIPELINE)


def settings_env() -> set[str]:
    """Every variable the settings classes read: env_prefix + field name, as pydantic-settings does."""
    names = set()
    for cls in SETTINGS:
        prefix = str(cls.model_config.get("env_prefix", ""))
        names |= {f"{prefix}{field}".upper() for field in cls.model_fields}
    return names


def env_var_problem(name: str) -> str | None:
    """Why `name` would be ignored by the services, or None if something reads it."""
    if name in settings_env() or name in TEACHER_ENV or name.startswith("PYTHON"):
        return None
    return f"{name} is read by no settings class ({', '.join(c.__name__ for c in SETTINGS)}) nor the teacher"


def cli_problem(argv: list[str]) -> str | None:
    """Why `argv` is not a working `fastdistill` invocation, or None.

    `--help` of the sub-command proves it exists; parsing the actual arguments with click (without
    running the command) proves every option and argument given is one the command takes.
    """
    if not argv or argv[0] != "fastdistill":
        return f"{argv}: not the project's CLI (`fastdistill ...`)"
    # A click command tree; typer bundles click privately, so groups are told apart by `commands`.
    command: Any = get_command(app)
    path: list[str] = []
    args = list(argv[1:])
    while hasattr(command, "commands") and args and args[0] in command.commands:
        path.append(args.pop(0))
        command = command.commands[path[-1]]
    if not path or hasattr(command, "commands"):
        return f"{argv}: no such command"
    result = CliRunner().invoke(app, [*path, "--help"])
    if result.exit_code != 0:
        return f"`fastdistill {' '.join(path)} --help` exited {result.exit_code}: {result.output}"
    try:
        ctx = command.make_context(" ".join(path), args)
    except Exception as exc:  # click's UsageError / BadParameter
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"{argv}: {message}"
    if path == ["serve"]:
        step = ctx.params["step"]
        known = [s.id for s in pipeline().steps] + list(SERVE_EXTRA)
        if step not in known:
            return f"{argv}: {step!r} is no step of {PIPELINE.name} nor one of {SERVE_EXTRA}"
    return None


def serve_target(argv: list[str]) -> str | None:
    """The step id of a `fastdistill serve X` command, None for any other command."""
    return argv[2] if argv[:2] == ["fastdistill", "serve"] and len(argv) > 2 else None


# -- dashboards ------------------------------------------------------------------------------------
def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with queries, including those nested in collapsed rows."""
    found = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            found.extend(p for p in panel.get("panels", []) if p.get("targets"))
        elif panel.get("targets") is not None:
            found.append(panel)
    return found


def exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) for every query of every dashboard."""
    return [
        (name, panel["title"], target["expr"])
        for name, board in dashboards().items()
        for panel in panels(board)
        for target in panel["targets"]
    ]


#: Grafana's variables, made concrete for a direct query to Prometheus.
GRAFANA_VARS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "pipeline": ".*",
    "run_id": ".*",
}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def grafana_vars(expr: str) -> set[str]:
    return {a or b for a, b in _VAR.findall(expr)}


def concrete(expr: str, **values: str) -> str:
    """`expr` with Grafana's variables replaced: `values` (e.g. pipeline="x") over GRAFANA_VARS."""
    known = GRAFANA_VARS | values
    return _VAR.sub(lambda m: known[m.group(1) or m.group(2)], expr)


# A small PromQL scan, enough for the dashboards: after removing strings, label matchers, ranges and
# grouping clauses, every identifier not followed by "(" and not a keyword is a metric name.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
_LABEL_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end() :].lstrip()
        word = match.group()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def label_matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) for every matcher written in `metric{...}` form."""
    found = []
    for selector in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^{}]*\})", expr):
        for label, op, value in _LABEL_MATCHER.findall(selector.group(2)):
            found.append((selector.group(1), label, op, value))
    return found
