"""`rlhf train`: training jobs (SFT, reward model, DPO, PPO) that register a model version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.common import db_session, fail, settings
from app.cli.jobs import echo_data_report, wait_for_job

train_app = typer.Typer(help="Training jobs (SFT, reward model, DPO, PPO).", no_args_is_help=True)

BaseOpt = Annotated[
    str, typer.Option("--base", help="The model to start from: a registered version or a folder")
]
OutOpt = Annotated[
    str | None, typer.Option(help="Folder to save the model in (default: the data dir's models/)")
]
NameOpt = Annotated[str | None, typer.Option(help="The registered model's name")]
EpochsOpt = Annotated[float, typer.Option(help="Passes over the training data")]
BatchOpt = Annotated[
    int | None, typer.Option(help="Examples per step and process (RM, DPO: whole prompts)")
]
LrOpt = Annotated[float | None, typer.Option("--learning-rate", help="Peak learning rate")]
MaxLenOpt = Annotated[
    int,
    typer.Option(
        help="Tokens per sequence, at most the model's context (prompts are cut at the start)"
    ),
]
SeedOpt = Annotated[int, typer.Option(help="Seed of the data split, order and initialisation")]
SaveOpt = Annotated[
    int, typer.Option(help="A checkpoint every N steps (a lost worker resumes from it); 0: none")
]
RatioOpt = Annotated[float, typer.Option(help="Share of prompt submitters held out")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the job, with progress")]
LongOpt = Annotated[
    str,
    typer.Option(
        "--long-answers",
        help="An answer longer than --max-length: drop (leave it out, counted in the job's "
        "left_out) or truncate (cut it from the right)",
    ),
]
KOpt = Annotated[int | None, typer.Option("--k", help="Train on the rankings of K answers only")]
GroupOpt = Annotated[
    bool,
    typer.Option(
        "--group-by-length",
        help="Batch examples of similar length together: faster on mixed lengths, less random",
    ),
]

ProcessesOpt = Annotated[
    int | None,
    typer.Option(
        "--processes",
        help="Trainer processes (accelerate launch): one per GPU, or N on the CPU with gloo; "
        "--batch-size is per process (default: 1, or the --accelerate-config file's own)",
        min=1,
    ),
]
AccelerateConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--accelerate-config",
        help="A config file written by `accelerate config` (multi-GPU, DeepSpeed ZeRO, FSDP, "
        "several machines), read on the worker's machine",
    ),
]
LoraROpt = Annotated[
    int,
    typer.Option(
        "--lora-r",
        help="LoRA: train a low-rank adapter of this rank instead of every weight (0: off); the "
        "saved model is merged, the adapter kept in adapter/ beside it",
    ),
]
LoraAlphaOpt = Annotated[
    float | None,
    typer.Option("--lora-alpha", help="LoRA: the adapter's update is scaled by alpha / r "
                 "(default: alpha = 2 x r)"),
]  # fmt: skip
LoraDropoutOpt = Annotated[
    float | None,
    typer.Option(
        "--lora-dropout",
        help="LoRA: dropout on the adapter's input (default 0.05 for SFT; 0 for RM, DPO and "
        "PPO, which turn every dropout off)",
    ),
]
LoraTargetsOpt = Annotated[
    str | None,
    typer.Option(
        "--lora-target-modules",
        help="LoRA: all-linear (default: every linear layer but the output head) or "
        "comma-separated module names, e.g. c_attn,c_proj",
    ),
]


QueueOpt = Annotated[
    str | None,
    typer.Option(
        "--queue",
        help="Send the job to one training machine's own queue (train-NAME: its worker runs "
        "`rlhf worker --queues train-NAME`) instead of any worker on `train`",
    ),
]


def _options(kind: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A training command's arguments as the job's raw settings (``TrainOptions``)."""
    left_out = ("project", "wait", "queue")
    return {"kind": kind, **{k: v for k, v in arguments.items() if k not in left_out}}


