"""LoRA on every training job (design §12), with ``peft``: the settings, the wrapping of a
loaded model, what it trains, and the saved folder.

- **Targets**: ``all-linear`` is every linear layer of the base (``nn.Linear``, and GPT-2's
  ``Conv1D``) except the output head: on GPT-2 ``c_attn``, ``c_proj`` (attention and MLP) and
  ``c_fc`` in each block, not ``lm_head`` nor an RM's ``score``; on BERT/MiniLM ``query``,
  ``key``, ``value`` and the three ``dense`` layers of each block plus the pooler's ``dense``,
  not the ``classifier``. Names (``c_attn,c_proj``) match as ``peft`` matches them: a
  module's full name or its last parts. The targets are resolved here, to full module names,
  so that a name the base does not have is refused with the names it does have.
- **Heads**: a causal LM's output head stays frozen (tied to the input embeddings in GPT-2);
  a score head (the RM's, PPO's critic's) is trained in full (``modules_to_save``): it starts
  random or is rescaled and must move as a whole.
- **Saving**: the adapter is saved in ``adapter/`` and the model merged (``merge_and_unload``)
  into a plain checkpoint that ``from_pretrained`` loads with no ``peft`` (``save_model``).

Importing this module imports neither torch nor ``peft``: the CLI and the web app check a
request's settings with ``LoraSettings`` alone.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

ALL_LINEAR: Final = "all-linear"
ADAPTER_FOLDER: Final = "adapter"  # beside the merged model in the saved folder
#: ``alpha`` when none is given is this times ``r``: the update is scaled by alpha / r, so a
#: fixed ratio keeps the step size of the adapter when r changes
ALPHA_PER_RANK: Final = 2
MODULE_NAME = re.compile(r"[\w]+(\.[\w]+)*")
#: how many of the base's layer names an error message lists
NAMES_SHOWN = 12

#: "causal": a language model (SFT, DPO, the PPO policy); "score": a sequence classifier whose
#: head is trained in full (the RM, the PPO critic)
Task = Literal["causal", "score"]


class LoraError(ValueError):
    """LoRA cannot be put on this model as asked; the message says why and what it has."""


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    target_modules: str = ALL_LINEAR  # or comma-separated module names

    @property
    def names(self) -> list[str] | None:
        """The module names asked for, or None for ``all-linear``."""
        if self.target_modules == ALL_LINEAR:
            return None
        return [n.strip() for n in self.target_modules.split(",") if n.strip()]


def parse_target_modules(value: str) -> tuple[str | None, str | None]:
    """(normalised value, error): ``all-linear``, or comma-separated module names."""
    text = value.strip()
    if text.lower() == ALL_LINEAR:
        return ALL_LINEAR, None
    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if not MODULE_NAME.fullmatch(n)]
    if not text or bad:
        shown = ", ".join(repr(n) for n in bad) if text else repr(value)
        return None, (
            f"lora_target_modules must be {ALL_LINEAR} or comma-separated module names "
            f"(c_attn,c_proj), not {shown}"
        )
    return ",".join(dict.fromkeys(names)), None


def is_lora(model: Any) -> bool:
    """The model carries a ``peft`` adapter."""
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def adapter_off(model: Any) -> contextlib.AbstractContextManager[Any]:
    """A block in which a LoRA model computes as its base (the reference of DPO and PPO: no
    second copy in memory); a model without an adapter is left as it is."""
    return model.disable_adapter() if is_lora(model) else contextlib.nullcontext()


def _head_names(model: Any) -> list[str]:
    """The full names of the model's output heads: the LM head, the score/classifier head."""
    heads: list[str] = []
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for head in (output, getattr(model, "score", None), getattr(model, "classifier", None)):
        if head is not None:
            heads.extend(name for name, module in model.named_modules() if module is head)
    return list(dict.fromkeys(heads))


def _linear_layers(model: Any) -> list[str]:
    """The full names of the base's linear layers (``nn.Linear``, ``Conv1D``), heads left out."""
    import torch
    from transformers.pytorch_utils import Conv1D

    heads = _head_names(model)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D)
        and not any(name == h or name.startswith(h + ".") for h in heads)
    ]


