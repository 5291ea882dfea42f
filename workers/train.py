"""The SFT, reward-model and DPO training jobs.

1. The dataset is snapshotted with the export code (an SFT or K-wise export of the project,
   split by prompt submitter) and recorded as an Export: the model's dataset snapshot.
2. Training runs with checkpoints every ``save_steps`` in the job's folder; each logged step is
   stored on the job (the job page charts them) and a cancel stops it at the next step.
3. The trained model is saved (``save_pretrained`` + ``rlhf.json``) through a temporary folder
   and registered as a ModelVersion with its parent, dataset and final metrics. With LoRA the
   saved model is merged, its adapter kept in ``adapter/``, and the metrics say what it
   trained (``lora``).

A worker lost mid-run is replaced by a new attempt (``workers/runner.py``), which reuses the
snapshot and resumes from the last complete checkpoint. Nothing is registered before the
model is whole on disk, and a model is registered once per job.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.db import session_scope
from app.dialogue import answer_text
from app.exports.models import Export
from app.exports.options import ExportOptions
from app.exports.rows import TRAIN, VALIDATION, split_of
from app.exports.service import record_export, write_export
from app.jobs import kinds
from app.jobs.errors import JobFailure
from app.jobs.models import Job
from app.jobs.training import DPO, RM, SFT, TrainOptions
from app.models_registry.models import ModelKind, ModelVersion
from app.models_registry.service import register_model, unique_name
from app.projects.models import Project
from workers.ml.long_inputs import DataReport, LeftOut
from workers.runner import JobContext

DATASET_KIND = {SFT: "sft", RM: "kwise", DPO: "kwise"}
MODEL_KIND = {SFT: ModelKind.sft, RM: ModelKind.rm, DPO: ModelKind.policy}
KIND_OF_JOB = {kinds.TRAIN_SFT: SFT, kinds.TRAIN_RM: RM, kinds.TRAIN_DPO: DPO}


class TrainingError(JobFailure, RuntimeError):
    """The job cannot train (no data, a wrong base model); said on the job page as it is."""


def job_folder(data_dir: Path, job_id: int) -> Path:
    return data_dir / "training" / f"job-{job_id}"


def resolve_model(
    ctx: JobContext, ref: str, *, allowed: frozenset[ModelKind] = frozenset(ModelKind) - {ModelKind.rm},
    role: str = "base",
) -> tuple[str, int | None]:  # fmt: skip
    """(path, registered version id or None) of a model: a version id or name, or a folder."""
    with session_scope(ctx.session_factory) as session:
        version = None
        if ref.isdigit():
            version = session.get(ModelVersion, int(ref))
        if version is None:
            version = session.scalar(select(ModelVersion).where(ModelVersion.name == ref))
        if version is not None:
            if version.kind not in allowed:
                kinds_ok = ", ".join(sorted(k.value for k in allowed))
                raise TrainingError(
                    f"{version.name!r} is a {version.kind.value} model and cannot be the {role} "
                    f"(it must be {kinds_ok})"
                )
            return version.path, version.id
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        raise TrainingError(f"No registered model and no model folder {ref!r}.")
    return str(folder.resolve()), None


def snapshot(
    ctx: JobContext, kind: str, folder: Path, *, validation_ratio: float, seed: int,
    key: str = "export_id",
) -> tuple[int, Path]:  # fmt: skip
    """The job's dataset (an export of ``kind`` in ``folder``, its id kept in the job's
    artifact ``key``): made once, reused by a resumed attempt."""
    with session_scope(ctx.session_factory) as session:
        job = session.get_one(Job, ctx.job_id)
        export_id = job.artifacts.get(key)
        if export_id is not None:
            export = session.get(Export, export_id)
            if export is not None and Path(export.directory, "manifest.json").is_file():
                ctx.log(f"reusing the dataset snapshot of export {export.id}")
                return export.id, Path(export.directory)
    export_options = ExportOptions.from_dict(
        {"kind": kind, "format": "jsonl", "validation_ratio": validation_ratio, "seed": seed}
    )
    assert ctx.project_id is not None, "a training job belongs to a project"
    with session_scope(ctx.read_session_factory()) as session:
        project = session.get_one(Project, ctx.project_id)
        result = write_export(
            session=session, project=project, options=export_options,
            folder=folder, job_id=ctx.job_id,
        )  # fmt: skip
    with session_scope(ctx.session_factory) as session:
        project = session.get_one(Project, ctx.project_id)
        created_by = session.get_one(Job, ctx.job_id).created_by_id
        export = record_export(
            session=session, project=project, options=export_options, result=result,
            job_id=ctx.job_id, created_by_id=created_by,
        )  # fmt: skip
        export_id = export.id
    ctx.set_artifacts(**{key: export_id, key.replace("export_id", "dataset"): str(folder)})
    counts = result.counts
    ctx.log(
        f"dataset snapshot: export {export_id}, {counts[TRAIN]:,} train and "
        f"{counts[VALIDATION]:,} validation rows from {result.prompts:,} prompts"
    )
    return export_id, result.directory


def _rows(folder: Path, split: str) -> list[dict[str, Any]]:
    path = folder / f"{split}.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def splits(
    ctx: JobContext, folder: Path, *, validation_ratio: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and validation rows. Validation holds the prompts of other submitters (as
    InstructGPT splits by user); when every prompt came from the held-out side or from one
    submitter, so that a side is empty, the rows are split by prompt instead, and the log says
    so."""
    train, validation = _rows(folder, TRAIN), _rows(folder, VALIDATION)
    if validation_ratio > 0 and (not train or not validation):
        rows = train + validation
        prompts = sorted({row["prompt_id"] for row in rows})
        if len(prompts) >= 2:
            held = {
                p for p in prompts
                if split_of(f"prompt:{p}", seed=seed, ratio=validation_ratio)
                == VALIDATION
            }  # fmt: skip
            if not held or len(held) == len(prompts):
                held = {prompts[-1]}
            train = [row for row in rows if row["prompt_id"] not in held]
            validation = [row for row in rows if row["prompt_id"] in held]
            ctx.log(
                "the prompts come from too few submitters to hold some out, so validation "
                f"holds {len(held)} of {len(prompts)} prompts instead"
            )
    return train, validation


