"""The topics a pipeline declares (state-store topics are created by the services that own them)."""

from __future__ import annotations

from shared.kafka.clients import TopicSpec
from shared.pipeline import PipelineSpec


def pipeline_topics(spec: PipelineSpec) -> list[TopicSpec]:
    n, rf = spec.partitions, spec.replication_factor
    data = [TopicSpec(spec.topic(stage), n, rf) for stage in spec.stages]
    return [
        *data,
        TopicSpec(spec.dlq_topic, n, rf),
        # One partition: the coordinator reads every service's progress in commit order.
        TopicSpec(spec.progress_topic, 1, rf),
        TopicSpec.compacted(spec.runs_topic, 1, rf),
        TopicSpec.compacted(spec.gates_topic, 1, rf),
        TopicSpec.compacted(spec.control_topic, 1, rf),
    ]