def _matches(name: str, target: str) -> bool:
    """peft's rule: the full name, or its last dotted parts."""
    return name == target or name.endswith("." + target)


def _short(names: Iterable[str]) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name in names})


def resolve_targets(model: Any, settings: LoraSettings) -> list[str]:
    """The full names of the layers the adapter goes on; ``LoraError`` when a name asked for
    matches none of the base's linear layers (the message lists the names it has)."""
    layers = _linear_layers(model)
    if not layers:
        raise LoraError(f"{type(model).__name__} has no linear layer to put a LoRA adapter on")
    asked = settings.names
    if asked is None:
        return layers
    missing = [t for t in asked if not any(_matches(name, t) for name in layers)]
    if missing:
        have = _short(layers)
        shown = ", ".join(have[:NAMES_SHOWN]) + (", ..." if len(have) > NAMES_SHOWN else "")
        heads = [t for t in missing if any(_matches(h, t) for h in _head_names(model))]
        note = (
            f" ({', '.join(heads)}: the output head, which LoRA leaves out; an RM's score head "
            "is trained in full)"
            if heads
            else ""
        )
        raise LoraError(
            f"LoRA target modules not in the base model: {', '.join(missing)}{note}. Its "
            f"linear layers are named {shown}; give some of these to --lora-target-modules, "
            f"or {ALL_LINEAR}."
        )
    return [name for name in layers if any(_matches(name, t) for t in asked)]


def apply_lora(model: Any, settings: LoraSettings, *, task: Task) -> Any:
    """``model`` wrapped with a LoRA adapter (a ``peft`` model; the base's weights frozen).
    ``task="score"`` trains the score head in full. Raises ``LoraError``."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = resolve_targets(model, settings)
    modules = dict(model.named_modules())
    heads = [h.rsplit(".", 1)[-1] for h in _head_names(model)] if task == "score" else None
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # typed int; a float scales too
        lora_dropout=settings.dropout,
        target_modules=targets,
        # GPT-2's Conv1D keeps its weight as (in, out): peft must know to transpose it
        fan_in_fan_out=all(isinstance(modules[t], Conv1D) for t in targets),
        modules_to_save=heads or None,
        task_type=TaskType.SEQ_CLS if task == "score" else TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, config)


def lora_summary(model: Any, settings: LoraSettings) -> dict[str, Any]:
    """What a job records of its adapter (metrics and ``rlhf.json``): the settings, the layers
    it is on, and the trainable parameters' share of all the model's parameters."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    trainable, total = model.get_nb_trainable_parameters()
    # the layers themselves: peft may shorten a long target list to the names' last parts
    adapted = [name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    return {
        "r": settings.r,
        "alpha": settings.alpha,
        "dropout": settings.dropout,
        "target_modules": _short(adapted),
        "adapted_layers": len(adapted),
        "trainable_parameters": int(trainable),
        "total_parameters": int(total),
        "trainable_share": round(trainable / total, 6) if total else 0.0,
    }


def describe_lora(summary: dict[str, Any], what: str) -> str:
    """A log line: the adapter on ``what`` and how much of the model it trains."""
    return (
        f"LoRA on {what}: r {summary['r']}, alpha {summary['alpha']:g}, dropout "
        f"{summary['dropout']:g}, on {summary['adapted_layers']} layers "
        f"({', '.join(summary['target_modules'])}); training "
        f"{summary['trainable_parameters']:,} of {summary['total_parameters']:,} parameters "
        f"({summary['trainable_share']:.2%})"
    )


def save_merged(model: Any, folder: Path) -> Any:
    """Save the adapter in ``folder/adapter`` and return the merged model (the base's
    weights plus the adapter's update; the score head as trained) to be saved in ``folder``.
    ``model`` is merged in place: it is not a ``peft`` model afterwards."""
    model.save_pretrained(folder / ADAPTER_FOLDER)
    return model.merge_and_unload()
