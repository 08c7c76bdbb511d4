"""Ports for a broker of a test's own (never the shared one others use)."""

from __future__ import annotations

import socket


def free_port_pair() -> int:
    """A port p with p and p + 1 both free (broker and controller listeners)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")
