"""Exports load with `datasets` and train with TRL (the version pinned in pyproject.toml):
one step of RewardTrainer and DPOTrainer on the pairwise export, of SFTTrainer on the SFT
export, with a tiny GPT-2 built here on the CPU. No download. Exports of dialogue prompts
(TRL's conversational formats, design §11) train the same way, the tokenizer given a chat
template."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.dialogue import Message, plain_text
from app.exports.options import ExportOptions
from app.exports.service import write_export
from app.labeling.models import Demonstration
from tests.chat import CHAT_TEMPLATE
from tests.helpers import make_project, make_prompt, make_user, rank

pytestmark = pytest.mark.slow
TRL_VERSION = "1.16.0"  # the version these tests train with (pinned in pyproject.toml)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    texts = ["Which answer is best? Answer 0 to Question. A demonstration of a good answer."]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "m", texts=texts * 30)


def _export(session: Session, folder: Path, *, dialogues: bool = False, **options: Any) -> Path:
    """Six prompts (dialogues, or strings), each ranked by two labelers, each with a
    demonstration."""
    project = make_project(session)
    ann, bob = make_user(session), make_user(session)
    for i in range(6):
        prompt = make_prompt(session, project, text=f"Question {i}?")
        if dialogues:
            turns: list[Message] = [
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": f"Question {i}?"},
            ]  # fmt: skip
            prompt.messages, prompt.text = turns, plain_text(turns)
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


def _load(folder: Path, fmt: str, gzip: bool = False) -> Any:
    """The export's train split, read the way its card says."""
    from datasets import load_dataset, load_from_disk

    if fmt == "hf":
        return load_from_disk(str(folder / "dataset"))["train"]
    if fmt == "parquet":
        return load_dataset("parquet", data_files=str(folder / "train.parquet"), split="train")
    path = folder / ("train.jsonl.gz" if gzip else "train.jsonl")
    return load_dataset("json", data_files=str(path), split="train")


def _tokenizer(tiny_model: Path, *, chat: bool) -> Any:
    """The tiny model's tokenizer; with ``chat``, given a chat template (conversational rows
    need one)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _train_one_step(trainer: Any) -> None:
    loss = trainer.train().training_loss
    assert math.isfinite(loss) and loss > 0  # a real, finite loss


def _first(trainer: Any, column: str) -> str:
    """The trainer's first tokenized example, decoded: what the chat template made of it."""
    return str(trainer.processing_class.decode(trainer.train_dataset[0][column]))


#: the first dialogue prompt through CHAT_TEMPLATE
TURNS_0 = "<|system|>Be brief.\n<|user|>Hi!\n<|assistant|>Hello.\n<|user|>Question 0?\n"
PAIRWISE = [("jsonl", False), ("parquet", False), ("hf", False), ("parquet", True)]


@pytest.mark.parametrize(("fmt", "dialogues"), PAIRWISE, ids=["jsonl", "parquet", "hf", "chat"])
def test_pairwise_export_trains_a_reward_model_and_dpo(
    session: Session, tmp_path: Path, tiny_model: Path, fmt: str, dialogues: bool
) -> None:
    """Dialogue prompts give TRL's conversational preference rows, which both trainers lay
    out with the tokenizer's chat template."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer
    from trl.data_utils import is_conversational

    folder = _export(session, tmp_path / "pairwise", dialogues=dialogues, kind="pairwise",
                     format=fmt)  # fmt: skip
    dataset = _load(folder, fmt)
    assert dataset.num_rows == 6 * 12  # two labelers x C(4, 2) pairs per prompt
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    assert is_conversational(dataset[0]) == dialogues
    tokenizer = _tokenizer(tiny_model, chat=dialogues)

    reward = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    reward.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(
        model=reward, args=_args(RewardConfig, tmp_path / "rm"), train_dataset=dataset,
        processing_class=tokenizer,
    )  # fmt: skip
    if dialogues:
        assert _first(trainer, "chosen_ids") == f"{TURNS_0}<|assistant|>Answer 0 to Question 0?\n"
    _train_one_step(trainer)

    dpo = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=_args(DPOConfig, tmp_path / "dpo"), train_dataset=dataset, processing_class=tokenizer,
    )  # fmt: skip
    if dialogues:
        assert _first(dpo, "prompt_ids") == f"{TURNS_0}<|assistant|>"
    _train_one_step(dpo)


@pytest.mark.parametrize(
    ("fmt", "dialogues"), [("jsonl", False), ("hf", True)], ids=["jsonl", "chat"]
)
def test_sft_export_trains_with_sft_trainer(
    session: Session, tmp_path: Path, tiny_model: Path, fmt: str, dialogues: bool
) -> None:
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    gzip = fmt == "jsonl"
    folder = _export(session, tmp_path / "sft", dialogues=dialogues, kind="sft", format=fmt,
                     gzip=gzip)  # fmt: skip
    dataset = _load(folder, fmt, gzip)
    assert dataset.num_rows == 6
    if dialogues:
        assert dataset[0]["prompt"][-1] == {"role": "user", "content": "Question 0?"}
        assert dataset[0]["completion"] == [{"role": "assistant", "content": "Reply 0."}]
    else:
        assert dataset[0]["completion"] == "Reply 0."
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=_args(SFTConfig, tmp_path / "out"),
        train_dataset=dataset,
        processing_class=_tokenizer(tiny_model, chat=dialogues),
    )
    if dialogues:
        assert _first(trainer, "input_ids").startswith(f"{TURNS_0}<|assistant|>Reply 0.")
    _train_one_step(trainer)
