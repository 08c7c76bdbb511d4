"""What every HTTP LLM client of this package keeps: its endpoint's settings, model, base URL and
key, and one connection pool per event loop (a pool cannot outlive the loop it was made on: a
step's worker thread and a test's `asyncio.run` each get their own)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

from shared.llm import LLMEndpoint

Pool = TypeVar("Pool")


class EndpointClient(ABC, Generic[Pool]):
    #: the environment variable that overrides the endpoint's URL, and the URL without one
    url_env: ClassVar[str]
    default_url: ClassVar[str]
    #: the key's environment variable when the endpoint names none (`llm.api_key_env`)
    key_env: ClassVar[str]

    def __init__(self, endpoint: LLMEndpoint) -> None:
        self.settings = endpoint
        self.model = endpoint.model
        # Normalised, so spellings of one URL are one cache.
        self.endpoint = endpoint.resolved_base_url(self.url_env, self.default_url)
        # Read once, at construction (the step's open): a named variable that is unset fails there.
        self._key = endpoint.api_key(self.key_env)
        self._pool: Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint!r}, model={self.model!r})"  # never the key

    def pool(self) -> Pool:
        """This event loop's connection pool, made on first use."""
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            self._pool = self._connect()
            self._loop = loop
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            await self._disconnect(self._pool)
        self._pool = None
        self._loop = None

    @abstractmethod
    def _connect(self) -> Pool:
        """A new connection pool, with the key and the endpoint's headers and limits."""

    @abstractmethod
    async def _disconnect(self, pool: Pool) -> None:
        """Close `pool`'s connections."""