def _rankings(rows: list[dict[str, Any]], k: int | None, left_out: Any) -> list[Any]:
    """The K-wise export's rows as rankings (only those of ``k`` answers when it is given: the
    others are counted in ``left_out``)."""
    from workers.ml.rm_train import Ranking

    rankings = []
    for row in rows:
        if k is not None and len(row["completions"]) != k:
            left_out.add(f"rankings of another size than --k {k}")
            continue
        places = [0] * len(row["completions"])
        for place, group in enumerate(row["ranking"]):
            for index in group:
                places[index] = place
        rankings.append(Ranking(prompt=row["prompt"], answers=row["completions"], places=places))
    return rankings


def _ranking_splits(
    train_rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]], k: int | None,
    left_out: Any, *, what: str,
) -> tuple[list[Any], list[Any]]:  # fmt: skip
    """Both splits as rankings; the job fails when no training ranking is left."""
    train, validation = _rankings(train_rows, k, left_out), _rankings(validation_rows, k, left_out)
    if not train:
        raise TrainingError(
            f"The project has no rankings to train {what}"
            + (f" with {k} answers (--k {k})" if k else "")
            + ": rank some answers first (or import preferences)."
        )
    return train, validation


#: fewer training rows than this: the job says it is too little to learn from (it still runs;
#: a job fails only with no usable row at all)
FEW_TRAIN_ROWS = 16
#: fewer validation rows than this: the job says its validation figures mean nothing
FEW_VALIDATION_ROWS = 2


def data_warnings(*, what: str, train: int, validation: int, validation_ratio: float) -> list[str]:
    """Plain sentences for a job whose data is too small to learn from or to validate on
    (design §10): logged, shown on the job page and printed by the CLI."""
    warnings = []
    if train < FEW_TRAIN_ROWS:
        warnings.append(
            f"Only {train:,} training {what}: too few to learn from (the model will mostly "
            "memorise them); collect more before trusting this model."
        )
    if validation_ratio == 0:
        warnings.append(
            "No validation set (--validation-ratio 0): nothing measures whether the model learned."
        )
    elif validation < FEW_VALIDATION_ROWS:
        warnings.append(
            f"Only {validation:,} validation {what}: too few to validate on, so the validation "
            "figures mean nothing; add data (prompts from more submitters) or raise "
            "--validation-ratio."
        )
    return warnings


