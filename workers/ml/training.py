"""What SFT and reward-model training share: the ``TrainingArguments``, checkpoints to resume
from, a callback that reports each logged step and honours a cancel, and the saved folder.

Training runs on ``transformers.Trainer`` (and so on ``accelerate``): the same code on CPU and
on a GPU, in bf16 where the device supports it, seeded. Nothing here knows about the database:
the job (``workers/train.py``) passes callables that store what is reported.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from workers.ml.formatting import dialogue_layout, template_for
from workers.ml.lora import LoraSettings, is_lora, save_merged

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TMP_SUFFIX = ".tmp"

#: (step, values, phase) -> None; phase is "train" or "eval"
StepSink = Callable[[int, dict[str, float], str], None]
#: (fraction 0..1, message) -> None; may raise to stop training (a cancel)
ProgressSink = Callable[[float, str], None]


@dataclass
class TrainConfig:
    """Settings shared by SFT and RM training (a job's params, the CLI's options)."""

    epochs: float = 1.0
    batch_size: int = 8  # SFT: demonstrations; RM: whole prompts (x K answers)
    learning_rate: float = 5e-5
    max_length: int = 256
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 0  # 0: no checkpoints (tests, benchmarks)
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    group_by_length: bool = False  # batches of similar length: faster, less random
    long_answers: str = "drop"  # an answer that does not fit: "drop" it or "truncate" it
    lora: LoraSettings | None = None  # set: train a LoRA adapter, not every weight
    extra: dict[str, Any] = field(default_factory=dict)  # any other TrainingArguments


def context_length(config: Any) -> int | None:
    """The most tokens the model reads at once (None when its config does not say)."""
    for name in ("n_positions", "max_position_embeddings", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_max_length(max_length: int, model: Any) -> int:
    """``max_length`` capped at the model's context."""
    context = context_length(model.config)
    return min(max_length, context) if context else max_length


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


#: a run logs its training figures at least this often (when it has the steps): a one-epoch
#: run of 5 steps, logged every 10, would chart no training curve at all
MIN_LOGGED_STEPS = 10


