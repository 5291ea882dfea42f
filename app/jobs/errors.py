"""What a failed job says (design §10): its message in plain words, the traceback apart.

Torch-free and database-free, so the web app's option checks and the worker's jobs can both
raise ``JobFailure``; the runner turns whatever stopped a job into its ``error`` (shown first
on the job page, in ``rlhf jobs show`` and the API) and its ``error_detail`` (the traceback,
folded below it).
"""

from __future__ import annotations

UNEXPECTED = "The job stopped on an unexpected error:"


class JobFailure(Exception):
    """A job stops with this when it can say why in plain words and what to change (no data
    left, a wrong model, bad settings): the message is the job's error, as it is. Subclass it
    beside the builtin base you need (``class TrainingError(JobFailure, RuntimeError)``)."""

    #: shown folded below the message instead of the traceback (a child process's output)
    detail: str | None = None


def failure_message(exc: BaseException) -> str:
    """The job's error for ``exc``: a ``JobFailure``'s own message; for anything else, a
    sentence saying the job did not expect it, then the exception (its class name included:
    ``KeyError: 'x'`` says more than ``'x'``)."""
    text = str(exc).strip()
    if isinstance(exc, JobFailure) and text:
        return text
    return f"{UNEXPECTED} {type(exc).__name__}" + (f": {text}" if text else "")
