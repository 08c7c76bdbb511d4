"""A pipeline step as a Kafka service process: the runtime's runner over the Kafka transport,
with `/metrics`, `/healthz`, run control and the watchdog around it."""

from __future__ import annotations

from typing import Any

from shared.config import KafkaSettings, ServiceSettings
from shared.kafka.control import ControlView
from shared.kafka.state import KafkaStateBackend
from shared.kafka.transport import KafkaTransport
from shared.runtime.health import serving
from shared.runtime.runner import RunnerSettings, StepRunner
from shared.runtime.watchdog import watchdog
from shared.runtime.wiring import Wiring
from shared.serde import AvroSerde
from shared.step import Step


class StepService:
    def __init__(
        self,
        step: Step[Any],
        wiring: Wiring,
        serde: AvroSerde,
        kafka: KafkaSettings,
        settings: ServiceSettings,
    ) -> None:
        self.settings = settings
        self.transport = KafkaTransport(kafka, wiring.group_id, wiring.input_topics, settings.instance_id)
        control = ControlView(kafka, wiring.control_topic) if wiring.control_topic is not None else None
        self.runner = StepRunner(
            step,
            wiring,
            serde,
            self.transport,
            KafkaStateBackend(kafka),
            RunnerSettings(
                instance_id=settings.instance_id,
                commit_interval_s=settings.commit_interval_ms / 1000,
                shutdown_grace_s=settings.shutdown_grace_s,
                pause_after_full_s=settings.pause_after_full_s,
                max_message_bytes=kafka.max_message_bytes,
                progress_stall_s=settings.progress_stall_s,
            ),
            control,
        )

    async def run(self) -> None:
        runner, settings = self.runner, self.settings
        async with (
            serving(settings.metrics_host, settings.metrics_port, runner.health, runner.stop),
            watchdog(runner.w.stage, lambda: runner.stalled(settings.stall_limit_s)),
        ):
            await runner.run()

    def stop(self) -> None:
        self.runner.stop()
