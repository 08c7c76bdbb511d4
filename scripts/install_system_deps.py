"""What `make install` needs beyond Python packages: the Kafka jars (Maven), Prometheus (apt) and
a kustomize (kubectl's, or built with Go into .cache/bin).

Prometheus is optional for running the pipeline, required by the dashboard test; it is
installed from Debian's packages only when missing and when we may (root, apt-get present).
kustomize is only for the k8s manifest tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from fastdistill.dev import local_broker


def ensure_prometheus() -> None:
    if shutil.which("prometheus"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("prometheus missing and not installable here (needs root + apt-get)", file=sys.stderr)
        return
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"], check=True, env=env
    )


KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5@v5.8.3"
CACHE_BIN = Path(__file__).resolve().parent.parent / ".cache" / "bin"


def kustomize_cmd() -> list[str] | None:
    """The command that builds a kustomization, if one is installed."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    for candidate in (shutil.which("kustomize"), CACHE_BIN / "kustomize"):
        if candidate and Path(candidate).exists():
            return [str(candidate), "build"]
    return None


def ensure_kustomize() -> None:
    if kustomize_cmd() is not None:
        return
    if not shutil.which("go"):
        print("kustomize missing and no Go toolchain to build it", file=sys.stderr)
        return
    env = os.environ | {"GOBIN": str(CACHE_BIN)}
    subprocess.run(["go", "install", KUSTOMIZE_MODULE], check=True, env=env)


def main() -> None:
    print(f"kafka jars: {local_broker.ensure_jars()}", file=sys.stderr)
    ensure_prometheus()
    ensure_kustomize()


if __name__ == "__main__":
    main()
