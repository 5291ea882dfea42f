"""Exports load with `datasets` and train with TRL (the version pinned in pyproject.toml):
one step of RewardTrainer and DPOTrainer on the pairwise export, of SFTTrainer on the SFT
export, with a tiny GPT-2 built here on the CPU. No download."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.exports.options import ExportOptions
from app.exports.service import write_export
from app.labeling.models import Demonstration
from tests.helpers import make_project, make_prompt, make_user, rank

pytestmark = pytest.mark.slow
TRL_VERSION = "1.16.0"  # the version these tests train with (pinned in pyproject.toml)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    texts = ["Which answer is best? Answer 0 to Question. A demonstration of a good answer."]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "m", texts=texts * 30)


def _export(session: Session, folder: Path, **options: Any) -> Path:
    project = make_project(session)
    ann, bob = make_user(session), make_user(session)
    for i in range(6):
        prompt = make_prompt(session, project, text=f"Question {i}?")
        rank(session, prompt, ann, [0, 1, 2, 3])
        rank(session, prompt, bob, [1, 0, 2, 3])
        session.add(Demonstration(prompt_id=prompt.id, author_id=ann.id, text=f"Reply {i}."))
    session.flush()
    opts = ExportOptions.from_dict({"validation_ratio": 0, **options})
    return write_export(session=session, project=project, options=opts, folder=folder).directory


def _args(config_class: Any, out: Path) -> Any:
    return config_class(
        output_dir=str(out), max_steps=1, per_device_train_batch_size=2, report_to=[],
        use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True,
    )  # fmt: skip


def test_trl_is_the_pinned_version() -> None:
    import trl

    assert trl.__version__ == TRL_VERSION


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_pairwise_export_trains_a_reward_model_and_dpo(
    session: Session, tmp_path: Path, tiny_model: Path, fmt: str
) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from datasets import load_dataset, load_from_disk
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    folder = _export(session, tmp_path / "pairwise", kind="pairwise", format=fmt)
    if fmt == "hf":
        dataset = load_from_disk(str(folder / "dataset"))["train"]
    else:
        name = "json" if fmt == "jsonl" else "parquet"
        path = folder / ("train.jsonl" if fmt == "jsonl" else "train.parquet")
        dataset = load_dataset(name, data_files=str(path), split="train")
    assert dataset.num_rows == 6 * 12  # two labelers x C(4, 2) pairs per prompt
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    reward = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    reward.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(
        model=reward, args=_args(RewardConfig, tmp_path / "rm"), train_dataset=dataset,
        processing_class=tokenizer,
    )  # fmt: skip
    loss = trainer.train().training_loss
    assert math.isfinite(loss) and loss > 0  # a real, finite loss

    policy = AutoModelForCausalLM.from_pretrained(tiny_model)
    trainer = DPOTrainer(
        model=policy, args=_args(DPOConfig, tmp_path / "dpo"), train_dataset=dataset,
        processing_class=tokenizer,
    )  # fmt: skip
    loss = trainer.train().training_loss
    assert math.isfinite(loss) and loss > 0


def test_sft_export_trains_with_sft_trainer(
    session: Session, tmp_path: Path, tiny_model: Path
) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    folder = _export(session, tmp_path / "sft", kind="sft", format="jsonl", gzip=True)
    dataset = load_dataset("json", data_files=str(folder / "train.jsonl.gz"), split="train")
    assert dataset.num_rows == 6 and dataset[0]["completion"] == "Reply 0."
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=_args(SFTConfig, tmp_path / "out"),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    loss = trainer.train().training_loss
    assert math.isfinite(loss) and loss > 0
