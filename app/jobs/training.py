"""The settings of an SFT or reward-model training job, checked before the job is queued.

Torch-free, so the CLI and the web app check a request without loading the ML stack; the
worker turns the checked settings into the trainer's config (``workers/ml/training.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

SFT: Final = "sft"
RM: Final = "rm"
KINDS: Final = (SFT, RM)
#: the fields the trainer's config takes (workers/ml/training.py)
TRAINER_FIELDS: Final = (
    "epochs", "batch_size", "learning_rate", "max_length", "seed", "logging_steps",
    "save_steps", "warmup_ratio", "weight_decay",
)  # fmt: skip


class TrainError(ValueError):
    """Settings a training job cannot run with; the message names every wrong field."""


@dataclass(frozen=True)
class TrainOptions:
    kind: str  # sft | rm
    base: str  # a registered version id, or a model folder
    epochs: float = 1.0
    batch_size: int = 8  # sft: demonstrations; rm: prompts (x K answers each)
    learning_rate: float = 5e-5
    max_length: int = 256
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 50  # a checkpoint every n steps: a lost worker resumes from the last
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    margin_coef: float = 0.0  # rm
    center_coef: float = 0.0  # rm
    k: int | None = None  # rm: train on the rankings of this size only
    validation_ratio: float = 0.1  # share of prompt submitters held out
    name: str | None = None  # the registered model's name
    out: str | None = None  # the saved folder (default: the data dir's models/)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def trainer_config(self) -> dict[str, Any]:
        config = {name: getattr(self, name) for name in TRAINER_FIELDS}
        if self.kind == RM:
            config.update(margin_coef=self.margin_coef, center_coef=self.center_coef)
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainOptions:
        errors: list[str] = []
        kind = str(data.get("kind") or "")
        if kind not in KINDS:
            errors.append(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        base = str(data.get("base") or "").strip()
        if not base:
            errors.append("base is required: a registered model (id or name) or a model folder")

        def number(name: str, low: float, high: float, *, whole: bool = False) -> Any:
            default = getattr(cls, name)
            value = data.get(name)
            if value is None or value == "":
                return default
            try:
                parsed = float(value)
            except (TypeError, ValueError):
                errors.append(f"{name} must be a number, not {value!r}")
                return default
            if whole and (isinstance(value, bool) or not parsed.is_integer()):
                errors.append(f"{name} must be a whole number, not {value!r}")
                return default
            if not math.isfinite(parsed) or not low <= parsed <= high:
                errors.append(f"{name} must be between {low:g} and {high:g}, not {value!r}")
                return default
            return int(parsed) if whole else parsed

        values = {
            "epochs": number("epochs", 0.01, 100),
            "batch_size": number("batch_size", 1, 4096, whole=True),
            "learning_rate": number("learning_rate", 1e-9, 1.0),
            "max_length": number("max_length", 8, 131072, whole=True),
            "seed": number("seed", 0, 2**32 - 1, whole=True),
            "logging_steps": number("logging_steps", 1, 100000, whole=True),
            "save_steps": number("save_steps", 0, 10**7, whole=True),
            "warmup_ratio": number("warmup_ratio", 0, 0.5),
            "weight_decay": number("weight_decay", 0, 1),
            "margin_coef": number("margin_coef", 0, 100),
            "center_coef": number("center_coef", 0, 100),
            "validation_ratio": number("validation_ratio", 0, 0.9),
        }
        k = data.get("k")
        if k in (None, ""):
            k = None
        else:
            try:
                k = int(k)
                if not 2 <= k <= 16:
                    raise ValueError
            except (TypeError, ValueError):
                errors.append(f"k must be a whole number from 2 to 16, not {data.get('k')!r}")
                k = None
        if k is not None and kind == SFT:
            errors.append("k applies to reward models (rankings of k answers), not to sft")
        name = str(data.get("name") or "").strip() or None
        if name is not None and (len(name) > 200 or name.isdigit()):
            errors.append("name must have at most 200 characters and not be a number")
        out = str(data.get("out") or "").strip() or None
        if errors:
            raise TrainError("; ".join(errors))
        return cls(kind=kind, base=base, k=k, name=name, out=out, **values)
