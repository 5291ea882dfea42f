"""The trainer of an SFT, reward-model or DPO job, as ``accelerate launch`` runs it in each
of the job's processes (``python -m workers.ml.trainer_process SPEC``; design §12).

It knows nothing of the database: the job (``workers/train.py``) writes the spec (the model
folders, the prepared rows, the settings, where checkpoints go) and reads what the main
process appends to the events file, one JSON object a line:

- ``started``: ``world_size``, the number of processes;
- ``data``: what will be trained on, left out and cut (before training);
- ``step``: a logged step's figures (``step``, ``values``, ``phase``);
- ``progress``: ``fraction`` and ``message``;
- ``result``: the final figures, the LoRA summary and the saved folder's template fields;
- ``error``: ``message`` (and ``user_error`` when the data or settings were refused, or
  ``traceback``). Any process may write an error; only the main process writes the rest.

Only the main process writes steps and the model; the Trainer saves checkpoints from it too
(each process keeps its own RNG state there, so a resume needs the same number of
processes). Every process on the worker's machine watches the worker and leaves when it is
gone, so a worker killed with SIGKILL leaves no trainer behind.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

WATCH_SECONDS = 1.0


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class Events:
    """Appends events to the job's file: one ``write`` of one line each, so lines of several
    processes never interleave."""

    def __init__(self, path: Path, *, main: bool) -> None:
        self.path = path
        self.main = main

    def emit(self, event: str, *, anyone: bool = False, **fields: Any) -> None:
        if not (self.main or anyone):
            return
        line = json.dumps({"event": event, **fields}, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)


def _gone(pid: int) -> bool:
    """The process is no more (or a zombie nobody reaped: dead all the same)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def watch_supervisor(pid: int) -> None:
    """Leave at once (as a SIGKILL would) when the job's worker is gone."""

    def loop() -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            if _gone(pid):
                os._exit(3)

    threading.Thread(target=loop, name="rlhf-watch-worker", daemon=True).start()


def _examples(rows: list[dict[str, Any]]) -> list[Any]:
    from workers.ml.sft_train import Example

    return [Example(prompt=r["prompt"], completion=r["completion"]) for r in rows]


def _rankings(rows: list[dict[str, Any]]) -> list[Any]:
    from workers.ml.rm_train import Ranking

    return [Ranking(prompt=r["prompt"], answers=r["answers"], places=r["places"]) for r in rows]


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Floats rounded, and those that are not finite (no validation set) left out: JSON and
    the job's metrics have no NaN."""
    return {
        k: round(v, 6) if isinstance(v, float) else v
        for k, v in values.items()
        if not (isinstance(v, float) and not math.isfinite(v))
    }


