"""Settings read from the environment (pydantic-settings); secrets stay `SecretStr`.

Kafka security options are passed through to librdkafka unchanged, so any SASL mechanism
or TLS layout librdkafka supports works without code here knowing about it.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Connection to the cluster (env `KAFKA_*`)."""

    # A validation error must not print what it rejected: that may be a credential.
    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore", hide_input_in_errors=True)

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification_algorithm: str | None = None
    #: Any further librdkafka properties as a JSON object, e.g. '{"client.rack": "a"}'. Secret, as it
    #: may carry credentials (e.g. sasl.oauthbearer.client.secret).
    extra: SecretStr = SecretStr("{}")
    session_timeout_ms: int = 10_000
    transaction_timeout_ms: int = 15_000
    #: Largest message producers write (librdkafka's `message.max.bytes`); larger batches are split.
    #: Raising it needs the topics' (or broker's) `max.message.bytes` raised too.
    max_message_bytes: int = Field(1_000_000, ge=100_000)

    @field_validator("extra")
    @classmethod
    def _extra_is_an_object(cls, value: SecretStr) -> SecretStr:
        try:
            parsed = json.loads(value.get_secret_value())
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError("KAFKA_EXTRA must be a JSON object of librdkafka properties")
        return value

    def client_conf(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            # librdkafka 2.16's default (rebootstrap) decommissions the broker handles while every
            # broker is away; after the broker returns, a transaction's TxnOffsetCommit can stay
            # queued on a decommissioned handle until our 15 s deadline, stage after stage (found
            # by the chaos harness: ~73 s to recover four stages, ~9 s with `none`). The brokers'
            # addresses stay known, so reconnecting needs no re-bootstrap. KAFKA_EXTRA overrides.
            "metadata.recovery.strategy": "none",
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
            "ssl.endpoint.identification.algorithm": self.ssl_endpoint_identification_algorithm,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(json.loads(self.extra.get_secret_value()))
        return conf


class RegistrySettings(BaseSettings):
    """Confluent Schema Registry (env `SCHEMA_REGISTRY_*`); unset URL = single-object encoding."""

    model_config = SettingsConfigDict(
        env_prefix="SCHEMA_REGISTRY_", extra="ignore", hide_input_in_errors=True
    )

    url: str | None = None
    basic_auth_user_info: SecretStr | None = None

    def client(self) -> Any:
        if not self.url:
            return None
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf: dict[str, Any] = {"url": self.url}
        if self.basic_auth_user_info:
            conf["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        return SchemaRegistryClient(conf)


class ServiceSettings(BaseSettings):
    """One service instance (env `FD_*`)."""

    model_config = SettingsConfigDict(env_prefix="FD_", extra="ignore")

    pipeline: str = "examples/text2sql/pipeline.yaml"
    instance_id: str = Field(default_factory=socket.gethostname)
    #: Loopback unless a deployment says otherwise (compose and k8s set 0.0.0.0 for their scrapers).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9100
    #: How often completed work is committed (one Kafka transaction).
    commit_interval_ms: int = 100
    #: Grace period on SIGTERM for rows already in flight.
    shutdown_grace_s: float = 10.0
    #: A loop stalled this long ends the process (shared/runtime/watchdog.py); librdkafka's
    #: max.poll.interval.ms, after which the group has dropped the member anyway.
    stall_limit_s: float = 300.0
    #: Holding input with unread records, room to take them, and consuming nothing this long is a
    #: stall too (shared/runtime/liveness.py): /healthz turns unhealthy and the watchdog acts.
    progress_stall_s: float = 60.0
    #: A full buffer held this long pauses the input partitions (shared/runtime/pause.py).
    pause_after_full_s: float = 5.0
    log_level: str = "INFO"
