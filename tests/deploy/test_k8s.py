"""k8s/: every manifest parses, each kustomization builds (with `kubectl kustomize` or a `kustomize
build` that `make install` provides, plus a structural check of what it references), and the built
workloads run real CLI commands with environment the services read and consistent ports."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastdistill.plan import PipelinePlan
from scripts.install_system_deps import kustomize_cmd
from shared.config import ServiceSettings
from shared.pipeline import PipelineSpec
from tests.deploy.support import (
    PIPELINE,
    REPO,
    SERVE_EXTRA,
    cli_problem,
    env_var_problem,
    pipeline,
    serve_target,
)

K8S = REPO / "k8s"
KUSTOMIZATIONS = [K8S / "base", K8S / "overlays/dev", K8S / "overlays/prod"]
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def _kustomize_cmd() -> list[str]:
    cmd = kustomize_cmd()
    assert cmd is not None, "no kubectl or kustomize: `make install` builds one"
    return cmd


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


# -- a structural kustomize: what the real build would need, without applying patches ---------------
def _raw_resources(folder: Path) -> list[dict[str, Any]]:
    """Every resource a kustomization includes, recursively, as written (no patches, no generators)."""
    docs: list[dict[str, Any]] = []
    for entry in _kustomization(folder).get("resources", []):
        path = (folder / entry).resolve()
        assert path.exists(), f"{folder}: resource {entry} does not exist"
        if path.is_dir():
            assert (path / "kustomization.yaml").exists(), f"{folder}: {entry} is no kustomization"
            docs.extend(_raw_resources(path))
        else:
            docs.extend(_load_all(path))
    return docs


def _matches(doc: dict[str, Any], target: dict[str, Any]) -> bool:
    if "kind" in target and doc["kind"] != target["kind"]:
        return False
    if "name" in target and doc["metadata"]["name"] != target["name"]:
        return False
    if "labelSelector" in target:
        key, value = target["labelSelector"].split("=")
        if doc["metadata"].get("labels", {}).get(key) != value:
            return False
    return True


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_references_exist_and_patches_hit_something(folder: Path) -> None:
    spec = _kustomization(folder)
    docs = _raw_resources(folder)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), f"duplicate resources: {names}"
    for generator in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
        for file in generator.get("files", []):
            assert (folder / file.split("=")[-1]).exists(), f"{folder}: generator file {file} missing"
    for patch in spec.get("patches", []):
        if "path" in patch:
            assert (folder / patch["path"]).exists(), f"{folder}: patch {patch['path']} missing"
        target = patch.get("target", {})
        assert any(_matches(d, target) for d in docs), f"{folder}: patch target {target} matches nothing"


def test_every_manifest_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) > 10
    for path in files:
        docs = _load_all(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            if path.name == "kustomization.yaml":
                assert doc["kind"] == "Kustomization", path
            elif path.name == "pipeline.yaml":
                assert PipelineSpec.model_validate(doc).steps, path
            elif isinstance(doc, list):  # a JSON patch
                assert all({"op", "path"} <= set(op) for op in doc), path
            else:
                assert {"apiVersion", "kind", "metadata"} <= set(doc), path


def test_the_pipeline_configmap_is_the_example_pipeline() -> None:
    # kustomize refuses files outside the kustomization's folder, so base/ holds a copy.
    assert (K8S / "base/pipeline.yaml").read_bytes() == PIPELINE.read_bytes(), (
        "k8s/base/pipeline.yaml differs from examples/text2sql/pipeline.yaml: copy it again"
    )


# -- the built manifests ------------------------------------------------------------------------------
_BUILT: dict[Path, list[dict[str, Any]]] = {}


def _built(folder: Path) -> list[dict[str, Any]]:
    """The kustomize build of a folder."""
    if folder not in _BUILT:
        cmd = _kustomize_cmd()
        result = subprocess.run([*cmd, str(folder)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{' '.join(cmd)} {folder}: {result.stderr}"
        _BUILT[folder] = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    return _BUILT[folder]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_kustomize_build_succeeds(folder: Path) -> None:
    kinds = {d["kind"] for d in _built(folder)}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "HorizontalPodAutoscaler",
        "ScaledObject",
    } <= kinds


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _project_containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container running the project CLI."""
    return [
        (doc, container)
        for doc in docs
        if doc["kind"] in WORKLOADS
        for container in doc["spec"]["template"]["spec"]["containers"]
        if container.get("command", [""])[0] == "fastdistill"
    ]


def _data_keys(doc: dict[str, Any]) -> set[str]:
    return set(doc.get("data") or {}) | set(doc.get("stringData") or {})


