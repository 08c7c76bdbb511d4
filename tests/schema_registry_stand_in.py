"""A stand-in for Confluent Schema Registry: the part of its REST API the serde uses.

No real registry can run here (Confluent's artifacts are not on Maven Central, Karapace is not
on PyPI, no Docker engine), so this real HTTP server answers what confluent-kafka's
`SchemaRegistryClient` asks: register a schema under a subject (one id per distinct schema,
as the registry does), fetch a schema by id, optionally behind basic auth. The client, the
wire format and the services are the real ones.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


class Registry:
    def __init__(self, user_info: str | None = None) -> None:
        self.user_info = user_info
        self.lock = threading.Lock()
        self.ids: dict[str, int] = {}  # schema text -> id
        self.subjects: dict[str, list[int]] = {}  # subject -> ids, by version
        self.requests: list[tuple[str, str]] = []

    def register(self, subject: str, schema: str) -> dict[str, Any]:
        with self.lock:
            schema_id = self.ids.setdefault(schema, len(self.ids) + 1)
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return {"id": schema_id, "subject": subject, "version": versions.index(schema_id) + 1}

    def schema(self, schema_id: int) -> str | None:
        with self.lock:
            return next((text for text, i in self.ids.items() if i == schema_id), None)


def _handler(registry: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if registry.user_info is None:
                return True
            expected = "Basic " + base64.b64encode(registry.user_info.encode()).decode()
            if self.headers.get("Authorization") == expected:
                return True
            self._reply(401, {"error_code": 40101, "message": "Unauthorized"})
            return False

        def do_POST(self) -> None:
            path = urlsplit(self.path).path.strip("/").split("/")
            registry.requests.append(("POST", self.path))
            if not self._authorised():
                return
            if len(path) == 3 and path[0] == "subjects" and path[2] == "versions":
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._reply(200, registry.register(unquote(path[1]), body["schema"]))
            else:
                self._reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

        def do_GET(self) -> None:
            path = urlsplit(self.path).path.strip("/").split("/")
            registry.requests.append(("GET", self.path))
            if not self._authorised():
                return
            if len(path) == 3 and path[:2] == ["schemas", "ids"] and path[2].isdigit():
                schema = registry.schema(int(path[2]))
                if schema is None:
                    self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                else:
                    self._reply(200, {"schema": schema})
            else:
                self._reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    return Handler


@contextmanager
def schema_registry(user_info: str | None = None) -> Iterator[tuple[str, Registry]]:
    """(URL, registry) of a stand-in registry serving on a free loopback port."""
    registry = Registry(user_info)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", registry
    finally:
        server.shutdown()
        server.server_close()