def logging_every(logging_steps: int, steps: int) -> int:
    """``logging_steps``, lowered (down to every step) for a run of ``steps`` too short to log
    ``MIN_LOGGED_STEPS`` times at that rate."""
    return max(1, min(logging_steps, steps // MIN_LOGGED_STEPS))


def training_arguments(out_dir: Path, config: TrainConfig, *, steps: int) -> Any:
    """The Trainer's arguments for a run of ``steps`` optimizer steps (a short run logs more
    often: ``logging_every``)."""
    from transformers import TrainingArguments

    checkpoints = config.save_steps > 0
    return TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=config.weight_decay,
        logging_steps=logging_every(config.logging_steps, steps),
        eval_strategy="no",  # each trainer evaluates after an epoch itself
        save_strategy="steps" if checkpoints else "no",
        save_steps=config.save_steps if checkpoints else 500,
        save_total_limit=2 if checkpoints else None,  # the last one may be half-written
        bf16=bf16_supported(),
        report_to=[],
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        **config.extra,
    )


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under ``folder`` (``trainer_state.json`` is written after
    the weights, optimizer and RNG states, so a checkpoint without it was cut off)."""
    if not folder.is_dir():
        return None
    done = [
        (int(m.group(1)), path)
        for path in folder.iterdir()
        if (m := CHECKPOINT.match(path.name)) and (path / "trainer_state.json").is_file()
    ]
    return max(done)[1] if done else None


def checkpoint_step(checkpoint: Path) -> int:
    match = CHECKPOINT.match(checkpoint.name)
    return int(match.group(1)) if match else 0


def _numbers(logs: Mapping[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in logs.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


class ReportCallback(TrainerCallback):
    """Sends every logged step to ``on_step`` and progress (at most every ``every`` seconds,
    and at the end of each epoch) to ``on_progress``, which may raise to stop (a cancel)."""

    def __init__(self, on_step: StepSink, on_progress: ProgressSink, *, every: float = 1.0) -> None:
        self.on_step = on_step
        self.on_progress = on_progress
        self.every = every
        self._last = 0.0

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        values = _numbers(logs or {})
        evals = {k.removeprefix("eval_"): v for k, v in values.items() if k.startswith("eval_")}
        train = {k: v for k, v in values.items() if not k.startswith("eval_")}
        train.pop("total_flos", None)
        if evals:
            self.on_step(state.global_step, evals, "eval")
        if train.keys() - {"epoch"} and "train_runtime" not in train:
            self.on_step(state.global_step, train, "train")

    def _progress(self, state: Any, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        total = max(int(state.max_steps or 0), 1)
        self.on_progress(
            min(state.global_step / total, 1.0), f"step {state.global_step:,} / {total:,}"
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._progress(state, force=False)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._progress(state, force=True)


def save_weights(model: Any, tokenizer: Any, folder: Path) -> None:
    """``save_pretrained`` of the weights and the tokenizer into ``folder`` (emptied first):
    the part of a saved model that needs it in memory (a trainer process writes it). A LoRA
    model is saved merged, its adapter in ``adapter/`` (``lora.save_merged``; the model is
    merged in place)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if is_lora(model):
        model = save_merged(model, folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def finish_saved(
    weights: Path, folder: Path, *, kind: str, parent: int | str | None, meta: Mapping[str, Any]
) -> Path:
    """Write ``rlhf.json`` (design §5: ``kind``, ``parent`` and ``meta``) into the folder
    ``save_weights`` filled, then rename it to ``folder``: a folder under the final name is
    whole."""
    meta = {"kind": kind, "parent": parent, **meta}
    (weights / "rlhf.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    weights.rename(folder)
    return folder


def weights_folder(folder: Path) -> Path:
    """Where a model bound for ``folder`` is written before it is whole."""
    return folder.with_name(folder.name + TMP_SUFFIX)


def save_model(
    model: Any,
    tokenizer: Any,
    folder: Path,
    *,
    kind: str,
    parent: int | str | None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """A whole saved model in ``folder`` (weights, tokenizer, ``rlhf.json``), through a
    temporary sibling renamed at the end (``save_weights`` then ``finish_saved``)."""
    tmp = weights_folder(folder)
    save_weights(model, tokenizer, tmp)
    meta = {"template": template_for(tokenizer), "dialogue": dialogue_layout(tokenizer)}
    return finish_saved(tmp, folder, kind=kind, parent=parent, meta={**meta, **(extra or {})})


def forward_through(model: Any, score: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """``score(module)`` run as the forward of ``model``, the model a Trainer hands to
    ``compute_loss``: with several processes that is a wrapper (DistributedDataParallel, a
    DeepSpeed engine) whose forward arms the gradient sync, so a loss that reads the model's
    parts (the RM's body and score head) must still go through it. The module's forward is
    swapped for ``score`` for the one call, and put back before ``score`` runs."""
    inner = getattr(model, "module", None)
    if not isinstance(inner, torch.nn.Module):
        return score(model)

    def once(*args: Any, **kwargs: Any) -> torch.Tensor:
        inner.__dict__.pop("forward", None)  # the class's forward again, for score's own calls
        return score(inner)

    inner.forward = once
    try:
        return model()
    finally:
        inner.__dict__.pop("forward", None)


def mean_across_processes(trainer: Any, sums: Mapping[str, float], count: int) -> dict[str, float]:
    """Per-batch figures summed since the last log, as their mean over the batches of every
    process (each process trains on its own share of a step). Every process calls it at each
    log, as the Trainer logs on all of them."""
    names = sorted(sums)
    totals = torch.tensor(
        [*(float(sums[name]) for name in names), float(count)], dtype=torch.float64,
        device=trainer.args.device,
    )  # fmt: skip
    if trainer.accelerator.num_processes > 1:
        totals = trainer.accelerator.reduce(totals, reduction="sum")
    n = float(totals[-1])
    return {name: round(float(totals[i]) / n, 4) for i, name in enumerate(names)} if n else {}


def disable_dropout(model: Any) -> None:
    """Dropout off (TRL's reward and PPO trainers do the same): the score of an answer must
    not depend on a random mask, and pairs of one prompt must see the same network."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


class EpochSampler(torch.utils.data.Sampler[int]):
    """A fresh shuffle each epoch, seeded with ``seed + epoch`` (the Trainer calls
    ``set_epoch``), so a run resumed mid-epoch draws the same order as one that never stopped.

    With ``group_by_length``, items of similar length share a batch, so a batch pads less:
    the shuffle is cut into megabatches of up to 50 batches, each sorted by length
    (``transformers``' grouping). Faster on data of mixed lengths, but batches are less
    random: on the bench's short runs the reward model's validation loss came out higher
    (0.085 vs 0.066 over 5 seeds), so it is off by default, as in ``transformers``."""

    def __init__(
        self, lengths: Sequence[int], batch_size: int, *, seed: int, group_by_length: bool
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if not self.group_by_length:
            return iter(torch.randperm(len(self.lengths), generator=generator).tolist())
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def run_trainer(
    model: Any,
    collator: Callable[[Any], dict[str, torch.Tensor]],
    train: Sequence[Any],
    *,
    lengths: Sequence[int],
    config: TrainConfig,
    out_dir: Path,
    evaluate: Callable[[], dict[str, float]],
    on_step: StepSink | None,
    callbacks: Sequence[Any] = (),
    resume: Path | None = None,
    trainer_class: type | None = None,
) -> float:
    """Train ``model`` on ``train`` with a ``transformers`` Trainer (``trainer_class``, for a
    custom loss), shuffled each epoch (grouped by ``lengths`` if ``config.group_by_length``);
    ``evaluate()`` runs after each epoch and
    its figures go to ``on_step`` as phase "eval". Returns the seconds spent training."""
    from transformers import PrinterCallback, Trainer

    base: type = trainer_class or Trainer

    sampler = EpochSampler(
        lengths, config.batch_size, seed=config.seed, group_by_length=config.group_by_length
    )

    class GroupedTrainer(base):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return sampler

    class SamplerEpoch(TrainerCallback):
        """Tell the sampler its epoch as each begins: with several processes, a run resumed
        mid-epoch iterates a dataloader (accelerate's ``skip_first_batches`` over its
        ``BatchSamplerShard``) whose ``set_epoch`` does not reach the sampler, which would
        then draw epoch 0's order. ``state.epoch`` is then the resumed epoch's fraction."""

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sampler.set_epoch(math.floor((state.epoch or 0) + 1e-6))

    class EpochEval(TrainerCallback):
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if on_step is None:
                return
            figures = evaluate()
            model.train()
            if figures:
                on_step(state.global_step, {**figures, "epoch": float(state.epoch or 0)}, "eval")

    steps = math.ceil(math.ceil(len(train) / config.batch_size) * config.epochs)
    trainer = GroupedTrainer(
        model=model, args=training_arguments(out_dir, config, steps=steps),
        train_dataset=list(train), data_collator=collator, callbacks=[*callbacks, SamplerEpoch(), EpochEval()],
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # progress goes to the job, not stdout
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return time.perf_counter() - start