def _env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str | None]:
    """Name -> value of a container's environment (None: from a secret or the downward API)."""
    configmaps, secrets = _by_kind(docs, "ConfigMap"), _by_kind(docs, "Secret")
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            assert ref in configmaps, f"envFrom configMap {ref} is not in the build"
            env |= configmaps[ref]["data"]
        if "secretRef" in source:
            ref = source["secretRef"]["name"]
            assert ref in secrets, f"envFrom secret {ref} is not in the build"
            env |= dict.fromkeys(_data_keys(secrets[ref]))
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_commands_are_real_cli_entry_points(folder: Path) -> None:
    containers = _project_containers(_built(folder))
    assert containers
    for doc, container in containers:
        problem = cli_problem(container["command"] + container.get("args", []))
        assert problem is None, f"{doc['metadata']['name']}: {problem}"


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_env_var_is_one_the_services_read(folder: Path) -> None:
    docs = _built(folder)
    for doc, container in _project_containers(docs):
        problems = [p for name in _env(docs, container) if (p := env_var_problem(name))]
        assert not problems, f"{folder.name}/{doc['metadata']['name']}: {problems}"


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_step_sink_and_coordinator_has_a_deployment_and_service(folder: Path) -> None:
    docs = _built(folder)
    services = _by_kind(docs, "Service")
    served: dict[str, dict[str, Any]] = {}
    for doc, container in _project_containers(docs):
        target = serve_target(container["command"])
        if target is not None:
            assert doc["kind"] == "Deployment"
            assert target not in served, f"two Deployments serve {target}"
            served[target] = doc
    assert sorted(served) == sorted([s.id for s in pipeline().steps] + list(SERVE_EXTRA))
    for target, deployment in served.items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selecting = [s for s in services.values() if s["spec"]["selector"].items() <= pod_labels.items()]
        assert selecting, f"no Service selects the pods of {target}"


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_metrics_port_matches_probes_services_and_scrape_annotations(folder: Path) -> None:
    docs = _built(folder)
    services = _by_kind(docs, "Service")
    default = ServiceSettings.model_fields["metrics_port"].default
    for doc, container in _project_containers(docs):
        if serve_target(container["command"]) is None:
            continue
        name = doc["metadata"]["name"]
        env = _env(docs, container)
        port = int(env.get("FD_METRICS_PORT") or default)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": port}, f"{name}: container ports {ports}, FD_METRICS_PORT {port}"
        for probe in ("readinessProbe", "livenessProbe"):
            http = container[probe]["httpGet"]
            assert (http["path"], http["port"]) == ("/healthz", "metrics"), f"{name} {probe}"
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port), name
        assert annotations["prometheus.io/path"] == "/metrics", name
        pod_labels = doc["spec"]["template"]["metadata"]["labels"]
        for svc in services.values():
            if svc["spec"]["selector"].items() <= pod_labels.items():
                assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["metrics"], svc["metadata"]["name"]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_autoscaling_targets(folder: Path) -> None:
    docs = _built(folder)
    deployments = _by_kind(docs, "Deployment")
    spec = pipeline()
    step_of = {
        name: serve_target(d["spec"]["template"]["spec"]["containers"][0]["command"])
        for name, d in deployments.items()
    }
    scaled_on_cpu = set()
    for hpa in _by_kind(docs, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"HPA {hpa['metadata']['name']} targets missing {target}"
        assert step_of[target] in {s.id for s in spec.steps} - {"teacher"}, f"HPA on {target}"
        # More consumers than partitions would idle.
        assert hpa["spec"]["maxReplicas"] <= spec.partitions
        container = deployments[target]["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"]["cpu"], f"{target}: CPU utilisation needs a request"
        assert "replicas" not in deployments[target]["spec"], f"{target}: the HPA owns the replica count"
        scaled_on_cpu.add(step_of[target])
    assert scaled_on_cpu == {s.id for s in spec.steps} - {"teacher"}

    (scaled,) = _by_kind(docs, "ScaledObject").values()
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert step_of[target] == "teacher"
    assert scaled["spec"]["maxReplicaCount"] <= spec.partitions
    (trigger,) = scaled["spec"]["triggers"]
    wiring = PipelinePlan.build(spec).wiring("teacher")
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == wiring.inputs[0].topic
    assert trigger["metadata"]["consumerGroup"] == wiring.group_id
    container = deployments[target]["spec"]["template"]["spec"]["containers"][0]
    bootstrap = _env(docs, container)["KAFKA_BOOTSTRAP_SERVERS"]
    assert trigger["metadata"]["bootstrapServers"] == bootstrap, "KEDA must read the services' cluster"


def test_prod_overlay_speaks_sasl_ssl_with_secret_credentials() -> None:
    docs = _built(K8S / "overlays/prod")
    clients = [
        (d, c) for d, c in _project_containers(docs) if c["command"][:2] != ["fastdistill", "teacher-sim"]
    ]
    assert clients
    for doc, container in clients:
        name = doc["metadata"]["name"]
        env = _env(docs, container)
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert env["KAFKA_SASL_MECHANISM"], name
        by_name = {e["name"]: e for e in container["env"]}
        for var in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
            assert "secretKeyRef" in by_name[var]["valueFrom"], f"{name}: {var} must come from a Secret"
        ca = Path(str(env["KAFKA_SSL_CA_LOCATION"]))
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert str(ca.parent) in mounts, f"{name}: nothing mounted at {ca.parent}"
        volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"]["volumes"]}
        assert "secret" in volumes[mounts[str(ca.parent)]], f"{name}: the CA must come from a Secret"
    (scaled,) = _by_kind(docs, "ScaledObject").values()
    auth = scaled["spec"]["triggers"][0]["authenticationRef"]["name"]
    assert auth in _by_kind(docs, "TriggerAuthentication")


def test_dev_overlay_brings_a_single_node_kraft_broker_the_services_use() -> None:
    docs = _built(K8S / "overlays/dev")
    kafka = _by_kind(docs, "StatefulSet")["kafka"]
    container = kafka["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("apache/kafka:")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    advertised = {url.split("://")[1] for url in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for doc, project in _project_containers(docs):
        bootstrap = _env(docs, project).get("KAFKA_BOOTSTRAP_SERVERS")
        assert bootstrap is None or bootstrap in advertised, f"{doc['metadata']['name']}: {bootstrap}"
