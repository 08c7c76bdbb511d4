"""docker-compose.yml, checked without a Docker engine: what each project container runs is a real
`fastdistill` command, the environment it gets is read by the services, and the ports the services
listen on are the ones the healthchecks and Prometheus use."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from shared.config import ServiceSettings
from tests.deploy.support import REPO, SERVE_EXTRA, cli_problem, env_var_problem, pipeline, serve_target

COMPOSE = REPO / "docker-compose.yml"
PROMETHEUS = REPO / "deploy/prometheus/prometheus.yml"
#: One-shot containers: they run to completion instead of serving, so no healthcheck or restart.
ONE_SHOT = {"topics", "cli"}


def _interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` with nothing set in the environment."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _project_services() -> dict[str, dict[str, Any]]:
    """Services running the project image (built from the Dockerfile)."""
    return {name: svc for name, svc in _services().items() if "build" in svc}


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolate(str(v)) for k, v in env.items()}


def _metrics_port(svc: dict[str, Any]) -> int:
    default = ServiceSettings.model_fields["metrics_port"].default
    return int(_env(svc).get("FD_METRICS_PORT", default))


def _servers() -> dict[str, dict[str, Any]]:
    """The `fastdistill serve X` services, by compose name."""
    return {n: s for n, s in _project_services().items() if serve_target(s["command"]) is not None}


def _scrape_targets() -> dict[str, dict[str, int]]:
    """job -> {host: port} from the DNS and static discovery of deploy/prometheus/prometheus.yml."""
    jobs: dict[str, dict[str, int]] = {}
    for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]:
        targets = jobs.setdefault(job["job_name"], {})
        for sd in job.get("dns_sd_configs", []):
            targets.update({name: int(sd["port"]) for name in sd["names"]})
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets[host] = int(port)
    return jobs


def test_compose_file_parses_with_every_part() -> None:
    compose = _compose()
    services = compose["services"]
    for part in ("kafka", "topics", "teacher-sim", "prometheus", "grafana", "sink", "coordinator"):
        assert part in services, f"docker-compose.yml lacks the {part} service"
    assert set(compose["volumes"]) >= {"kafka-data", "dataset", "prometheus-data", "grafana-data"}
    for name, svc in services.items():
        assert "image" in svc, f"{name}: no image"
    images = {svc["image"] for svc in _project_services().values()}
    assert len(images) == 1, f"the project services must share one image, not {images}"


@pytest.mark.parametrize("name", sorted(_project_services()))
def test_command_is_a_real_cli_entry_point(name: str) -> None:
    command = [_interpolate(str(part)) for part in _project_services()[name]["command"]]
    problem = cli_problem(command)
    assert problem is None, f"{name}: {problem}"


def test_every_pipeline_step_sink_and_coordinator_has_one_service() -> None:
    served = sorted(serve_target(s["command"]) or "" for s in _servers().values())
    expected = sorted([step.id for step in pipeline().steps] + list(SERVE_EXTRA))
    assert served == expected


@pytest.mark.parametrize("name", sorted(_project_services()))
def test_every_env_var_is_one_the_services_read(name: str) -> None:
    problems = [p for var in _env(_project_services()[name]) if (p := env_var_problem(var))]
    assert not problems, f"{name}: {problems}"


def test_metrics_ports_match_healthchecks_and_prometheus_targets() -> None:
    scraped = _scrape_targets()["fastdistill"]
    for name, svc in _servers().items():
        port = _metrics_port(svc)
        assert [str(p) for p in svc.get("expose", [])] == [str(port)], f"{name}: expose != FD_METRICS_PORT"
        health = urlparse(svc["healthcheck"]["test"][-1])
        assert (health.port, health.path) == (port, "/healthz"), f"{name}: healthcheck {health.geturl()}"
        assert scraped.get(name) == port, f"{name}: scraped on {scraped.get(name)}, listens on {port}"
    assert set(scraped) == set(_servers()), "Prometheus scrapes a host that is no serving compose service"


def test_teacher_defaults_to_the_simulator_and_is_overridable() -> None:
    services = _services()
    raw = services["teacher"]["environment"]
    assert raw["OPENAI_BASE_URL"].startswith("${OPENAI_BASE_URL:-"), "OPENAI_BASE_URL must be overridable"
    assert raw["OPENAI_API_KEY"].startswith("${OPENAI_API_KEY"), "OPENAI_API_KEY must be overridable"
    url = urlparse(_env(services["teacher"])["OPENAI_BASE_URL"])
    sim = services["teacher-sim"]
    command = sim["command"]
    assert url.hostname == "teacher-sim"
    assert url.port == int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0", "the simulator must listen beyond localhost"
    assert [str(p) for p in sim["expose"]] == [str(url.port)]
    assert urlparse(sim["healthcheck"]["test"][-1]).port == url.port
    assert _scrape_targets()["teacher-sim"] == {"teacher-sim": url.port}
    assert services["teacher"]["depends_on"]["teacher-sim"]["condition"] == "service_healthy"
    seeds = command[command.index("--seeds") + 1]
    assert (REPO / seeds).parent.is_dir(), f"{seeds}: not a path of the repository (the image's /app)"


def test_long_running_services_have_healthchecks_and_restart() -> None:
    for name, svc in _services().items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no", f"{name}: a one-shot container must not be restarted"
            continue
        assert svc.get("restart") == "unless-stopped", name
        health = svc.get("healthcheck")
        assert health and not health.get("disable") and health.get("test"), f"{name}: no healthcheck"


def test_topics_come_from_an_init_container_every_service_waits_for() -> None:
    services = _services()
    assert services["topics"]["command"] == ["fastdistill", "topics", "create"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in _servers():
        condition = services[name]["depends_on"]["topics"]["condition"]
        assert condition == "service_completed_successfully", name


def test_kafka_is_the_official_image_as_a_single_kraft_node() -> None:
    kafka = _services()["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert str(env[key]) == "1", key
    advertised = {urlparse(url).netloc for url in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, svc in _project_services().items():
        bootstrap = _env(svc)["KAFKA_BOOTSTRAP_SERVERS"]
        assert bootstrap in advertised, f"{name}: {bootstrap} is not an advertised listener {advertised}"


def test_schema_registry_is_optional() -> None:
    registry = _services()["schema-registry"]
    assert registry["profiles"] == ["registry"]
    for name, svc in _project_services().items():
        assert _env(svc).get("SCHEMA_REGISTRY_URL", "") == "", f"{name}: the registry must stay opt-in"


def test_sink_and_coordinator_share_the_dataset_volume() -> None:
    services = _services()
    output_dir = pipeline().sink.output_dir
    for name in ("sink", "coordinator"):
        assert f"dataset:/app/{output_dir}" in services[name]["volumes"], name


def test_prometheus_and_grafana_mount_the_repository_config() -> None:
    services = _services()
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
    assert (
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in services["prometheus"]["volumes"]
    )


def test_prometheus_config_passes_promtool() -> None:
    assert shutil.which("promtool"), "promtool missing: `make install` installs the Debian package prometheus"
    result = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(PROMETHEUS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_the_project_and_runs_unprivileged() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert "pip install -e ." in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert 'CMD ["fastdistill", "--help"]' in dockerfile
    healthcheck = re.search(r'^HEALTHCHECK .*CMD \["python", "(/app/[^"]+)"\]', dockerfile, re.M | re.S)
    assert healthcheck and (REPO / Path(healthcheck.group(1)).relative_to("/app")).exists()
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".cache", "out"} <= set(ignored)
