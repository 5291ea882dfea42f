"""A worker lost mid-job, for the tests of resuming: the job's first attempt dies at a chosen
step, as if its process were killed, and the runner's recovery starts the next one."""

from __future__ import annotations

from collections.abc import Callable
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
