"""Shared fixtures: a real Kafka broker for every test marked `kafka`.

The broker is, in order: `KAFKA_BOOTSTRAP_SERVERS` if set; a testcontainers Kafka if a
Docker engine answers; else the project's own local broker (`fastdistill.dev.local_broker`).

The session fails if any process it started outlives it (`tests/orphans.py`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.orphans import hand_over, pytest_sessionfinish, pytest_sessionstart

# The session hooks of tests/orphans.py, found here by name.
__all__ = ["pytest_sessionfinish", "pytest_sessionstart"]

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
        try:  # a dev dependency; its Kafka module moved to `community` in testcontainers 4.13
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:
            from testcontainers.kafka import KafkaContainer
        # testcontainers-python's KafkaContainer drives Confluent's image (Kafka 3.9 here).
        with KafkaContainer("confluentinc/cp-kafka:7.9.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from fastdistill.dev import local_broker

    local_broker.CACHE.mkdir(parents=True, exist_ok=True)
    port = local_broker.DEFAULT_PORT
    # Which broker test sessions started (not one a developer started by hand): the last session
    # out stops that one, whichever session started it.
    started_by_tests = local_broker.CACHE / f"sessions-{port}.started"
    with open(local_broker.CACHE / f"sessions-{port}.lock", "a") as lease:
        # Every session holds a shared lease, so the one that started the broker leaves it
        # running for sessions that are still using it (others test in parallel on this machine).
        fcntl.flock(lease, fcntl.LOCK_SH)
        info = local_broker.up(port)
        if info.started:
            started_by_tests.write_text(str(info.pid))
        # Subprocess services started by tests find the broker the same way.
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = info.bootstrap
        try:
            yield info.bootstrap
        finally:
            os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
            try:
                fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                hand_over(info.pid)  # another session still uses it; the last one out stops it
            else:
                if started_by_tests.exists() and started_by_tests.read_text() == str(local_broker.pid(port)):
                    local_broker.down(port)
                started_by_tests.unlink(missing_ok=True)


@pytest.fixture
def fresh_topic_prefix() -> str:
    """A unique, lower-case name part so tests never share topics or consumer groups."""
    return f"t{uuid.uuid4().hex[:8]}"
