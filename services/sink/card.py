"""The dataset card: README.md beside a run's data, in the Hugging Face card format (YAML front
matter with `configs` the Hub reads, then Markdown).

It says what a dataset is and how it was made: the subsets and their files, the pipeline's
YAML, every step's signature, the teacher endpoints and models, rows per stage, the quality
report, the gate verdict and the seed file's SHA-256. Never a secret: params and YAML keys
that name one (api keys, tokens, passwords, headers, ...) are replaced by `<redacted>`, and
URLs lose their user info and query string; the environment's keys are never read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from services.sink.release import PendingRelease
from shared.pipeline import PipelineSpec
from shared.step import Step

REDACTED = "<redacted>"
_SECRET_NAME = re.compile(
    r"api[_-]?key|secret|token|passw(or)?d|authori[sz]ation|credential|headers?$|cookie|private[_-]?key",
    re.IGNORECASE,
)
#: Parquet first: the Hub's viewer and `load_dataset` read it typed.
_DATA_FILES = ("data.parquet", "data.jsonl")


def redact(value: Any, name: str = "") -> Any:
    """`value` without secrets: values under secret-looking names, credentials in URLs."""
    if name and _SECRET_NAME.search(name):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return clean_url(value)
    return value


def clean_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme or not parts.hostname:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def pipeline_yaml(spec: PipelineSpec) -> str:
    """The pipeline as written (what the YAML set), redacted."""
    raw = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return str(yaml.safe_dump(redact(raw), sort_keys=False, allow_unicode=True))


@dataclass
class StepInfo:
    id: str
    step: str
    signature: str
    params: dict[str, Any]


def step_infos(spec: PipelineSpec, steps: Mapping[str, Step[Any]]) -> list[StepInfo]:
    """Each step of the pipeline as the card lists it (`steps`: the plan's step instances)."""
    return [
        StepInfo(s.id, s.step, steps[s.id].signature(), steps[s.id].params.model_dump(mode="json"))
        for s in spec.steps
    ]


@dataclass
class CardContext:
    spec: PipelineSpec
    run_id: str
    steps: list[StepInfo]
    #: the coordinator's run state (public part), or None if the sink did not see it
    state: dict[str, Any] | None
    verdict: dict[str, Any] | None
    seed_file: dict[str, Any] | None
    limit: int | None


def teachers(steps: list[StepInfo]) -> list[dict[str, str]]:
    """LLM steps (params with an `llm:` endpoint block): their model and endpoint, as far as the
    sink can tell (a URL from the environment is the sink's view of it; keys never appear)."""
    out = []
    for step in steps:
        llm = step.params.get("llm")
        if not isinstance(llm, dict):
            continue
        provider = str(llm.get("provider") or "openai")
        # The built-in clients read <PROVIDER>_BASE_URL when the block names no URL.
        env = llm.get("base_url_env") or f"{provider.upper()}_BASE_URL"
        if llm.get("base_url"):
            endpoint = clean_url(str(llm["base_url"]))
        elif os.environ.get(env):
            endpoint = f"{clean_url(os.environ[env])} ({env}, as the sink sees it)"
        else:
            endpoint = f"{env} of the step's service"
        out.append({"step": step.id, "model": str(llm.get("model", "")), "endpoint": endpoint})
    return out


def render(ctx: CardContext, release: PendingRelease, prefix: str = "") -> str:
    """The card's text; `prefix` is where the data sits relative to the card's folder."""
    front = _front_matter(ctx, release, prefix)
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n",
        f"# {ctx.spec.name}: run {ctx.run_id}\n",
        "Distilled with FastDistill: every step a Kafka service, exactly once, checked by quality "
        "gates before release. The released data of a stage is its **kept** rows; the rows it "
        "rejected are a subset of their own, with the reason in `rejected_because`.\n",
        _subsets(release, prefix),
        _gate(ctx),
        _seed(ctx),
        _teachers(ctx, release),
        _stages(ctx),
        _quality(ctx),
        _steps(ctx),
        "## Pipeline\n\n```yaml\n" + pipeline_yaml(ctx.spec) + "```\n",
        _loading(release, prefix),
    ]
    return "\n".join(p for p in parts if p)


