"""The settings of a training job (SFT, reward model, DPO, PPO; LoRA on each), checked before
the job is queued.

Torch-free, so the CLI and the web app check a request without loading the ML stack; the
worker turns the checked settings into the trainer's config (``workers/ml/training.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

from app.jobs.errors import JobFailure
from workers.ml.long_inputs import DROP, LONG_ANSWERS
from workers.ml.lora import ALL_LINEAR, ALPHA_PER_RANK, LoraSettings, parse_target_modules

SFT: Final = "sft"
RM: Final = "rm"
DPO: Final = "dpo"
PPO: Final = "ppo"
KINDS: Final = (SFT, RM, DPO)
DPO_LOSSES: Final = ("sigmoid", "ipo")  # workers/ml/dpo_loss.py
#: DPO's default learning rate when none is given (TRL's DPOConfig): DPO moves a policy
#: away from its reference, and the SFT/RM default (5e-5) moves it too far too fast
DPO_LEARNING_RATE: Final = 1e-6
#: the adapter's dropout when none is given: SFT's is LoRA's usual 0.05; the RM, DPO and
#: PPO turn every dropout of the base off (``disable_dropout``), so the adapter's is off too
LORA_DROPOUT: Final = {SFT: 0.05, RM: 0.0, DPO: 0.0, PPO: 0.0}
#: the most trainer processes one job may launch (on all its machines together)
MAX_PROCESSES: Final = 1024
LORA_FIELDS: Final = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
#: what a training job says of its data in its metrics (design §10): shown as a note on the
#: job page and by the CLI, not as figures
DATA_REPORT_KEYS: Final = frozenset({"left_out", "left_out_reasons", "truncated", "data_warnings"})
#: the fields the trainer's config takes (workers/ml/training.py)
TRAINER_FIELDS: Final = (
    "epochs", "batch_size", "learning_rate", "max_length", "seed", "logging_steps",
    "save_steps", "warmup_ratio", "weight_decay", "group_by_length", "long_answers",
)  # fmt: skip


class TrainError(JobFailure, ValueError):
    """Settings a training job cannot run with; the message names every wrong field."""


class OptionChecker:
    """Reads one field at a time from a request, collecting every error (a bad field keeps
    its default so the others are still checked)."""

    def __init__(self, cls: type, data: dict[str, Any]) -> None:
        self.cls, self.data = cls, data
        self.errors: list[str] = []

    def number(self, name: str, low: float, high: float, *, whole: bool = False) -> Any:
        default = getattr(self.cls, name)
        value = self.data.get(name)
        if value is None or value == "":
            return default
        try:
            parsed = float(value)
        except (TypeError, ValueError):
            self.errors.append(f"{name} must be a number, not {value!r}")
            return default
        if whole and (isinstance(value, bool) or not parsed.is_integer()):
            self.errors.append(f"{name} must be a whole number, not {value!r}")
            return default
        if not math.isfinite(parsed) or not low <= parsed <= high:
            self.errors.append(f"{name} must be between {low:g} and {high:g}, not {value!r}")
            return default
        return int(parsed) if whole else parsed

    def flag(self, name: str) -> bool:
        value = self.data.get(name)
        if value is None or value == "":
            return bool(getattr(self.cls, name))
        if isinstance(value, bool):
            return value
        if str(value).lower() in {"1", "true", "yes", "on"}:
            return True
        if str(value).lower() in {"0", "false", "no", "off"}:
            return False
        self.errors.append(f"{name} must be true or false, not {value!r}")
        return bool(getattr(self.cls, name))

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.data.get(name)
        if value is None or value == "":
            return str(getattr(self.cls, name))
        if value not in choices:
            self.errors.append(f"{name} must be one of {', '.join(choices)}, not {value!r}")
            return str(getattr(self.cls, name))
        return str(value)

    def lora(self, kind: str) -> dict[str, Any]:
        """The LoRA fields: off (r 0, the rest None) or all set, alpha 2 x r and the kind's
        dropout (``LORA_DROPOUT``) when not given; the others given without r are refused."""
        errors = len(self.errors)
        r = self.number("lora_r", 0, 4096, whole=True)
        given = [f for f in LORA_FIELDS[1:] if self.data.get(f) not in (None, "")]
        if not r:
            if given and len(self.errors) == errors:  # not when lora_r itself was wrong
                verb = "applies" if len(given) == 1 else "apply"
                self.errors.append(f"{', '.join(given)} {verb} only with lora_r above 0 (LoRA)")
            return dict.fromkeys(LORA_FIELDS[1:], None) | {"lora_r": 0}
        alpha = self.number("lora_alpha", 0.001, 100000)
        dropout = self.number("lora_dropout", 0, 0.9)
        targets, error = parse_target_modules(str(self.data.get("lora_target_modules") or ""))
        if "lora_target_modules" not in given:
            targets, error = ALL_LINEAR, None
        if error:
            self.errors.append(error)
        return {
            "lora_r": r,
            "lora_alpha": alpha if "lora_alpha" in given else ALPHA_PER_RANK * r,
            "lora_dropout": dropout if "lora_dropout" in given else LORA_DROPOUT.get(kind, 0.0),
            "lora_target_modules": targets or ALL_LINEAR,
        }

    def name_and_out(self) -> tuple[str | None, str | None]:
        name = str(self.data.get("name") or "").strip() or None
        if name is not None and (len(name) > 200 or name.isdigit()):
            self.errors.append("name must have at most 200 characters and not be a number")
        return name, str(self.data.get("out") or "").strip() or None

    def done(self) -> None:
        if self.errors:
            raise TrainError("; ".join(self.errors))


@dataclass(frozen=True)
class TrainOptions:
    kind: str  # sft | rm | dpo
    base: str  # a registered version id, or a model folder (dpo: the policy, --policy)
    epochs: float = 1.0
    batch_size: int = 8  # sft: demonstrations; rm: prompts (x K answers each)
    learning_rate: float = 5e-5
    max_length: int = 1024  # capped at the model's context (the CLI's default too)
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 50  # a checkpoint every n steps: a lost worker resumes from the last
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    group_by_length: bool = False  # batches of similar length: faster, less random
    long_answers: str = DROP  # an answer longer than max_length: drop it, or truncate it
    margin_coef: float = 0.0  # rm
    center_coef: float = 0.0  # rm
    k: int | None = None  # rm, dpo: train on the rankings of this size only
    reference: str | None = None  # dpo: the reference model (default: the starting policy)
    beta: float = 0.1  # dpo: the strength of the KL constraint
    loss: str = "sigmoid"  # dpo: sigmoid (DPO) or ipo
    label_smoothing: float = 0.0  # dpo (sigmoid): the share of labels assumed flipped
    validation_ratio: float = 0.1  # share of prompt submitters held out
    lora_r: int = 0  # > 0: train a LoRA adapter of this rank, not every weight
    lora_alpha: float | None = None  # the adapter's scale is alpha / r; default 2 x r
    lora_dropout: float | None = None  # default: LORA_DROPOUT of the kind
    lora_target_modules: str | None = None  # all-linear (default) or comma-separated names
    name: str | None = None  # the registered model's name
    out: str | None = None  # the saved folder (default: the data dir's models/)
    #: trainer processes (``accelerate launch``): None is 1, or the accelerate config's own
    processes: int | None = None
    #: a config written by ``accelerate config`` (multi-GPU, DeepSpeed ZeRO, FSDP, machines)
    accelerate_config: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def lora(self) -> LoraSettings | None:
        return _lora_settings(self)

    def trainer_config(self) -> dict[str, Any]:
        config = {name: getattr(self, name) for name in TRAINER_FIELDS}
        config["lora"] = self.lora
        if self.kind == RM:
            config.update(margin_coef=self.margin_coef, center_coef=self.center_coef)
        if self.kind == DPO:
            config.update(beta=self.beta, loss_type=self.loss, label_smoothing=self.label_smoothing)
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainOptions:
        check = OptionChecker(cls, data)
        errors = check.errors
        number = check.number
        kind = str(data.get("kind") or "")
        if kind not in KINDS:
            errors.append(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        base = str(data.get("policy" if kind == DPO else "base") or data.get("base") or "")
        base = base.strip()
        if not base:
            role = "policy" if kind == DPO else "base"
            errors.append(f"{role} is required: a registered model (id or name) or a model folder")
        reference = str(data.get("reference") or "").strip() or None
        if reference is not None and kind != DPO:
            errors.append("reference applies to dpo")

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
            "group_by_length": check.flag("group_by_length"),
            "long_answers": check.choice("long_answers", LONG_ANSWERS),
            "beta": number("beta", 1e-4, 100),
            "loss": check.choice("loss", DPO_LOSSES),
            "label_smoothing": number("label_smoothing", 0, 0.49),
        }
        if kind == DPO and data.get("learning_rate") in (None, ""):
            values["learning_rate"] = DPO_LEARNING_RATE
        if values["label_smoothing"] and values["loss"] != "sigmoid":
            errors.append("label_smoothing applies to the sigmoid loss, not to ipo")
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
        lora = check.lora(kind)
        name, out = check.name_and_out()
        processes = None
        if data.get("processes") not in (None, ""):
            processes = number("processes", 1, MAX_PROCESSES, whole=True)
        accelerate_config = str(data.get("accelerate_config") or "").strip() or None
        check.done()
        return cls(
            kind=kind, base=base, k=k, name=name, out=out, reference=reference,
            processes=processes, accelerate_config=accelerate_config, **values, **lora,
        )  # fmt: skip


@dataclass(frozen=True)
class PPOOptions:
    """A PPO job: the policy to improve (an SFT or policy version, also the frozen reference)
    against a reward model, on the project's prompts. Defaults follow InstructGPT and TRL."""

    policy: str  # a registered version id or a folder
    reward: str  # a registered reward model (id or name) or a folder
    steps: int = 20  # rollout batches
    batch_size: int = 16  # rollouts per step
    mini_batch_size: int = 4
    ppo_epochs: int = 4
    learning_rate: float = 1e-5
    max_new_tokens: int = 64
    max_prompt_length: int = 256
    temperature: float = 1.0
    kl_coef: float = 0.05  # beta (the start value when adaptive)
    kl_target: float = 0.0  # > 0: adaptive KL towards this many nats per answer
    kl_horizon: int = 10000
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    score_clip: float = 5.0
    missing_eos_penalty: float = 1.0
    ptx_coef: float = 0.0  # PPO-ptx: weight of the LM loss on demonstrations
    #: a prompt longer than max_prompt_length: drop it, or truncate it (cut from the left);
    #: PPO-ptx demonstrations follow the same policy
    long_answers: str = DROP
    seed: int = 0
    save_steps: int = 10
    sample_every: int = 5
    eval_every: int = 10
    validation_ratio: float = 0.1
    #: LoRA as for TrainOptions: adapters on the policy and the critic, whose score head is
    #: trained in full; the reference is the policy with its adapter off
    lora_r: int = 0
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    lora_target_modules: str | None = None
    name: str | None = None
    out: str | None = None

    kind: str = PPO

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def lora(self) -> LoraSettings | None:
        return _lora_settings(self)

    def trainer_config(self) -> dict[str, Any]:
        """The fields ``workers.ml.ppo.PPOConfig`` takes."""
        left_out = {"policy", "reward", "name", "out", "kind", "validation_ratio",
                    "long_answers", *LORA_FIELDS}  # fmt: skip
        config = {key: value for key, value in asdict(self).items() if key not in left_out}
        config["kl_target"] = self.kl_target or None
        config["lora"] = self.lora
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PPOOptions:
        check = OptionChecker(cls, data)
        refs = {}
        for field in ("policy", "reward"):
            refs[field] = str(data.get(field) or "").strip()
            if not refs[field]:
                check.errors.append(
                    f"{field} is required: a registered model (id or name) or a model folder"
                )
        n = check.number
        values = {
            "steps": n("steps", 1, 100000, whole=True),
            "batch_size": n("batch_size", 1, 4096, whole=True),
            "mini_batch_size": n("mini_batch_size", 1, 4096, whole=True),
            "ppo_epochs": n("ppo_epochs", 1, 64, whole=True),
            "learning_rate": n("learning_rate", 1e-9, 1.0),
            "max_new_tokens": n("max_new_tokens", 1, 4096, whole=True),
            "max_prompt_length": n("max_prompt_length", 8, 131072, whole=True),
            "temperature": n("temperature", 0.01, 10),
            "kl_coef": n("kl_coef", 0, 100),
            "kl_target": n("kl_target", 0, 1000),
            "kl_horizon": n("kl_horizon", 1, 10**9, whole=True),
            "cliprange": n("cliprange", 0.001, 10),
            "cliprange_value": n("cliprange_value", 0.001, 1000),
            "vf_coef": n("vf_coef", 0, 100),
            "gamma": n("gamma", 0, 1),
            "lam": n("lam", 0, 1),
            "score_clip": n("score_clip", 0.01, 1000),
            "missing_eos_penalty": n("missing_eos_penalty", 0, 1000),
            "ptx_coef": n("ptx_coef", 0, 1000),
            "seed": n("seed", 0, 2**32 - 1, whole=True),
            "save_steps": n("save_steps", 0, 10**7, whole=True),
            "sample_every": n("sample_every", 0, 10**7, whole=True),
            "eval_every": n("eval_every", 0, 10**7, whole=True),
            "validation_ratio": n("validation_ratio", 0, 0.9),
            "long_answers": check.choice("long_answers", LONG_ANSWERS),
        }
        if values["batch_size"] % values["mini_batch_size"]:
            check.errors.append(
                f"batch_size ({values['batch_size']}) must be a multiple of mini_batch_size "
                f"({values['mini_batch_size']})"
            )
        lora = check.lora(PPO)
        name, out = check.name_and_out()
        check.done()
        return cls(
            policy=refs["policy"], reward=refs["reward"], name=name, out=out, **values, **lora
        )


def _lora_settings(options: TrainOptions | PPOOptions) -> LoraSettings | None:
    if not options.lora_r:
        return None
    assert options.lora_alpha is not None and options.lora_dropout is not None
    return LoraSettings(
        r=options.lora_r, alpha=options.lora_alpha, dropout=options.lora_dropout,
        target_modules=options.lora_target_modules or ALL_LINEAR,
    )  # fmt: skip
