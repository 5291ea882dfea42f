"""The SFT, reward-model and DPO training jobs.

1. The dataset is snapshotted with the export code (an SFT or K-wise export of the project,
   split by prompt submitter) and recorded as an Export: the model's dataset snapshot.
2. Training runs in child processes that ``accelerate launch`` starts (``--processes N``, or
   an ``accelerate config`` file: design §12; ``workers/ml/launch.py`` and
   ``workers/ml/trainer_process.py``), with checkpoints every ``save_steps`` in the job's
   folder. This process supervises: it stores each logged step the trainer's main process
   reports (the job page charts them), keeps the heartbeat, stops every trainer process on a
   cancel, and fails the job with their last lines if one dies.
3. The trainer's main process writes the weights into a temporary folder; this process adds
   ``rlhf.json``, renames it and registers a ModelVersion with its parent, dataset and final
   metrics (``world_size`` among them). With LoRA the saved model is merged, its adapter kept
   in ``adapter/``, and the metrics say what it trained (``lora``).

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
from workers.ml.long_inputs import LeftOut
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
        export = session.get(Export, export_id) if export_id is not None else None
        reused = (export.id, Path(export.directory)) if export is not None else None
    # logged outside that session: on SQLite a second write while it is open waits for it
    if reused is not None and (reused[1] / "manifest.json").is_file():
        ctx.log(f"reusing the dataset snapshot of export {reused[0]}")
        return reused
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
    rankings = []
    for row in rows:
        if k is not None and len(row["completions"]) != k:
            left_out.add(f"rankings of another size than --k {k}")
            continue
        places = [0] * len(row["completions"])
        for place, group in enumerate(row["ranking"]):
            for index in group:
                places[index] = place
        rankings.append({"prompt": row["prompt"], "answers": row["completions"], "places": places})
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
        done = session.scalar(select(ModelVersion.name).where(ModelVersion.job_id == ctx.job_id))
        project = session.get_one(Project, ctx.project_id)
        session.expunge(project)
    if done is not None:  # logged after that session: on SQLite a second write would wait
        ctx.log(f"model {done!r} was already registered by this job")
        return None
    return project


def train_impl(ctx: JobContext) -> None:
    from workers.ml import launch
    from workers.ml.training import checkpoint_step, finish_saved, last_checkpoint, weights_folder

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
    launch_dir = folder / "launch"  # this attempt's: spec, events, output, config
    if resume is not None:
        ctx.log(f"resuming from {resume.name} (a previous attempt was lost)")
        ctx.forget_steps_after(checkpoint_step(resume))
        keep_lost_steps(ctx, launch_dir, up_to=checkpoint_step(resume))

    ctx.log(f"training {options.kind} from {base_path}")
    what = "demonstrations" if options.kind == SFT else "rankings"
    left_out = LeftOut()
    if options.kind == SFT:
        train_set = [_demonstration(row) for row in train_rows]
        validation_set = [_demonstration(row) for row in validation_rows]
    else:
        train_set, validation_set = _ranking_splits(
            train_rows, validation_rows, options.k, left_out,
            what="a policy on with DPO" if options.kind == DPO else "a reward model on",
        )  # fmt: skip
    if reference is not None:
        ctx.log(f"reference: {reference[0]}")
    elif options.kind == DPO:
        ctx.log(f"reference: {base_path} (the starting policy)")
    spec = {
        "kind": options.kind, "options": options.as_dict(), "base": base_path,
        "reference": reference[0] if reference is not None else None,
        "reference_cache": str(folder / "reference_logps.json"),
        "train": train_set, "validation": validation_set, "checkpoints": str(checkpoints),
        "resume": str(resume) if resume is not None else None,
        "save_to": str(weights_folder(out)),
    }  # fmt: skip
    shutil.rmtree(launch_dir, ignore_errors=True)
    launch_dir.mkdir(parents=True)
    trainer = TrainerEvents(ctx, left_out, what=what, validation_ratio=options.validation_ratio)
    try:
        result = launch.run(
            launch_dir, spec, launch.Launch(options.processes, options.accelerate_config),
            on_event=trainer.on_event, check=ctx.check_cancel, on_start=trainer.on_start,
        )  # fmt: skip
    except launch.LaunchError as exc:
        error = TrainingError(str(exc))
        if not exc.user_error:
            error.detail = exc.detail or None
        raise error from exc

    metrics: dict[str, Any] = {**result["metrics"], **trainer.data}
    metrics["world_size"] = trainer.world_size
    extra: dict[str, Any] = dict(result["extra"])
    if options.kind == DPO:
        # the reference: a registered version's id, else its folder; the starting policy by
        # default (design §12)
        ref = reference or (base_path, base_id)
        extra["reference"] = ref[1] if ref[1] is not None else ref[0]
        extra["dpo"] = {"beta": options.beta, "loss": options.loss,
                        "label_smoothing": options.label_smoothing}  # fmt: skip
    if result.get("lora") is not None:  # the settings and the share of the weights trained
        from workers.ml.lora import describe_lora

        extra["lora"] = metrics["lora"] = result["lora"]
        ctx.log(describe_lora(metrics["lora"], f"the {options.kind} model"))
    ctx.progress(0.96, "saving the model", **metrics)

    finish_saved(
        weights_folder(out), out, kind=MODEL_KIND[options.kind].value,
        parent=base_id if base_id is not None else base_path,
        meta={**result["meta"], **extra, "export_id": export_id, "job_id": ctx.job_id,
              "metrics": metrics},
    )  # fmt: skip
    register_trained(
        ctx, out, kind=MODEL_KIND[options.kind], name=name, parent_id=base_id,
        metrics=metrics, export_id=export_id, checkpoints=checkpoints,
    )  # fmt: skip


def keep_lost_steps(ctx: JobContext, launch_dir: Path, *, up_to: int) -> None:
    """Store the steps a lost attempt's trainer reported up to its last checkpoint that the
    lost worker had not stored yet (the trainer runs a little ahead of the job): the resumed
    run starts after them, so the chart would otherwise have a gap."""
    from workers.ml.launch import EVENTS, EventReader

    for kind, fields in EventReader(launch_dir / EVENTS).read():
        if kind == "step" and int(fields["step"]) <= up_to and (values := finite(fields["values"])):
            ctx.record_step(int(fields["step"]), values, phase=str(fields["phase"]))


def _demonstration(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": row["prompt"], "completion": answer_text(row["completion"])}


class TrainerEvents:
    """What the trainer processes report, stored on the job as it comes (``launch.run``'s
    ``on_event``): logged steps, progress, the data report, the number of processes."""

    def __init__(
        self, ctx: JobContext, left_out: LeftOut, *, what: str, validation_ratio: float
    ) -> None:
        self.ctx = ctx
        self.left_out = left_out
        self.what = what
        self.validation_ratio = validation_ratio
        self.data: dict[str, Any] = {}
        self.world_size = 1

    def on_start(self, processes: int) -> None:
        self.ctx.progress(0.02, f"starting {processes} trainer process{'es' * (processes > 1)}")

    def on_event(self, kind: str, fields: dict[str, Any]) -> None:
        ctx = self.ctx
        if kind == "step":
            values = finite(fields["values"])
            if values:
                ctx.record_step(int(fields["step"]), values, phase=str(fields["phase"]))
        elif kind == "progress":
            ctx.progress(0.05 + 0.9 * float(fields["fraction"]), str(fields["message"]))
        elif kind == "started":
            self.world_size = int(fields["world_size"])
            if self.world_size > 1:
                ctx.log(f"{self.world_size} trainer processes (accelerate launch)")
            ctx.progress(0.03, "loading the model", world_size=self.world_size)
        elif kind == "data":  # what the trainer kept, left out and cut, before it trains
            self.left_out.update(fields["left_out"])
            train, validation = int(fields["train"]), int(fields["validation"])
            warnings = data_warnings(
                what=self.what, train=train, validation=validation,
                validation_ratio=self.validation_ratio,
            )  # fmt: skip
            self.data.update(
                report_data(ctx, self.left_out, warnings, truncated=int(fields["truncated"]))
            )
            ctx.log(f"training on {train:,} {self.what}, validating on {validation:,}")
            ctx.progress(0.05, f"training on {train:,} {self.what}", **self.data)


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
