"""Shared fixtures: a real Kafka broker for every test marked `kafka`.

The broker is, in order: `KAFKA_BOOTSTRAP_SERVERS` if set; a testcontainers Kafka if a
Docker engine answers; else the project's own local broker (`fastdistill.dev.local_broker`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

# Property tests check behaviour, not speed: on two shared CI cores a per-example deadline only
# measures the load (one writer test failed so while a benchmark started).
settings.register_profile("fastdistill", deadline=None)
settings.load_profile("fastdistill")


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_answers():
        try:
            from testcontainers.kafka import KafkaContainer
        except ImportError:
            pass
        else:
            # testcontainers-python's KafkaContainer drives Confluent's image (Kafka 3.9 here).
            with KafkaContainer("confluentinc/cp-kafka:7.9.0").with_kraft() as container:
                yield container.get_bootstrap_server()
            return
    from fastdistill.dev import local_broker

    local_broker.CACHE.mkdir(parents=True, exist_ok=True)
    with open(local_broker.CACHE / f"sessions-{local_broker.DEFAULT_PORT}.lock", "a") as lease:
        # Every session holds a shared lease, so the one that started the broker leaves it
        # running for sessions that are still using it (others test in parallel on this machine).
        fcntl.flock(lease, fcntl.LOCK_SH)
        was_running = local_broker.is_running()
        info = local_broker.up()
        # Subprocess services started by tests find the broker the same way.
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = info.bootstrap
        try:
            yield info.bootstrap
        finally:
            os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
            if not was_running:
                with contextlib.suppress(BlockingIOError):
                    fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    local_broker.down()


@pytest.fixture
def fresh_topic_prefix() -> str:
    """A unique, lower-case name part so tests never share topics or consumer groups."""
    return f"t{uuid.uuid4().hex[:8]}"
