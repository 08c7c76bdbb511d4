"""Container health probe: exit 0 when a service's health URL answers 2xx, else 1.

Stdlib only, because python:3.11-slim has neither curl nor wget. With no argument it probes the
service's own `/healthz` on FD_METRICS_PORT (the port every `fastdistill serve` listens on).
The timeout is generous because /healthz is answered inside the service's event loop, which a Kafka
call can hold for a second or two without anything being wrong.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("FD_METRICS_PORT", "9100")
    url = sys.argv[1] if len(sys.argv) > 1 else f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if 200 <= resp.status < 300 else 1
    except OSError as exc:  # HTTPError (503 = unhealthy) is an OSError too
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
