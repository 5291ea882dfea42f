"""Training jobs on dialogue prompts (design §11): the SFT and RM jobs snapshot conversational
rows, read each prompt's turns through ``format_prompt`` and save a model whose ``rlhf.json``
says how a dialogue is laid out. Run in-process on a tiny model, on SQLite and Postgres."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.dialogue import Message
from app.exports.models import Export
from app.jobs import kinds
from app.jobs.models import JobStatus
from app.jobs.service import create_job
from app.labeling.models import Demonstration
from app.models_registry.models import ModelKind, ModelVersion
from tests.helpers import make_project, make_prompt, make_user, rank
from workers.ml.formatting import format_prompt
from workers.runner import run_job

# Training tests about the model: on one database (see conftest); the job bookkeeping they
# go through is tested on every database by test_train_jobs.
pytestmark = pytest.mark.one_database

TEXTS = ["User: Name a colour.\nAssistant: Blue.\nUser: Another?\nAssistant: Red."] * 40


def _dialogue(i: int) -> list[Message]:
    return [
        {"role": "user", "content": f"Name colour {i}."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another?"},
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "base", texts=TEXTS, n_embd=32)


def _train(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path,
    kind: str, **params: Any,
) -> ModelVersion:  # fmt: skip
    project = make_project(session, k=3)
    labeler = make_user(session)
    for i in range(8):
        prompt = make_prompt(session, project, messages=_dialogue(i), answers=3)
        prompt.submitter_id = make_user(session).id
        rank(session, prompt, labeler, [0, 1, 2])
        session.add(Demonstration(prompt_id=prompt.id, author_id=labeler.id, text="Red."))
    base = ModelVersion(name=f"tiny-{kind}", kind=ModelKind.base, path=str(tiny))
    session.add(base)
    session.flush()
    job = create_job(
        session=session, kind=kind, project_id=project.id,
        params={"base": str(base.id), "epochs": 1, "batch_size": 4, "validation_ratio": 0.3,
                **params},
    )  # fmt: skip
    session.commit()
    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    assert status == JobStatus.succeeded, job.error
    return session.scalars(select(ModelVersion).where(ModelVersion.job_id == job.id)).one()


def _snapshot_rows(session: Session, version: ModelVersion) -> list[dict[str, Any]]:
    """Every row of the job's dataset snapshot, train and validation files alike (the job
    may split them again: by prompt when too few submitters are held out)."""
    export = session.get_one(Export, version.export_id)
    lines = [
        line
        for split in ("train", "validation")
        for line in Path(export.directory, f"{split}.jsonl").read_text().splitlines()
    ]
    return [json.loads(line) for line in lines]


def test_sft_trains_on_dialogues(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    version = _train(session, session_factory, settings, tiny, kinds.TRAIN_SFT)
    rows = _snapshot_rows(session, version)
    assert rows and all(row["prompt"][-1]["role"] == "user" for row in rows)
    assert rows[0]["completion"] == [{"role": "assistant", "content": "Red."}]
    assert version.metrics["train_examples"] + version.metrics["validation_examples"] == len(rows)


def test_the_reward_model_trains_on_dialogues_and_says_how_they_are_laid_out(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    version = _train(session, session_factory, settings, tiny, kinds.TRAIN_RM)
    rows = _snapshot_rows(session, version)
    assert rows and all(isinstance(row["prompt"], list) for row in rows)
    assert all(isinstance(answer, str) for row in rows for answer in row["completions"])
    assert version.metrics["train_rankings"] + version.metrics["validation_rankings"] == len(rows)

    folder = Path(version.path)
    layout = json.loads((folder / "rlhf.json").read_text())["dialogue"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    turns = _dialogue(0)
    text = (
        "".join(
            layout["turn_template"].format(role=layout["roles"][t["role"]], content=t["content"])
            for t in turns
        )
        + layout["answer_prefix"]
    )
    assert text == format_prompt(tokenizer, turns)  # an outside tool rebuilds the input
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        score = model(**tokenizer(text + "Red." + tokenizer.eos_token, return_tensors="pt"))
    assert score.logits.shape == (1, 1)


def test_dpo_trains_on_dialogues(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny: Path
) -> None:
    version = _train(session, session_factory, settings, tiny, kinds.TRAIN_DPO)
    rows = _snapshot_rows(session, version)
    assert rows and all(isinstance(row["prompt"], list) for row in rows)
    assert version.kind == ModelKind.policy
    assert version.metrics["train_rankings"] + version.metrics["validation_rankings"] == len(rows)
