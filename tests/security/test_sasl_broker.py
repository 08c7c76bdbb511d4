"""SASL/PLAIN against a real broker: the project's own broker on free ports with a SASL_PLAINTEXT
listener; clients configured only through the `KAFKA_*` environment, as services are."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, KafkaException

from fastdistill.dev import local_broker
from shared.config import KafkaSettings
from shared.kafka import clients

pytestmark = pytest.mark.kafka

USERS = {"fd-service": "right-Pa55word"}


def _free_ports(n: int) -> int:
    """A port p with p .. p + n - 1 all free (broker, controller and SASL listeners)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for offset in range(1, n):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no {n} adjacent free ports")


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_broker.BrokerInfo]:
    port = _free_ports(3)
    info = local_broker.up(port, tmp_path_factory.mktemp("sasl") / "kafka", sasl_users=USERS)
    yield info
    local_broker.stop_hard(port, info.data_dir)


def _settings(monkeypatch: pytest.MonkeyPatch, bootstrap: str, password: str) -> KafkaSettings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "fd-service")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", password)
    return KafkaSettings()


def test_right_credentials_produce_transactionally_and_consume(
    sasl_broker: local_broker.BrokerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sasl_broker.sasl_bootstrap is not None
    kafka = _settings(monkeypatch, sasl_broker.sasl_bootstrap, USERS["fd-service"])
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    clients.ensure_topics(clients.admin(kafka), [clients.TopicSpec(topic, 1)])
    producer = clients.transactional_producer(kafka, f"tx-{topic}")
    producer.init_transactions(30)
    producer.begin_transaction()
    clients.produce(producer, topic, b"over SASL", None)
    producer.commit_transaction(30)
    consumer = clients.consumer(kafka, f"g-{topic}")
    consumer.subscribe([topic])
    try:
        values = []
        for _ in range(60):
            values += [m.value() for m in consumer.consume(10, 0.5) if m.error() is None]
            if values:
                break
        assert values == [b"over SASL"]
    finally:
        consumer.close()


def test_a_wrong_password_is_refused(
    sasl_broker: local_broker.BrokerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sasl_broker.sasl_bootstrap is not None
    kafka = _settings(monkeypatch, sasl_broker.sasl_bootstrap, "wrong-password")
    errors: list[KafkaError] = []
    producer = clients.producer(kafka, error_cb=errors.append)
    consumer = clients.consumer(kafka, "g-refused", error_cb=errors.append)
    try:
        for _ in range(40):
            producer.poll(0.25)
            consumer.poll(0.25)
            if KafkaError._AUTHENTICATION in {e.code() for e in errors}:
                break
        codes = {e.code() for e in errors}
        # Refused brokers then count as down; no other kind of error.
        assert KafkaError._AUTHENTICATION in codes, errors
        assert codes <= {KafkaError._AUTHENTICATION, KafkaError._ALL_BROKERS_DOWN}, errors
        assert any("Invalid username or password" in e.str() for e in errors)
        with pytest.raises(KafkaException):  # and nothing gets through: not even metadata
            clients.admin(kafka).list_topics(timeout=5)
    finally:
        consumer.close()


def test_no_credentials_on_the_sasl_port_get_nothing(
    sasl_broker: local_broker.BrokerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sasl_broker.sasl_bootstrap is not None
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", sasl_broker.sasl_bootstrap)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    with pytest.raises(KafkaException):
        clients.admin(KafkaSettings()).list_topics(timeout=5)


def test_without_users_the_broker_has_no_sasl_listener() -> None:
    """The default configuration (the shared test broker's) renders as before: no SASL anywhere."""
    template = (local_broker.BROKER_DIR / "server.properties.template").read_text()
    text = template.format(port=1, controller_port=2, log_dir="x", **local_broker._sasl_properties(1, None))
    assert "SASL" not in text and "jaas" not in text and "{" not in text
