"""`fastdistill push RUN --repo-id ORG/NAME`: a released run to a Hugging Face dataset repository
through `huggingface_hub` (create the repo if needed, then one commit of every released file).

The endpoint is huggingface_hub's own: `HF_ENDPOINT` (default the Hub), the token `HF_TOKEN` or
a stored login; neither is ever printed. Files are checked against RELEASED.json first: a run
whose files changed since its release is not published.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.sink.released import ReleasedRun


@dataclass
class Pushed:
    repo_url: str
    commit_url: str
    commit: str
    files: list[str]


def push_run(
    run: ReleasedRun,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
) -> Pushed:
    from huggingface_hub import CommitOperationAdd, HfApi

    run.verify()
    names = run.publishable()
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(run.folder / name)) for name in names
    ]
    commit = api.create_commit(
        repo_id,
        operations,
        commit_message=f"FastDistill run {run.run_id}",
        repo_type="dataset",
        revision=revision,
    )
    return Pushed(str(repo), commit.commit_url, commit.oid, names)