def _start_training(
    project: str, raw: dict[str, Any], wait: bool, queue: str | None = None
) -> None:
    from app.errors import NotFoundError
    from app.jobs import kinds
    from app.jobs.service import JobError, commit_and_enqueue, create_job, get_job
    from app.jobs.training import DPO, PPO, RM, SFT, PPOOptions, TrainError, TrainOptions
    from app.models_registry.service import get_model
    from app.projects.service import get_project
    from workers.celery_app import create_celery_app

    raw = {key: value for key, value in raw.items() if value is not None}
    if raw.get("out") and Path(raw["out"]).expanduser().exists():
        fail(f"{raw['out']} already exists: give a new folder (nothing is overwritten)")
    with db_session() as session:
        target = get_project(session=session, ref=project)
        for field in ("base", "policy", "reward", "reference"):
            if field not in raw:
                continue
            try:
                raw[field] = str(get_model(session=session, ref=raw[field]).id)
            except NotFoundError:
                folder = Path(raw[field]).expanduser()
                if not folder.is_dir():
                    fail(f"no registered model and no model folder {raw[field]!r} (--{field})")
                raw[field] = str(folder.resolve())
        if raw.get("out"):
            raw["out"] = str(Path(raw["out"]).expanduser().resolve())
        if raw.get("accelerate_config"):
            config = Path(raw["accelerate_config"]).expanduser()
            if config.is_file():
                raw["accelerate_config"] = str(config.resolve())
            elif not config.is_absolute():  # an absolute path may be on the worker's machine
                fail(
                    f"no accelerate config {raw['accelerate_config']!r} here (--accelerate-config)"
                )
        try:
            if raw["kind"] == PPO:
                params = PPOOptions.from_dict(raw).as_dict()
            else:
                params = TrainOptions.from_dict(raw).as_dict()
        except TrainError as exc:
            fail(str(exc))
        kind = {
            SFT: kinds.TRAIN_SFT, RM: kinds.TRAIN_RM, DPO: kinds.TRAIN_DPO, PPO: kinds.TRAIN_PPO,
        }[params["kind"]]  # fmt: skip
        try:
            job = create_job(
                session=session, kind=kind, project_id=target.id, params=params, queue=queue
            )
        except JobError as exc:
            fail(str(exc))
        commit_and_enqueue(session=session, celery=create_celery_app(settings()), job=job)
        job_id, status = job.id, job.status
    typer.echo(f"job {job_id} {status.value}")
    if wait:
        try:
            wait_for_job(job_id)
        finally:
            with db_session() as session:
                job = get_job(session=session, job_id=job_id)
                artifacts, metrics = job.artifacts, job.metrics
            echo_data_report(metrics)
        typer.echo(f"model version {artifacts['model_version_id']} saved in {artifacts['model']}")


