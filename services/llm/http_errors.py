"""What HTTP clients of LLM endpoints share: reading a Retry-After, and naming why a connection
failed in a few words (for the endpoint's health, its log line and /healthz)."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds an overloaded server asks us to wait: `retry-after-ms`, else `Retry-After`
    (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


_ERRNO_CAUSES = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connect timeout",
}


def connection_cause(exc: BaseException) -> str:
    """A short reason for a failed connection, from the innermost OS error of the chain:
    'connection refused', 'name not resolved', ...; the outermost message otherwise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    found: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "name not resolved"
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, OSError) and current.errno in _ERRNO_CAUSES:
            return _ERRNO_CAUSES[current.errno]
        if isinstance(current, TimeoutError) or "timeout" in type(current).__name__.lower():
            found = found or "connect timeout"
        if "refused" in str(current).lower():
            found = found or "connection refused"
        current = current.__cause__ or current.__context__
    return found or (str(exc).strip() or type(exc).__name__)