def figures(kind: str, result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job's metrics of a finished run, and what its ``rlhf.json`` adds (``extra``)."""
    if kind == "sft":
        return {
            "validation_loss": result.loss, "validation_perplexity": result.perplexity,
            "validation_tokens": result.tokens, "train_examples": result.train_examples,
            "validation_examples": result.validation_examples,
        }, {}  # fmt: skip
    k = next(iter(result.sizes)) if len(result.sizes) == 1 else None  # one K, else null
    shared = {
        "validation_accuracy": result.accuracy, "validation_margin": result.margin,
        "validation_loss": result.loss, "validation_pairs": result.pairs,
        "k": k, "rankings_by_k": {str(size): n for size, n in result.sizes.items()},
        "train_rankings": result.train_rankings,
        "validation_rankings": result.validation_rankings,
    }  # fmt: skip
    if kind == "dpo":
        logps = {"validation_chosen_logps": result.chosen_logps,
                 "validation_rejected_logps": result.rejected_logps}  # fmt: skip
        return {**shared, **logps}, {}
    reward = {"reward_mean": result.reward_mean, "reward_std": result.reward_std}
    # PPO normalises scores with these (design §5)
    return {**shared, **reward}, {**reward, "k": k}


def train(spec: dict[str, Any], events: Events) -> None:
    from app.jobs.training import TrainOptions
    from workers.ml.formatting import dialogue_layout, template_for
    from workers.ml.long_inputs import DataReport
    from workers.ml.training import ReportCallback, save_weights

    kind = spec["kind"]
    options = TrainOptions.from_dict({**spec["options"], "kind": kind})

    def on_step(step: int, values: dict[str, float], phase: str) -> None:
        events.emit("step", step=step, values=values, phase=phase)

    def on_progress(fraction: float, message: str) -> None:
        events.emit("progress", fraction=fraction, message=message)

    def on_data(report: DataReport) -> None:
        events.emit(
            "data", train=report.train, validation=report.validation,
            left_out=dict(report.left_out.reasons), truncated=report.truncated,
        )  # fmt: skip

    resume = Path(spec["resume"]) if spec.get("resume") else None
    common: dict[str, Any] = dict(
        callbacks=[ReportCallback(on_step, on_progress)], on_step=on_step, resume=resume,
        on_data=on_data,
    )  # fmt: skip
    config = options.trainer_config()
    checkpoints = Path(spec["checkpoints"])
    result: Any
    if kind == "sft":
        from workers.ml.sft_train import train_sft
        from workers.ml.training import TrainConfig

        model, tokenizer, result = train_sft(
            spec["base"], _examples(spec["train"]), _examples(spec["validation"]), checkpoints,
            TrainConfig(**config), **common,
        )  # fmt: skip
    elif kind == "dpo":
        from workers.ml.dpo_train import DPOConfig, train_dpo

        model, tokenizer, result = train_dpo(
            spec["base"], _rankings(spec["train"]), _rankings(spec["validation"]), checkpoints,
            DPOConfig(**config), reference=spec.get("reference"),
            reference_cache=Path(spec["reference_cache"]), **common,
        )  # fmt: skip
    else:
        from workers.ml.rm_train import RewardConfig, train_reward_model

        model, tokenizer, result = train_reward_model(
            spec["base"], _rankings(spec["train"]), _rankings(spec["validation"]), checkpoints,
            RewardConfig(**config), **common,
        )  # fmt: skip
    metrics, extra = figures(kind, result)
    metrics["train_seconds"] = round(result.train_seconds, 2)
    lora = None
    if options.lora is not None:  # the settings and the share of the weights trained
        from workers.ml.lora import lora_summary

        lora = lora_summary(model, options.lora)
    if not events.main:
        return
    on_progress(1.0, "saving the model")
    save_weights(model, tokenizer, Path(spec["save_to"]))
    events.emit(
        "result", metrics=_rounded(metrics), extra=extra, lora=lora,
        meta={"template": template_for(tokenizer), "dialogue": dialogue_layout(tokenizer)},
    )  # fmt: skip


def _known_errors() -> tuple[type[BaseException], ...]:
    """The trainers' errors that say what is wrong with the data, model or settings."""
    from app.jobs.training import TrainError
    from workers.ml.dpo_train import DPODataError
    from workers.ml.loading import ModelLoadError
    from workers.ml.lora import LoraError
    from workers.ml.reward_model import RewardModelError
    from workers.ml.rm_train import RewardDataError
    from workers.ml.sft_train import SftDataError

    return (
        ModelLoadError, RewardDataError, RewardModelError, SftDataError, DPODataError,
        LoraError, TrainError,
    )  # fmt: skip


def out_of_memory_message(exc: BaseException) -> str:
    return (
        f"Out of GPU memory in process {rank()} of {world_size()}: lower --batch-size or "
        "--max-length, train with --lora-r, or shard the model with an accelerate config for "
        f"DeepSpeed ZeRO-3 or FSDP ({str(exc).splitlines()[0] if str(exc) else 'no detail'})"
    )


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if spec.get("supervisor_host") == socket.gethostname():  # not on another machine's ranks
        watch_supervisor(int(spec["supervisor_pid"]))
    events = Events(Path(spec["events"]), main=rank() == 0)
    folder = Path(spec["events"]).parent
    (folder / f"rank-{rank()}.pid").write_text(f"{os.getpid()}\n", encoding="utf-8")
    events.emit("started", world_size=world_size())
    try:
        import torch

        known = _known_errors()
        try:
            train(spec, events)
            if torch.distributed.is_initialized():  # leave together, once the model is saved
                torch.distributed.barrier()
                torch.distributed.destroy_process_group()
        except torch.OutOfMemoryError as exc:
            events.emit("error", anyone=True, message=out_of_memory_message(exc), user_error=True)
            return 1
        except known as exc:
            events.emit("error", anyone=True, message=str(exc), user_error=True)
            return 1
    except Exception as exc:
        events.emit(
            "error", anyone=True, traceback=traceback.format_exc(),
            message=f"The trainer failed in process {rank()} of {world_size()}: "
            f"{type(exc).__name__}: {exc}",
        )  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