@train_app.command("sft")
def train_sft(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    base: BaseOpt,
    out: OutOpt = None,
    name: NameOpt = None,
    epochs: EpochsOpt = 3.0,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    max_length: MaxLenOpt = 1024,
    seed: SeedOpt = 0,
    save_steps: SaveOpt = 50,
    validation_ratio: RatioOpt = 0.1,
    group_by_length: GroupOpt = False,
    long_answers: LongOpt = "drop",
    lora_r: LoraROpt = 0,
    lora_alpha: LoraAlphaOpt = None,
    lora_dropout: LoraDropoutOpt = None,
    lora_target_modules: LoraTargetsOpt = None,
    processes: ProcessesOpt = None,
    accelerate_config: AccelerateConfigOpt = None,
    queue: QueueOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Fine-tune BASE on the project's demonstrations (loss on the answer tokens only)."""
    _start_training(project, _options("sft", locals()), wait, queue)


@train_app.command("rm")
def train_rm(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    base: BaseOpt,
    out: OutOpt = None,
    name: NameOpt = None,
    epochs: EpochsOpt = 1.0,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    max_length: MaxLenOpt = 1024,
    seed: SeedOpt = 0,
    save_steps: SaveOpt = 50,
    validation_ratio: RatioOpt = 0.1,
    k: KOpt = None,
    long_answers: LongOpt = "drop",
    margin_coef: Annotated[float, typer.Option(help="Weight of the margin term")] = 0.0,
    center_coef: Annotated[float, typer.Option(help="Weight of reward centering")] = 0.0,
    group_by_length: GroupOpt = False,
    lora_r: LoraROpt = 0,
    lora_alpha: LoraAlphaOpt = None,
    lora_dropout: LoraDropoutOpt = None,
    lora_target_modules: LoraTargetsOpt = None,
    processes: ProcessesOpt = None,
    accelerate_config: AccelerateConfigOpt = None,
    queue: QueueOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Train a reward model from BASE on the project's rankings (all K answers of a prompt in
    one batch, every pair in the loss)."""
    _start_training(project, _options("rm", locals()), wait, queue)


@train_app.command("dpo")
def train_dpo(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    policy: Annotated[
        str,
        typer.Option(
            "--policy", help="The policy to improve: a registered sft/policy/base model or folder"
        ),
    ],
    reference: Annotated[
        str | None,
        typer.Option(help="The reference model (default: the starting policy itself)"),
    ] = None,
    beta: Annotated[float, typer.Option(help="Strength of the pull towards the reference")] = 0.1,
    loss: Annotated[str, typer.Option(help="sigmoid (DPO) or ipo")] = "sigmoid",
    label_smoothing: Annotated[
        float, typer.Option(help="sigmoid: the share of rankings assumed wrong (cDPO)")
    ] = 0.0,
    out: OutOpt = None,
    name: NameOpt = None,
    epochs: EpochsOpt = 1.0,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    max_length: MaxLenOpt = 1024,
    seed: SeedOpt = 0,
    save_steps: SaveOpt = 50,
    validation_ratio: RatioOpt = 0.1,
    k: KOpt = None,
    long_answers: LongOpt = "drop",
    group_by_length: GroupOpt = False,
    lora_r: LoraROpt = 0,
    lora_alpha: LoraAlphaOpt = None,
    lora_dropout: LoraDropoutOpt = None,
    lora_target_modules: LoraTargetsOpt = None,
    processes: ProcessesOpt = None,
    accelerate_config: AccelerateConfigOpt = None,
    queue: QueueOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Train POLICY with DPO on the project's rankings: every ordered pair of different groups
    of a ranking, each answer's log-probability computed once per step (all K answers of a
    prompt in one batch) and the reference's once per run. Registers a policy."""
    _start_training(project, _options("dpo", locals()), wait, queue)


@train_app.command("ppo")
def train_ppo(
    project: Annotated[str, typer.Argument(help="Project name or id")],
    policy: Annotated[
        str,
        typer.Option("--policy", help="The policy to improve (an SFT version): also the reference"),
    ],
    reward: Annotated[str, typer.Option("--reward", help="The reward model (a registered rm)")],
    out: OutOpt = None,
    name: NameOpt = None,
    steps: Annotated[int, typer.Option(help="PPO steps (rollout batches)")] = 20,
    batch_size: Annotated[int, typer.Option(help="Prompts (rollouts) per step")] = 16,
    mini_batch_size: Annotated[int, typer.Option(help="Rollouts per update")] = 4,
    ppo_epochs: Annotated[int, typer.Option(help="Passes over each batch")] = 4,
    learning_rate: Annotated[float, typer.Option("--learning-rate", help="Learning rate")] = 1e-5,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens")] = 64,
    max_prompt_length: Annotated[
        int, typer.Option(help="Longest prompt, in tokens (lowered to fit the policy's context)")
    ] = 256,
    long_answers: Annotated[
        str,
        typer.Option(
            "--long-answers",
            help="A prompt longer than --max-prompt-length: drop (leave it out) or truncate "
            "(cut its start); PPO-ptx demonstrations likewise",
        ),
    ] = "drop",
    temperature: Annotated[float, typer.Option(help="Sampling temperature")] = 1.0,
    kl_coef: Annotated[
        float, typer.Option(help="KL penalty beta (start value if adaptive)")
    ] = 0.05,
    kl_target: Annotated[
        float, typer.Option(help="Adaptive KL towards this many nats per answer (0: fixed beta)")
    ] = 0.0,
    missing_eos_penalty: Annotated[
        float, typer.Option(help="Taken off the score of an answer cut at the length limit")
    ] = 1.0,
    ptx_coef: Annotated[
        float, typer.Option(help="PPO-ptx: weight of the LM loss on demonstrations (0: off)")
    ] = 0.0,
    seed: SeedOpt = 0,
    save_steps: SaveOpt = 10,
    lora_r: LoraROpt = 0,
    lora_alpha: LoraAlphaOpt = None,
    lora_dropout: LoraDropoutOpt = None,
    lora_target_modules: LoraTargetsOpt = None,
    queue: QueueOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Improve POLICY with PPO against the reward model on the project's prompts (per-token
    KL penalty to the starting policy, clipped updates, GAE); registers the new policy."""
    _start_training(
        project,
        {"kind": "ppo", "policy": policy, "reward": reward, "out": out, "name": name,
         "steps": steps, "batch_size": batch_size, "mini_batch_size": mini_batch_size,
         "ppo_epochs": ppo_epochs, "learning_rate": learning_rate,
         "max_new_tokens": max_new_tokens, "max_prompt_length": max_prompt_length,
         "long_answers": long_answers, "temperature": temperature, "kl_coef": kl_coef,
         "kl_target": kl_target, "missing_eos_penalty": missing_eos_penalty,
         "ptx_coef": ptx_coef, "seed": seed, "save_steps": save_steps, "lora_r": lora_r,
         "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
         "lora_target_modules": lora_target_modules},
        wait, queue,
    )  # fmt: skip
