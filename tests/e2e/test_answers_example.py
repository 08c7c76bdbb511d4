"""The second example (examples/answers): prompts → two teachers on two endpoints with their own
keys → join → pairwise judge, every service a process on the real broker, the endpoints two
simulator processes that each accept only their own key."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from fastdistill.dev.teacher_sim import tasks
from fastdistill.dev.teacher_sim.server import SimConfig
from fastdistill.local_stack import LocalStack
from fastdistill.runs import run_dir, run_states, wait_for_release
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.pipeline import PipelineSpec
from tests.sim import sim_process

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples/answers"
#: the simulators' seeds: two different "models"
SEED_A, SEED_B = 0, 1


def _refuses(url: str, key: str) -> bool:
    request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {key}"})
    try:
        urllib.request.urlopen(request, timeout=5).close()
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    return False


def test_two_teachers_with_their_own_keys_joined_and_judged(tmp_path: Path, kafka_bootstrap: str) -> None:
    raw = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    raw["name"] = f"answers-{uuid.uuid4().hex[:8]}"
    raw["sink"]["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = PipelineSpec.load(path)
    seeds = EXAMPLE / "seeds.jsonl"
    prompts = [json.loads(line) for line in seeds.read_text().splitlines()]
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, session_timeout_ms=6000)
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    with (
        sim_process(tmp_path, SimConfig(seed=SEED_A, api_key="sk-team-a", judge_malformed_rate=0.1)) as sim_a,
        sim_process(tmp_path, SimConfig(seed=SEED_B, api_key="sk-team-b")) as sim_b,
    ):
        assert _refuses(sim_b.base_url, "sk-team-a") and _refuses(sim_a.base_url, "sk-team-b")
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "TEACHER_A_URL": sim_a.base_url,
            "TEACHER_A_KEY": "sk-team-a",
            "TEACHER_B_URL": sim_b.base_url,
            "TEACHER_B_KEY": "sk-team-b",
        }
        stack = LocalStack(path, tmp_path / "stack", env)
        try:
            stack.add_pipeline_services()
            stack.start()
            stack.produce(seeds, "best-answers")
            result = wait_for_release(spec, "best-answers", 300, stack)
        finally:
            stack.stop()
        stats_a, stats_b = sim_a.stats(), sim_b.stats()
    assert result["released"], result
    rows = [
        json.loads(line)
        for line in (run_dir(spec, "best-answers") / "judge" / "data.jsonl").read_text().splitlines()
    ]
    assert len(rows) == len(prompts) == 80
    by_task = {r["task_id"]: r for r in rows}
    readable = 0
    for prompt in prompts:
        row = by_task[prompt["task_id"]]
        assert row["teacher_models"] == ["teacher-a", "teacher-b"]
        a, b = row["generations"]
        assert a and b and a != b  # two endpoints, two models, two answers
        if row["judge_error"] is None:
            readable += 1
            best = max((0, 1), key=lambda i: (tasks.quality(SEED_A, row["generations"][i]), -i))
            assert row["ranking"][0] == best and row["chosen"] == row["generations"][best]
    assert readable >= 78  # 0.1 malformed per answer, three answers per row: ~0.1 % unread
    # The same release as DPO pairs (ranking's first over its last) and as SFT conversations.
    folder = run_dir(spec, "best-answers") / "judge"
    pairs = [json.loads(line) for line in (folder / "preference.jsonl").read_text().splitlines()]
    ranked = [r for r in rows if r["judge_error"] is None and r["generations"][0] != r["generations"][1]]
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        (r["instruction"], r["generations"][r["ranking"][0]], r["generations"][r["ranking"][-1]])
        for r in ranked
    ]
    chats = [json.loads(line)["messages"] for line in (folder / "chat.jsonl").read_text().splitlines()]
    assert chats == [
        [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["chosen"]}]
        for r in rows
        if r["chosen"]
    ]
    state = run_states(spec, kafka)["best-answers"]
    assert state["dead_letters"] == {}
    # A answered the 80 prompts and every judge request, B the 80 prompts; the only requests
    # refused were the test's own with the other team's key
    assert stats_b["outcomes"] == {"ok": 80, "unauthorized": 1} and stats_b["kinds"] == {"generic": 80}
    assert stats_a["kinds"]["generic"] == 80 and stats_a["kinds"]["ranking"] >= 80
    assert stats_a["outcomes"]["unauthorized"] == 1 and stats_b["routes"] == {"openai": 80}
    print(
        f"answers: 80 prompts; endpoint A {stats_a['requests']} requests "
        f"({stats_a['prompt_tokens']} prompt + {stats_a['completion_tokens']} completion tokens), "
        f"endpoint B {stats_b['requests']} ({stats_b['prompt_tokens']} + {stats_b['completion_tokens']})"
    )
