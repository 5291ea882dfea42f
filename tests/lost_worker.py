"""A worker lost mid-job, for the tests of resuming: the job's first attempt dies once it has
recorded a chosen step, as if its process were killed, and the runner's recovery starts the
next one.

A training job's trainer runs in child processes, a little ahead of what the job has stored:
when the worker dies at step 5 the trainer may have reached step 9, so a test asks which
checkpoint was the last complete one at that moment (``last_complete_checkpoint``) and gives
the run enough steps that one was written and the run was not over."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing in the runner catches it, as nothing runs after a kill."""


def killed_at_step(impl: Callable[[Any], None], step: int) -> Callable[[Any], None]:
    """A job's ``impl`` as run by a worker that is killed once the job has recorded training
    step ``step`` (an ``impls`` entry for ``run_job``)."""

    def run(ctx: Any) -> None:
        real = ctx.record_step

        def record_step(at: int, values: dict[str, Any], *, phase: str = "train") -> None:
            real(at, values, phase=phase)
            if at == step and phase == "train":
                raise WorkerKilled()

        ctx.record_step = record_step
        impl(ctx)

    return run


def last_complete_checkpoint(data_dir: Path, job_id: int, *, steps: int) -> str:
    """The name of the checkpoint a resumed run of job ``job_id`` starts from, checked to be
    mid-run (a run of ``steps`` steps)."""
    from workers.ml.training import checkpoint_step, last_checkpoint

    checkpoint = last_checkpoint(data_dir / "training" / f"job-{job_id}" / "checkpoints")
    assert checkpoint is not None, "the worker was killed before the first checkpoint"
    assert checkpoint_step(checkpoint) < steps, "the trainer finished before the kill was seen"
    return checkpoint.name
