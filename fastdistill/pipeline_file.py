"""Loading the pipeline a command names (--pipeline or FD_PIPELINE), every problem said as a
`UserError` naming the file (and the step), before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from fastdistill.errors import UserError, problems_error
from fastdistill.plan import PipelinePlan, PlanError
from shared.config import ServiceSettings
from shared.pipeline import PipelineSpec


def pipeline_path(pipeline: Path | None) -> Path:
    return pipeline or Path(ServiceSettings().pipeline)


def load_spec(pipeline: Path | None) -> PipelineSpec:
    """The pipeline's spec (its YAML and model checked; steps are not built)."""
    path = pipeline_path(pipeline)
    try:
        return PipelineSpec.load(path)
    except FileNotFoundError:
        origin = "--pipeline" if pipeline is not None else "FD_PIPELINE"
        if pipeline is None and "FD_PIPELINE" not in os.environ:
            origin = "the default: FD_PIPELINE is not set"
        raise UserError(
            f"{path}: no such pipeline file ({origin})",
            "give the pipeline YAML with --pipeline FILE or set FD_PIPELINE",
        ) from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not a pipeline YAML", "give --pipeline FILE") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {what}", "fix the file's YAML there") from None
    except ValidationError as exc:
        raise problems_error(
            path,
            [
                f"{'.'.join(str(p) for p in e['loc']) or 'pipeline'}: {e['msg']}".replace("Value error, ", "")
                for e in exc.errors()
            ],
        ) from None


def load_plan(pipeline: Path | None, every_problem: bool = False) -> tuple[Path, PipelineSpec, PipelinePlan]:
    """The pipeline and its plan, validated as a whole (steps, params, fields, schemas, gates);
    `every_problem`: all of them said (for `validate`), not the first few."""
    spec = load_spec(pipeline)
    path = pipeline_path(pipeline)
    try:
        return path, spec, PipelinePlan.build(spec)
    except PlanError as exc:
        raise problems_error(path, exc.problems, every_problem) from None
