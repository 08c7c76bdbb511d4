"""In-memory stand-ins for what the runtime hands a step, for unit tests of pure step logic."""

from __future__ import annotations

from typing import Literal


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.flushes = 0

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def flush(self, timeout_s: float = 10.0) -> bool:
        self.flushes += 1
        return True

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self.data.items() if k.startswith(prefix))


class DictContext:
    """Records how each store was asked for, so tests can check durability and scope."""

    def __init__(self, cache_enabled: bool = True) -> None:
        self.stores: dict[str, DictStore] = {}
        self.durable: dict[str, bool] = {}
        self.scopes: dict[str, str] = {}
        #: what `cache_enabled` answers (a run produced with `--no-cache` when False)
        self.cache_on = cache_enabled

    def state_store(
        self, name: str, *, durable_immediately: bool = False, scope: Literal["run", "global"] = "run"
    ) -> DictStore:
        self.durable[name] = durable_immediately
        self.scopes[name] = scope
        return self.stores.setdefault(name, DictStore())

    def cache_enabled(self) -> bool:
        return self.cache_on
