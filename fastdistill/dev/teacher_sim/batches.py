"""The simulator's OpenAI Batch API: `/v1/files` (upload, content) and `/v1/batches` (create,
retrieve, list).

A batch completes `batch_delay_s` after its creation; it is answered when first looked at after
that (retrieve or list), each line as the chat route would answer it, except a share
`batch_failure_rate` of rows (chosen by a hash of seed and custom_id) answered with an HTTP 500
error line. Every answered row is billed once, on the simulator's billing counts (stats:
`rows_billed`, `rows_billed_twice`, `batch`), so a test can tell whether any request was paid
for twice, online or in a batch.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fastdistill.dev.teacher_sim.server import chat_completion, error_response, text_of

if TYPE_CHECKING:
    from fastdistill.dev.teacher_sim.server import _Sim

#: the Batch API's statuses the simulator goes through
IN_PROGRESS, COMPLETED = "in_progress", "completed"


def fails(seed: int, custom_id: str, rate: float) -> bool:
    """Whether the batch answers this row with an error (the same row always does)."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{seed}\x1fbatch-fail\x1f{custom_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


class BatchAPI:
    def __init__(self, sim: _Sim) -> None:
        self.sim = sim
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        #: creation time by batch id (monotonic)
        self.created: dict[str, float] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{id}/content", self.content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list)
        app.router.add_get("/v1/batches/{id}", self.retrieve)

    def _count(self, call: str) -> None:
        self.sim.stats.batch_calls[call] += 1

    # -- files -----------------------------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        if not self.sim.authorised(request):
            return self.sim.unauthorised()
        self._count("file_upload")
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField) or not isinstance(purpose, str):
            return error_response(400, "file and purpose are required", "invalid_request_error")
        data = upload.file.read()
        return web.json_response(self._store(data, upload.filename, purpose))

    def _store(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        meta = {
            "id": "file-" + uuid.uuid4().hex[:24],
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[str(meta["id"])] = (meta, data)
        return meta

    async def content(self, request: web.Request) -> web.Response:
        if not self.sim.authorised(request):
            return self.sim.unauthorised()
        self._count("file_content")
        found = self.files.get(request.match_info["id"])
        if found is None:
            return error_response(404, "no such file", "invalid_request_error")
        return web.Response(body=found[1], content_type="application/octet-stream")

    # -- batches ---------------------------------------------------------------------------------
    async def create(self, request: web.Request) -> web.Response:
        if not self.sim.authorised(request):
            return self.sim.unauthorised()
        self._count("batch_create")
        try:
            body = await request.json()
            file_id = body["input_file_id"]
        except (ValueError, KeyError, TypeError) as exc:
            return error_response(400, f"invalid request: {exc}", "invalid_request_error")
        if file_id not in self.files:
            return error_response(400, f"no such file {file_id}", "invalid_request_error")
        lines = self.files[file_id][1].splitlines()
        batch_id = "batch_" + uuid.uuid4().hex[:24]
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body.get("endpoint", "/v1/chat/completions"),
            "errors": None,
            "input_file_id": file_id,
            "completion_window": body.get("completion_window", "24h"),
            "status": IN_PROGRESS,
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "in_progress_at": int(time.time()),
            "expires_at": int(time.time()) + 86400,
            "completed_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata") or {},
        }
        self.created[batch_id] = time.monotonic()
        self.sim.stats.batch_rows["submitted"] += len(lines)
        return web.json_response(self.batches[batch_id])

    async def retrieve(self, request: web.Request) -> web.Response:
        if not self.sim.authorised(request):
            return self.sim.unauthorised()
        self._count("batch_retrieve")
        batch_id = request.match_info["id"]
        if batch_id not in self.batches:
            return error_response(404, f"no such batch {batch_id}", "invalid_request_error")
        return web.json_response(self._current(batch_id))

    async def list(self, request: web.Request) -> web.Response:
        if not self.sim.authorised(request):
            return self.sim.unauthorised()
        self._count("batch_list")
        data = [self._current(b) for b in reversed(self.batches)][:100]  # newest first, as OpenAI
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response(
            {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}
        )

    def _current(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        due = self.created[batch_id] + self.sim.config.batch_delay_s
        if batch["status"] == IN_PROGRESS and time.monotonic() >= due:
            self._complete(batch)
        return batch

    def _complete(self, batch: dict[str, Any]) -> None:
        """Answer every line (billing each answer once) and write the output and error files."""
        sim, cfg = self.sim, self.sim.config
        out: list[bytes] = []
        errors: list[bytes] = []
        for raw in self.files[batch["input_file_id"]][1].splitlines():
            line = json.loads(raw)
            custom_id = str(line["custom_id"])
            ident = hashlib.sha256(f"{batch['id']}\x1f{custom_id}".encode()).hexdigest()[:24]
            if fails(cfg.seed, custom_id, cfg.batch_failure_rate):
                error = {"message": "internal error (simulated batch row)", "type": "server_error"}
                response = {"status_code": 500, "request_id": ident, "body": {"error": error}}
                errors.append(_line(ident, custom_id, response))
                sim.stats.batch_rows["failed"] += 1
                continue
            body = line["body"]
            texts = [text_of(m.get("content")) for m in body["messages"]]
            users = [t for m, t in zip(body["messages"], texts, strict=True) if m.get("role") == "user"]
            prompt = users[-1] if users else ""
            attempt = sim.attempts[prompt]
            sim.attempts[prompt] += 1
            text, kind = sim.answer(body, texts, prompt, attempt)
            sim.stats.kinds[kind] += 1
            payload = chat_completion(ident, str(body.get("model") or cfg.model_name), text, texts)
            usage = payload["usage"]
            sim.stats.batch_prompt_tokens += usage["prompt_tokens"]
            sim.stats.batch_completion_tokens += usage["completion_tokens"]
            sim.stats.bill(body, "batch")
            sim.stats.batch_rows["answered"] += 1
            out.append(_line(ident, custom_id, {"status_code": 200, "request_id": ident, "body": payload}))
        batch["status"] = COMPLETED
        batch["completed_at"] = int(time.time())
        batch["request_counts"] |= {"completed": len(out), "failed": len(errors)}
        batch["output_file_id"] = self._store(b"".join(out), "output.jsonl", "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._store(b"".join(errors), "errors.jsonl", "batch_output")["id"]
        sim.stats.batch_calls["batch_completed"] += 1


def _line(ident: str, custom_id: str, response: dict[str, Any]) -> bytes:
    record = {"id": "batch_req_" + ident, "custom_id": custom_id, "response": response, "error": None}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"
