"""`/metrics` (Prometheus text format) and `/healthz` (JSON) on one port, inside the service's loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class HealthServer:
    def __init__(self, host: str, port: int, status: Callable[[], dict[str, Any]]) -> None:
        self.host, self.port, self.status = host, port, status
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        status = self.status()
        return web.json_response(status, status=200 if status.get("ok") else 503)


@contextlib.asynccontextmanager
async def serving(
    host: str, port: int, status: Callable[[], dict[str, Any]], stop: Callable[[], None]
) -> AsyncIterator[None]:
    """What every service process does around its loop: SIGTERM/SIGINT ask `stop` for a graceful
    end, and `/metrics` + `/healthz` answer until the loop is over."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    health = HealthServer(host, port, status)
    await health.start()
    try:
        yield
    finally:
        await health.stop()
