"""Kafka security settings: from the environment into every librdkafka client, never into output.

The clients here are real librdkafka clients (recorded on their way in): they load the TLS files
and the encrypted key at construction, so a value that did not arrive, or a wrong key password,
fails the test. No broker is contacted (bootstrap 127.0.0.1:1); a live SASL broker is in
test_sasl_broker.py.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError

from shared.config import KafkaSettings, RegistrySettings
from shared.kafka import clients

PASSWORD = "sasl-Pa55-never-shown"
KEY_PASSWORD = "key-Pa55-never-shown"
REGISTRY_AUTH = "registry-user:registry-Pa55-never-shown"
EXTRA_SECRET = "oauth-Pa55-never-shown"
SECRETS = (PASSWORD, KEY_PASSWORD, REGISTRY_AUTH, EXTRA_SECRET)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and its key, encrypted with KEY_PASSWORD."""
    folder = tmp_path_factory.mktemp("tls")
    files = {"ca": folder / "ca.pem", "cert": folder / "client.pem", "key": folder / "client.key"}
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=fd-test"]
    outputs = ["-keyout", str(files["key"]), "-out", str(files["cert"]), "-passout", f"pass:{KEY_PASSWORD}"]
    subprocess.run([*request, *outputs], check=True, capture_output=True)
    files["ca"].write_bytes(files["cert"].read_bytes())
    return files


@pytest.fixture
def secure_env(monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path]) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "fd-service",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CA_LOCATION": str(tls_files["ca"]),
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(tls_files["cert"]),
        "KAFKA_SSL_KEY_LOCATION": str(tls_files["key"]),
        "KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "https",
        "KAFKA_EXTRA": json.dumps({"client.rack": "rack-a", "sasl.oauthbearer.client.secret": EXTRA_SECRET}),
        "SCHEMA_REGISTRY_URL": "https://registry.invalid",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": REGISTRY_AUTH,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """The configuration of every client `shared.kafka.clients` builds, as it reaches librdkafka."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def recording(kind: type) -> type:
        class Recording(kind):  # type: ignore[misc, valid-type]
            def __init__(self, conf: dict[str, Any]) -> None:
                seen.append((kind.__name__, dict(conf)))
                super().__init__(conf)

        return Recording

    for name, kind in (("Consumer", Consumer), ("Producer", Producer), ("AdminClient", AdminClient)):
        monkeypatch.setattr(clients, name, recording(kind))
    return seen


def _every_client(kafka: KafkaSettings) -> None:
    clients.consumer(kafka, "fd.test.group").close()
    clients.transactional_producer(kafka, "fd.test.tx").flush(0)
    clients.producer(kafka).flush(0)
    clients.admin(kafka)


def test_security_settings_reach_every_client(secure_env: dict[str, str], built: list[Any]) -> None:
    _every_client(KafkaSettings())

    assert [kind for kind, _ in built] == ["Consumer", "Producer", "Producer", "AdminClient"]
    for kind, conf in built:
        assert conf["bootstrap.servers"] == "127.0.0.1:1", kind
        assert conf["security.protocol"] == "SASL_SSL", kind
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512", kind
        assert conf["sasl.username"] == "fd-service", kind
        assert conf["sasl.password"] == PASSWORD, kind
        assert conf["ssl.ca.location"] == secure_env["KAFKA_SSL_CA_LOCATION"], kind
        assert conf["ssl.certificate.location"] == secure_env["KAFKA_SSL_CERTIFICATE_LOCATION"], kind
        assert conf["ssl.key.location"] == secure_env["KAFKA_SSL_KEY_LOCATION"], kind
        assert conf["ssl.key.password"] == KEY_PASSWORD, kind
        assert conf["ssl.endpoint.identification.algorithm"] == "https", kind
        assert conf["client.rack"] == "rack-a", kind
        assert conf["sasl.oauthbearer.client.secret"] == EXTRA_SECRET, kind
    # The clients' own settings are kept beside the security ones.
    assert built[0][1]["group.id"] == "fd.test.group" and built[0][1]["isolation.level"] == "read_committed"
    assert built[1][1]["transactional.id"] == "fd.test.tx"


def test_plaintext_default_sends_no_security_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD", "EXTRA"):
        monkeypatch.delenv(f"KAFKA_{name}", raising=False)
    conf = KafkaSettings().client_conf()
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not [k for k in conf if k.startswith(("sasl.", "ssl."))]


def test_a_wrong_key_password_stops_the_client(
    secure_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka decrypts the key at construction: proof that ssl.key.password is the one used."""
    clients.producer(KafkaSettings()).flush(0)
    monkeypatch.setenv("KAFKA_SSL_KEY_PASSWORD", "wrong")
    with pytest.raises(KafkaException, match="ssl"):
        clients.producer(KafkaSettings())


def test_an_unknown_protocol_is_refused_before_any_client() -> None:
    with pytest.raises(ValidationError):
        KafkaSettings(security_protocol="SASL_TLS")  # type: ignore[arg-type]


def test_secrets_stay_out_of_repr_dumps_and_errors(secure_env: dict[str, str]) -> None:
    kafka, registry = KafkaSettings(), RegistrySettings()
    shown = [repr(kafka), str(kafka), kafka.model_dump_json(), repr(kafka.model_dump())]
    shown += [repr(registry), str(registry), registry.model_dump_json()]
    # Rejected values are not echoed either: a misplaced password must not land in a crash log.
    for bad in (
        {"session_timeout_ms": PASSWORD},
        {"extra": f"{{{EXTRA_SECRET}"},
        {"sasl_password": [PASSWORD]},
    ):
        with pytest.raises(ValidationError) as exc:
            KafkaSettings(**bad)  # type: ignore[arg-type]
        shown.append(str(exc.value))
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
    assert "**********" in repr(kafka)


def test_secrets_stay_out_of_logs(
    secure_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Python logging and librdkafka's own log (stderr), even at librdkafka's configuration debug level."""
    debug = {"debug": "conf,security,generic", "sasl.oauthbearer.client.secret": EXTRA_SECRET}
    monkeypatch.setenv("KAFKA_EXTRA", json.dumps(debug))
    caplog.set_level(logging.DEBUG)
    kafka = KafkaSettings()
    logging.getLogger("fd.test").info("settings: %s / %r", kafka, kafka)
    _every_client(kafka)
    err = capfd.readouterr().err
    assert "sasl.password = [redacted]" in err  # the configuration dump happened
    for secret in SECRETS:
        assert secret not in caplog.text
        assert secret not in err
