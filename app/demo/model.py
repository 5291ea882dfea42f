"""The demo's policy: a tiny GPT-2 built from a config and a tokenizer trained on the demo's
own text, so the whole loop runs on a fresh machine with no download. Its answers are noise;
point the project at a real model with `rlhf models register` and `rlhf models promote`."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.demo.content import (
    DEMO_DIALOGUES,
    DEMO_GUIDELINES,
    DEMO_PROMPTS,
    DEMO_UNANSWERED_PROMPTS,
)
from app.models_registry.models import ModelKind, ModelVersion
from app.models_registry.service import promote_model, register_model
from app.projects.models import Project

DEMO_MODEL_NAME = "demo-tiny-gpt2"


def ensure_demo_policy(
    *, session: Session, project: Project, models_dir: Path
) -> ModelVersion | None:
    """Build, register and promote the demo model once; None when the project has a policy."""
    if project.current_policy_id is not None:
        return None
    from workers.ml.tiny import build_tiny_causal_lm  # torch: only when the model is built

    folder = models_dir / DEMO_MODEL_NAME
    if not (folder / "config.json").exists():
        texts = [DEMO_GUIDELINES, *DEMO_UNANSWERED_PROMPTS]
        for item in DEMO_PROMPTS:
            texts.append(item["prompt"])
            texts.extend(answer["text"] for answer in item["answers"])
        for dialogue in DEMO_DIALOGUES:
            texts.extend(message["content"] for message in dialogue["messages"])
            texts.extend(answer["text"] for answer in dialogue["answers"])
        # A context long enough for the demo's longest answers: SFT and RM train on all of them.
        build_tiny_causal_lm(folder, texts=texts, vocab_size=2048, n_positions=2048)
    version = session.scalar(select(ModelVersion).where(ModelVersion.name == DEMO_MODEL_NAME))
    if version is None:
        version = register_model(
            session=session, path=str(folder), kind=ModelKind.base, name=DEMO_MODEL_NAME
        )
    promote_model(session=session, model=version, project=project, actor_id=None)
    return version
