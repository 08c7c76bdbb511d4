"""A stand-in for the Hugging Face Hub: the part of its HTTP API `huggingface_hub` uses to create
a dataset repository and commit files to it.

No hub is reachable here, so this real HTTP server answers what `HfApi.create_repo` and
`HfApi.create_commit` ask, as the Hub does: the preupload call decides per file between a
regular upload (inline in the commit, base64) and LFS (binary files: Parquet, Arrow); LFS files
go through the batch API and a basic-transfer PUT (checked against their SHA-256) and are
verified; the commit (NDJSON) then names them by oid. The Hub's Xet transfer (what
`huggingface_hub` uses for LFS files when `hf_xet` is installed) is not spoken here: a client
pushing to this stand-in sets HF_HUB_DISABLE_XET=1. The client and the CLI are the real ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

#: What the Hub stores in LFS: binary data files (and, on the Hub, anything over 10 MB).
LFS_SUFFIXES = (".parquet", ".arrow")


@dataclass
class Repo:
    private: bool | None
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)


@dataclass
class Hub:
    token: str | None = None
    base: str = ""
    repos: dict[str, Repo] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)
    #: (method, path, upload mode or None) of every request, in order
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: path -> the upload mode the commit used ("regular" or "lfs")
    modes: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorised(self) -> bool:
            if hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}":
                return True
            self._reply(401, {"error": "Invalid credentials in Authorization header"})
            return False

        def do_PUT(self) -> None:
            path = urlsplit(self.path).path
            body = self._body()
            with hub.lock:
                hub.requests.append(("PUT", path))
            if path.startswith("/lfs-upload/"):
                oid = path.rsplit("/", 1)[1]
                if hashlib.sha256(body).hexdigest() != oid:
                    self._reply(400, {"error": "content does not match its oid"})
                    return
                with hub.lock:
                    hub.lfs[oid] = body
                self._reply(200, {})
                return
            self._reply(404, {"error": f"no route PUT {path}"})

        def do_POST(self) -> None:
            path = unquote(urlsplit(self.path).path)
            body = self._body()
            with hub.lock:
                hub.requests.append(("POST", path))
            if path == "/lfs-verify":
                data = json.loads(body)
                ok = hub.lfs.get(data["oid"]) is not None and len(hub.lfs[data["oid"]]) == data["size"]
                self._reply(200 if ok else 404, {} if ok else {"error": "object not uploaded"})
                return
            if not self._authorised():
                return
            if path == "/api/validate-yaml":
                self._validate(json.loads(body))
            elif path == "/api/repos/create":
                self._create(json.loads(body))
            elif path.startswith("/api/datasets/") and "/preupload/" in path:
                self._preupload(json.loads(body))
            elif path.startswith("/datasets/") and path.endswith(".git/info/lfs/objects/batch"):
                self._batch(json.loads(body))
            elif path.startswith("/api/datasets/") and "/commit/" in path:
                repo_id = path[len("/api/datasets/") :].split("/commit/")[0]
                self._commit(repo_id, body)
            else:
                self._reply(404, {"error": f"no route POST {path}"})

        def _create(self, data: dict[str, Any]) -> None:
            repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
            if data.get("type") != "dataset":
                self._reply(400, {"error": f"this stand-in holds datasets, not {data.get('type')}"})
                return
            url = f"{hub.base}/datasets/{repo_id}"
            with hub.lock:
                if repo_id in hub.repos:
                    self._reply(409, {"error": "You already created this dataset repo", "url": url})
                    return
                hub.repos[repo_id] = Repo(data.get("private"))
            self._reply(200, {"url": url, "name": repo_id})

        def _validate(self, data: dict[str, Any]) -> None:
            """The card's metadata: YAML front matter, a mapping, `configs` as the Hub reads them."""
            errors = _card_errors(str(data.get("content", "")))
            self._reply(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})

        def _preupload(self, data: dict[str, Any]) -> None:
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs"
                    if f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 << 20
                    else "regular",
                    "shouldIgnore": False,
                }
                for f in data["files"]
            ]
            self._reply(200, {"files": files})

        def _batch(self, data: dict[str, Any]) -> None:
            objects = []
            for obj in data["objects"]:
                entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in hub.lfs:
                    entry["actions"] = {
                        "upload": {"href": f"{hub.base}/lfs-upload/{obj['oid']}"},
                        "verify": {"href": f"{hub.base}/lfs-verify"},
                    }
                objects.append(entry)
            self._reply(200, {"transfer": "basic", "objects": objects})

        def _commit(self, repo_id: str, body: bytes) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._reply(404, {"error": f"Repository {repo_id} not found"})
                return
            changes: dict[str, tuple[str, bytes]] = {}
            for line in body.splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "file":
                    changes[value["path"]] = ("regular", base64.b64decode(value["content"]))
                elif item["key"] == "lfsFile":
                    content = hub.lfs.get(value["oid"])
                    if content is None:
                        self._reply(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                        return
                    changes[value["path"]] = ("lfs", content)
            oid = hashlib.sha1(body).hexdigest()
            with hub.lock:
                for name, (mode, content) in changes.items():
                    repo.files[name] = content
                    hub.modes[name] = mode
                repo.commits.append(oid)
            self._reply(200, {"commitUrl": f"{hub.base}/datasets/{repo_id}/commit/{oid}", "commitOid": oid})

    return Handler


def _card_errors(content: str) -> list[str]:
    if not content.startswith("---\n") or "\n---\n" not in content[3:]:
        return ["README.md has no YAML front matter"]
    try:
        meta = yaml.safe_load(content[4 : content.index("\n---\n", 3)])
    except yaml.YAMLError as exc:
        return [f"invalid YAML: {exc}"]
    if not isinstance(meta, dict):
        return ["the metadata is not a mapping"]
    errors = []
    for config in meta.get("configs", []):
        files = config.get("data_files") if isinstance(config, dict) else None
        if not isinstance(config, dict) or not isinstance(config.get("config_name"), str) or not files:
            errors.append(f'"configs" entry {config!r} needs a config_name and data_files')
            continue
        for entry in files:
            if not (isinstance(entry, dict) and isinstance(entry.get("split"), str) and entry.get("path")):
                errors.append(f'"data_files" entry {entry!r} needs a split and a path')
    return errors


@contextmanager
def hub_stand_in(token: str | None = None) -> Iterator[Hub]:
    hub = Hub(token=token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
