"""`fastdistill push`: a released run to a dataset repository through huggingface_hub, against
a local HTTP stand-in for the Hub (tests/hub_stand_in.py; no hub is reachable here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.hub_stand_in import hub_stand_in
from tests.services.sink.released_run import RUN_ID, cli, released_run

TOKEN = "hf_stand_in_token"


def _env(endpoint: str) -> dict[str, str]:
    # The stand-in speaks LFS basic transfer, not Xet (what huggingface_hub uses with hf_xet).
    return os.environ | {"HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1"}


def test_push_uploads_every_released_file(tmp_path: Path) -> None:
    pipeline = released_run(tmp_path, ["jsonl", "parquet"])
    run_dir = tmp_path / "out/sinktest" / RUN_ID
    with hub_stand_in(token=TOKEN) as hub:
        done = cli("push", RUN_ID, "--repo-id", "acme/distilled", "-p", str(pipeline), env=_env(hub.base))
        assert done.returncode == 0, done.stderr
        again = cli("push", RUN_ID, "--repo-id", "acme/distilled", "-p", str(pipeline), env=_env(hub.base))
        assert again.returncode == 0, again.stderr  # the repository exists: a second commit

    repo = hub.repos["acme/distilled"]
    released = json.loads((run_dir / "RELEASED.json").read_text())
    expected = {"RELEASED.json", "README.md", "reports/quality.json", *released["subsets"]["answer"]["files"]}
    assert set(repo.files) == expected
    for name, content in repo.files.items():
        assert content == (run_dir / name).read_bytes(), name
    # Parquet went through LFS (batch, PUT checked against its sha256, verify), text inline.
    assert (
        hub.modes["answer/train/data.parquet"] == "lfs" and hub.modes["answer/train/data.jsonl"] == "regular"
    )
    assert ("PUT", f"/lfs-upload/{_sha256(run_dir / 'answer/train/data.parquet')}") in hub.requests
    assert len(repo.commits) == 2 and done.stdout.strip().endswith(repo.commits[0])
    assert TOKEN not in done.stdout + done.stderr


def test_push_refuses_changed_files_and_a_bad_token(tmp_path: Path) -> None:
    pipeline = released_run(tmp_path, ["jsonl"])
    with hub_stand_in(token=TOKEN) as hub:
        wrong = cli(
            "push",
            RUN_ID,
            "--repo-id",
            "acme/x",
            "-p",
            str(pipeline),
            env=_env(hub.base) | {"HF_TOKEN": "hf_bad"},
        )
        assert wrong.returncode == 2 and "push failed" in wrong.stderr and "hf_bad" not in wrong.stderr
        card = tmp_path / "out/sinktest" / RUN_ID / "README.md"
        card.write_text(card.read_text() + "edited\n")
        changed = cli("push", RUN_ID, "--repo-id", "acme/x", "-p", str(pipeline), env=_env(hub.base))
        assert changed.returncode == 2 and "changed since the release" in changed.stderr
    assert hub.repos == {}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