def report_data(
    ctx: JobContext, left_out: Any, warnings: list[str], *, truncated: int = 0,
    cut: str = "answers from the right to fit max_length",
) -> dict[str, Any]:  # fmt: skip
    """Log what was left out, cut and too small, and return it as the job's metrics
    (``left_out``, ``left_out_reasons``, ``truncated``, ``data_warnings``)."""
    if left_out:
        ctx.log(f"left out {left_out.total:,}: {left_out.describe()}")
    if truncated:
        ctx.log(f"cut {truncated:,} {cut} (--long-answers truncate)")
    for warning in warnings:
        ctx.log(f"warning: {warning}")
    metrics: dict[str, Any] = left_out.metrics()
    if truncated:
        metrics["truncated"] = truncated
    if warnings:
        metrics["data_warnings"] = warnings
    return metrics


def finite(values: dict[str, float]) -> dict[str, float]:
    """The finite values, rounded (a logged step stores only these)."""
    return {k: round(v, 6) for k, v in values.items() if math.isfinite(v)}


def destination(
    ctx: JobContext, project: Project, *, kind: str, name: str | None, out_dir: str | None
) -> tuple[str, Path]:
    """The registered name and the saved folder, checked before any training is done."""
    with session_scope(ctx.session_factory) as session:
        if name is not None:
            taken = session.scalar(select(ModelVersion.id).where(ModelVersion.name == name))
            if taken is not None:
                raise TrainingError(f"A model named {name!r} already exists.")
        else:
            slug = re.sub(r"[^a-z0-9]+", "-", project.name.lower()).strip("-")[:60] or "project"
            name = unique_name(session, f"{slug}-{kind}-job{ctx.job_id}")
    if out_dir:
        out = Path(out_dir).expanduser().resolve()
        if out.exists() and not _ours(out, ctx.job_id):
            raise TrainingError(
                f"{out} already exists: give a new folder (nothing is overwritten)."
            )
        return name, out
    models = ctx.settings.data_dir / "models"
    out, n = models / name, 1
    while out.exists() and not _ours(out, ctx.job_id):  # a folder left by something else
        n += 1
        out = models / f"{name}-{n}"
    return name, out


