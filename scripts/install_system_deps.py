"""What `make install` needs beyond Python packages: the Kafka jars (Maven) and Prometheus (apt).

Prometheus is optional for running the pipeline, required by the dashboard test; it is
installed from Debian's packages only when missing and when we may (root, apt-get present).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from shared import local_broker


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


def main() -> None:
    print(f"kafka jars: {local_broker.ensure_jars()}", file=sys.stderr)
    ensure_prometheus()


if __name__ == "__main__":
    main()
