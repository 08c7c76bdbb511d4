"""What a pipeline's `sink:` section means, in the terms every part of the sink shares (and
light to import: every service validates the pipeline, sink section included, at start)."""

from __future__ import annotations

from shared.pipeline import PipelineSpec

#: The column a rejected row gets: why it was rejected.
REJECTED_BECAUSE = "rejected_because"


def released_stages(spec: PipelineSpec) -> list[str]:
    """The stages the sink releases: `sink.stages`, else the pipeline's leaves."""
    return list(spec.sink.stages) if spec.sink.stages is not None else spec.leaves