def _ours(folder: Path, job_id: int) -> bool:
    """The folder was saved by this job (an earlier attempt, lost before registering it)."""
    try:
        meta = json.loads((folder / "rlhf.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("job_id") == job_id


def project_unless_registered(ctx: JobContext) -> Project | None:
    """The job's project (detached), or None when an earlier attempt of this job registered
    its model and was lost just after (the job is then done)."""
    with session_scope(ctx.session_factory) as session:
        done = session.scalar(select(ModelVersion).where(ModelVersion.job_id == ctx.job_id))
        if done is not None:
            ctx.log(f"model {done.name!r} was already registered by this job")
            return None
        project = session.get_one(Project, ctx.project_id)
        session.expunge(project)
        return project


def train_impl(ctx: JobContext) -> None:
    from workers.ml.training import ReportCallback, checkpoint_step, last_checkpoint, save_model

    kind = KIND_OF_JOB[ctx.kind]
    options = TrainOptions.from_dict({**ctx.params, "kind": kind})  # TrainError: job fails
    project = project_unless_registered(ctx)
    if project is None:
        return
    folder = job_folder(ctx.settings.data_dir, ctx.job_id)
    role = "policy" if options.kind == DPO else "base"
    base_path, base_id = resolve_model(ctx, options.base, role=role)
    reference: tuple[str, int | None] | None = None
    if options.kind == DPO and options.reference is not None:
        reference = resolve_model(ctx, options.reference, role="reference")
    name, out = destination(ctx, project, kind=options.kind, name=options.name, out_dir=options.out)
    ctx.progress(0.0, "snapshotting the dataset")
    export_id, dataset = snapshot(
        ctx, DATASET_KIND[options.kind], folder / "dataset",
        validation_ratio=options.validation_ratio, seed=options.seed,
    )  # fmt: skip
    train_rows, validation_rows = splits(
        ctx, dataset, validation_ratio=options.validation_ratio, seed=options.seed
    )

    checkpoints = folder / "checkpoints"
    if ctx.attempt == 1:  # checkpoints are for a retry of this job, nothing else
        shutil.rmtree(checkpoints, ignore_errors=True)
    resume = last_checkpoint(checkpoints)
    if resume is not None:
        ctx.log(f"resuming from {resume.name} (a previous attempt was lost)")
        ctx.forget_steps_after(checkpoint_step(resume))

    def on_step(step: int, values: dict[str, float], phase: str) -> None:
        values = finite(values)
        if values:
            ctx.record_step(step, values, phase=phase)

    reporter = ReportCallback(
        on_step, lambda fraction, message: ctx.progress(0.05 + 0.9 * fraction, message)
    )
    ctx.log(f"training {options.kind} from {base_path}")
    what = "demonstrations" if options.kind == SFT else "rankings"
    left_out = LeftOut()
    data: dict[str, Any] = {}

    def on_data(report: DataReport) -> None:
        """Log and show what the trainer kept, left out and cut before it trains."""
        left_out.update(report.left_out)
        warnings = data_warnings(
            what=what, train=report.train, validation=report.validation,
            validation_ratio=options.validation_ratio,
        )  # fmt: skip
        data.update(report_data(ctx, left_out, warnings, truncated=report.truncated))
        ctx.log(f"training on {report.train:,} {what}, validating on {report.validation:,}")
        ctx.progress(0.05, f"training on {report.train:,} {what}", **data)

    metrics: dict[str, Any]
    if options.kind == SFT:
        from workers.ml.sft_train import Example, train_sft
        from workers.ml.training import TrainConfig

        def examples(rows: list[dict[str, Any]]) -> list[Example]:
            return [
                Example(prompt=r["prompt"], completion=answer_text(r["completion"])) for r in rows
            ]

        model, tokenizer, result = _run(
            train_sft, base_path, examples(train_rows), examples(validation_rows), checkpoints,
            TrainConfig(**options.trainer_config()), reporter, on_step, resume, on_data,
        )  # fmt: skip
        metrics = {
            "validation_loss": result.loss, "validation_perplexity": result.perplexity,
            "validation_tokens": result.tokens, "train_examples": result.train_examples,
            "validation_examples": result.validation_examples,
        }  # fmt: skip
        extra: dict[str, Any] = {}
    elif options.kind == DPO:
        from workers.ml.dpo_train import DPOConfig, train_dpo

        train_set, validation_set = _ranking_splits(
            train_rows, validation_rows, options.k, left_out, what="a policy on with DPO"
        )
        reference_path = reference[0] if reference is not None else None
        default = " (the starting policy)" if reference is None else ""
        ctx.log(f"reference: {reference_path or base_path}{default}")
        model, tokenizer, dpo = _run(
            train_dpo, base_path, train_set, validation_set, checkpoints,
            DPOConfig(**options.trainer_config()), reporter, on_step, resume, on_data,
            reference=reference_path, reference_cache=folder / "reference_logps.json",
        )  # fmt: skip
        k = next(iter(dpo.sizes)) if len(dpo.sizes) == 1 else None
        metrics = {
            "validation_accuracy": dpo.accuracy, "validation_margin": dpo.margin,
            "validation_loss": dpo.loss, "validation_pairs": dpo.pairs,
            "validation_chosen_logps": dpo.chosen_logps,
            "validation_rejected_logps": dpo.rejected_logps,
            "k": k, "rankings_by_k": {str(size): n for size, n in dpo.sizes.items()},
            "train_rankings": dpo.train_rankings, "validation_rankings": dpo.validation_rankings,
        }  # fmt: skip
        result = dpo
        # the reference: a registered version's id, else its folder; the starting policy by
        # default (design §12)
        ref = reference or (base_path, base_id)
        extra = {
            "reference": ref[1] if ref[1] is not None else ref[0],
            "dpo": {"beta": options.beta, "loss": options.loss,
                    "label_smoothing": options.label_smoothing},
        }  # fmt: skip
    else:
        from workers.ml.rm_train import RewardConfig, train_reward_model

        train_set, validation_set = _ranking_splits(
            train_rows, validation_rows, options.k, left_out, what="a reward model on"
        )
        model, tokenizer, result = _run(
            train_reward_model, base_path, train_set, validation_set, checkpoints,
            RewardConfig(**options.trainer_config()), reporter, on_step, resume, on_data,
        )  # fmt: skip
        # K when every ranking has the same size, else null; the sizes trained on together
        k = next(iter(result.sizes)) if len(result.sizes) == 1 else None
        metrics = {
            "validation_accuracy": result.accuracy, "validation_margin": result.margin,
            "validation_loss": result.loss, "validation_pairs": result.pairs,
            "reward_mean": result.reward_mean, "reward_std": result.reward_std,
            "k": k, "rankings_by_k": {str(size): n for size, n in result.sizes.items()},
            "train_rankings": result.train_rankings,
            "validation_rankings": result.validation_rankings,
        }  # fmt: skip
        # PPO normalises scores with these (design §5)
        extra = {"reward_mean": result.reward_mean, "reward_std": result.reward_std, "k": k}
    metrics = {
        key: (round(v, 6) if isinstance(v, float) else v)
        for key, v in metrics.items()
        if not (isinstance(v, float) and not math.isfinite(v))
    }
    metrics["train_seconds"] = round(result.train_seconds, 2)
    metrics.update(data)
    if options.lora is not None:  # the settings and the share of the weights trained
        from workers.ml.lora import describe_lora, lora_summary

        extra["lora"] = metrics["lora"] = lora_summary(model, options.lora)
        ctx.log(describe_lora(metrics["lora"], f"the {options.kind} model"))
    ctx.progress(0.96, "saving the model", **metrics)

    save_model(
        model, tokenizer, out, kind=MODEL_KIND[options.kind].value, parent=base_id if base_id is not None else base_path,
        extra={**extra, "export_id": export_id, "job_id": ctx.job_id, "metrics": metrics},
    )  # fmt: skip
    register_trained(
        ctx, out, kind=MODEL_KIND[options.kind], name=name, parent_id=base_id,
        metrics=metrics, export_id=export_id, checkpoints=checkpoints,
    )  # fmt: skip


def register_trained(
    ctx: JobContext, out: Path, *, kind: ModelKind, name: str, parent_id: int | None,
    metrics: dict[str, Any], export_id: int, checkpoints: Path,
) -> None:  # fmt: skip
    """Register the saved (whole) folder as this job's model version with its parent and
    dataset snapshot, then drop the checkpoints: nothing is left to resume."""
    with session_scope(ctx.session_factory) as session:
        job = session.get_one(Job, ctx.job_id)
        version = register_model(
            session=session, path=str(out), kind=kind, name=name, parent_id=parent_id,
            metrics=metrics, created_by_id=job.created_by_id,
        )  # fmt: skip
        version.job_id = ctx.job_id
        version.export_id = export_id
        session.flush()
        version_id, version_name = version.id, version.name
    ctx.set_artifacts(model_version_id=version_id, model=str(out))
    shutil.rmtree(checkpoints, ignore_errors=True)
    ctx.log(f"registered {version_name!r} (model version {version_id}) at {out}")
    ctx.progress(1.0, f"registered {version_name} (model version {version_id})")


def _run(train: Any, base: str, train_set: Any, validation_set: Any, checkpoints: Path,
         config: Any, reporter: Any, on_step: Any, resume: Path | None,
         on_data: Any, **options: Any) -> Any:  # fmt: skip
    from workers.ml.dpo_train import DPODataError
    from workers.ml.loading import ModelLoadError
    from workers.ml.lora import LoraError
    from workers.ml.reward_model import RewardModelError
    from workers.ml.rm_train import RewardDataError
    from workers.ml.sft_train import SftDataError

    try:
        return train(
            base, train_set, validation_set, checkpoints, config,
            callbacks=[reporter], on_step=on_step, resume=resume, on_data=on_data, **options,
        )  # fmt: skip
    except (
        ModelLoadError, RewardDataError, RewardModelError, SftDataError, DPODataError, LoraError,
    ) as exc:  # fmt: skip
        raise TrainingError(str(exc)) from exc
