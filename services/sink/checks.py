"""What is wrong with a pipeline's `sink:` section, found when the pipeline loads.

`fastdistill.plan.PipelinePlan.build` adds these to the problems it reports together, so an
unknown format, bad format options or a select on a field the released stage lacks stop the
pipeline before anything starts, each named on one line.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from services.sink.formats import SINK_FORMATS, SinkFormat
from services.sink.spec import REJECTED_BECAUSE, released_stages
from shared.pipeline import PipelineSpec
from shared.registry import UnknownName
from shared.topic_schema import dataset_columns


def sink_problems(spec: PipelineSpec, fields: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Problems of `spec.sink`; `fields` are the stages' row fields (a stage missing from it had
    problems of its own, already reported)."""
    sink = spec.sink
    problems: list[str] = []
    stages = released_stages(spec)
    columns: dict[str, set[str]] = {}
    for stage in stages:
        if stage not in spec.stages:
            problems.append(f"sink: stage {stage!r} is no stage; stages: {', '.join(spec.stages)}")
        elif stage in fields:
            columns[stage] = set(dataset_columns(fields[stage]))
    needed = {
        "select": sink.select.field if sink.select else None,
        "split_by": sink.split_by if sink.split else None,
    }
    for stage, have in columns.items():
        for option, name in needed.items():
            if name is not None and name not in have:
                problems.append(
                    f"sink: {option} reads {name!r}, which released stage {stage!r} does not carry"
                )
        if REJECTED_BECAUSE in have:
            problems.append(
                f"sink: released stage {stage!r} has a field {REJECTED_BECAUSE!r}, the name the sink "
                "gives the reason of a rejected row"
            )
    for name, options in sink.format_entries():
        try:
            cls = SINK_FORMATS.get(name)
        except UnknownName as exc:
            problems.append(f"sink format {name!r}: {exc}")
            continue
        except Exception as exc:  # an entry point that does not import
            problems.append(f"sink format {name!r} does not load: {type(exc).__name__}: {exc}")
            continue
        try:
            fmt: SinkFormat = cls(cls.Options.model_validate(options))
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                problems.append(f"sink format {name!r}: {where + ': ' if where else ''}{error['msg']}")
            continue
        chosen = fmt.options.subsets
        for stage in sorted(set(chosen or ()) - set(stages)):
            problems.append(
                f"sink format {name!r}: subset {stage!r} is no released stage; released: {stages}"
            )
        for stage, have in columns.items():
            if chosen is not None and stage not in chosen:
                continue
            missing = sorted(fmt.reads() - have)
            if missing:
                problems.append(
                    f"sink format {name!r} reads {', '.join(map(repr, missing))}, which released stage "
                    f"{stage!r} does not carry"
                )
    return problems
