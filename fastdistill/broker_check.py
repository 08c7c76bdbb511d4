"""Failing in seconds when no Kafka broker answers, with the way to start one, instead of
librdkafka retrying for half a minute and logging every refused connection."""

from __future__ import annotations

import socket

from fastdistill.errors import UserError
from shared.config import KafkaSettings

#: How long a command waits for the broker's first answer before saying it is down.
BROKER_CHECK_S = 3.0


def require_broker(kafka: KafkaSettings) -> None:
    """Raise a two-line UserError when no broker answers. A refused TCP connection to every
    bootstrap server is said at once; otherwise a metadata request must answer in BROKER_CHECK_S."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    reason = unreachable(kafka.bootstrap_servers)
    if reason is None:
        conf = kafka.client_conf() | {
            "log_level": 0,  # the refused connections are the one line below, not hundreds
            "socket.connection.setup.timeout.ms": int(BROKER_CHECK_S * 1000),
        }
        try:
            AdminClient(conf).list_topics(timeout=BROKER_CHECK_S)
            return
        except KafkaException as exc:
            reason = (exc.args[0].str() if exc.args else str(exc)).removeprefix("Failed to get metadata: ")
    raise UserError(
        f"no Kafka broker answers at {kafka.bootstrap_servers} ({reason})",
        "start the local one with `fastdistill dev broker up`, or set KAFKA_BOOTSTRAP_SERVERS",
        code=1,
    )


def unreachable(bootstrap_servers: str) -> str | None:
    """Why no bootstrap server accepts a TCP connection; None when one does (or one is unparsable:
    then librdkafka decides)."""
    errors = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition("://")[2].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return None
        except ValueError:
            return None
        except OSError as exc:
            errors.append(exc.strerror or type(exc).__name__)
    return ", ".join(sorted(set(errors))).lower() or None


def answering_kafka() -> KafkaSettings:
    """The Kafka settings of the environment, once its broker answered (else the UserError)."""
    kafka = KafkaSettings()
    require_broker(kafka)
    return kafka