def _size_category(rows: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    return next((name for bound, name in bounds if rows < bound), "1M<n<10M" if rows < 10**7 else "n>10M")


def _data_file(files: dict[str, str], folder: str) -> str | None:
    return next((f"{folder}/{name}" for name in _DATA_FILES if f"{folder}/{name}" in files), None)


def _front_matter(ctx: CardContext, release: PendingRelease, prefix: str) -> dict[str, Any]:
    configs = []
    for stage, summary in release.subsets.items():
        kept_folders = (
            {split: f"{stage}/{split}" for split in summary["splits"]}
            if summary["splits"]
            else {"train": stage}
        )
        data_files = [
            {"split": split, "path": prefix + path}
            for split, folder in kept_folders.items()
            if (path := _data_file(summary["files"], folder))
        ]
        if data_files:
            configs.append(
                {
                    "config_name": stage,
                    "data_files": data_files,
                    **({"default": True} if stage == release.primary else {}),
                }
            )
        rejected = _data_file(summary["files"], summary["folders"]["rejected"])
        if rejected:
            configs.append(
                {
                    "config_name": f"{stage}.rejected",
                    "data_files": [{"split": "train", "path": prefix + rejected}],
                }
            )
    verdict = ctx.verdict or {}
    return {
        "pretty_name": f"{ctx.spec.name} {ctx.run_id}",
        "tags": ["fastdistill", "synthetic", "distillation"],
        "size_categories": [_size_category(release.kept)],
        "configs": configs,
        "fastdistill": {
            "pipeline": ctx.spec.name,
            "run_id": ctx.run_id,
            "seed_file": ctx.seed_file,
            "gate": {"passed": verdict.get("passed"), "failures": verdict.get("failures", [])}
            if ctx.verdict
            else None,
            "subsets": {
                s: {"kept": v["kept"], "rejected": v["rejected"]} for s, v in release.subsets.items()
            },
        },
    }


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _subsets(release: PendingRelease, prefix: str) -> str:
    rows = []
    for stage, s in release.subsets.items():
        splits = ", ".join(f"{k} {v}" for k, v in s["splits"].items()) if s["splits"] else "-"
        rows.append(
            [
                stage,
                s["kept"],
                splits,
                s["rejected"],
                f"`{prefix}{stage}/`",
                f"`{prefix}{s['folders']['rejected']}/`",
            ]
        )
    out = "## Subsets\n\n" + _table(
        ["subset", "kept", "splits", "rejected", "kept rows", "rejected rows"], rows
    )
    for stage, s in release.subsets.items():
        if s["rejected_because"]:
            reasons = ", ".join(f"`{k}` {v}" for k, v in s["rejected_because"].items())
            out += f"\nRejected from `{stage}` because: {reasons}.\n"
    files = [
        [f"`{prefix}{name}`", digest] for s in release.subsets.values() for name, digest in s["files"].items()
    ]
    files += [[f"`{prefix}{name}`", digest] for name, digest in release.files.items()]
    out += f"\nFormats: {', '.join(release.formats)}. Files and their SHA-256 (also in RELEASED.json):\n\n"
    return out + _table(["file", "sha256"], files)


def _gate(ctx: CardContext) -> str:
    if ctx.verdict is None:
        return (
            "## Gate verdict\n\nNone: this run was released without waiting for the gates "
            "(`await_gate: false`).\n"
        )
    gates = {stage: ctx.spec.gates_of(stage) for stage in ctx.spec.stages if ctx.spec.gates_of(stage)}
    out = "## Gate verdict\n\n" + (
        "**Passed.**\n" if ctx.verdict.get("passed") else "**Failed**: nothing was released.\n"
    )
    out += "".join(f"- {failure}\n" for failure in ctx.verdict.get("failures", []))
    if gates:
        out += "\nThresholds: " + "; ".join(f"{stage}: {json.dumps(g)}" for stage, g in gates.items()) + "\n"
    return out


def _seed(ctx: CardContext) -> str:
    out = "## Seeds\n\n"
    replay = (ctx.state or {}).get("replay")
    if ctx.seed_file:
        out += f"Seed file `{ctx.seed_file.get('name')}`, SHA-256 `{ctx.seed_file.get('sha256')}`.\n"
    elif replay:
        out += (
            f"A replay of run `{replay.get('replay_of')}` from step `{replay.get('from_step')}` "
            "(with that run's seeds).\n"
        )
    else:
        out += "Not recorded: the run was not produced by `fastdistill produce` from a file.\n"
    if ctx.limit is not None:
        out += f"\nEarly stop: the run was limited to {ctx.limit} rows of its final stage.\n"
    return out


def _teachers(ctx: CardContext, release: PendingRelease) -> str:
    found = teachers(ctx.steps)
    if not found and not release.models:
        return ""
    out = "## Teachers\n\n"
    if found:
        out += _table(["step", "model", "endpoint"], [[t["step"], t["model"], t["endpoint"]] for t in found])
    for column, models in release.models.items():
        out += f"\nModels named in `{column}` of the released rows: {', '.join(f'`{m}`' for m in models)}.\n"
    return out


def _stages(ctx: CardContext) -> str:
    stages = (ctx.state or {}).get("stages") or {}
    if not stages:
        return "## Rows per stage\n\nNot known to the sink when it released this run.\n"
    rows = [[stage, info.get("rows_out"), info.get("rows_dropped", "-")] for stage, info in stages.items()]
    dead = (ctx.state or {}).get("dead_letters") or {}
    out = "## Rows per stage\n\n" + _table(["stage", "rows out", "dropped"], rows)
    if dead:
        out += "\nDead letters: " + json.dumps(dead, sort_keys=True) + "\n"
    return out


def _quality(ctx: CardContext) -> str:
    reports = (ctx.state or {}).get("reports") or {}
    quality = reports.get("quality")
    if not quality:
        return ""
    out = "## Quality\n\n"
    for report in quality:
        scalars = [
            [k, v]
            for k, v in report.items()
            if k not in ("run_id", "stage") and not isinstance(v, dict | list)
        ]
        nested = {k: v for k, v in report.items() if isinstance(v, dict | list) and v}
        out += f"### {report.get('stage')}\n\n" + _table(["metric", "value"], scalars)
        if nested:
            out += "\n```json\n" + json.dumps(nested, indent=1, sort_keys=True) + "\n```\n"
        out += "\n"
    return out


def _steps(ctx: CardContext) -> str:
    rows = [
        [s.id, s.step, f"`{s.signature}`", json.dumps(redact(s.params), sort_keys=True)] for s in ctx.steps
    ]
    return "## Steps\n\n" + _table(["step", "kind", "signature", "params"], rows)


def _loading(release: PendingRelease, prefix: str) -> str:
    primary = release.primary
    summary = release.subsets.get(primary)
    if summary is None:
        return ""
    out = "## Loading\n\n```python\n"
    if "hf" in release.formats:
        out += "import datasets\n"
        out += f'parts = datasets.load_from_disk("{prefix}hf")  # keys: subset[.split], subset.rejected\n'
    parquet = next(
        (n for n in summary["files"] if n.endswith("data.parquet") and not n.startswith(f"{primary}.")), None
    )
    if parquet:
        out += f'import pandas\nkept = pandas.read_parquet("{prefix}{parquet}")\n'
    return out + "```\n"
