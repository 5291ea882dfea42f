"""The generation job: sample the missing answers of a project's prompts from a model.

For every prompt with fewer than K answers, the missing ones are sampled from the model
(the project's current policy by default) in batches, with ``num_return_sequences``; empty
and duplicate answers are dropped and sampled again, up to ``MAX_ROUNDS``. Each batch is
committed on its own, so a cancelled or killed job keeps what it stored, and a rerun only
fills what is still missing (the job is idempotent). Progress is reported after each batch;
a small job is cut into ``MIN_BATCHES`` batches so that its progress bar moves too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from app.db import session_scope
from app.dialogue import PromptInput
from app.jobs.errors import JobFailure
from app.labeling.models import Completion, Prompt, text_sha256
from app.models_registry.models import ModelVersion
from app.projects.models import Project
from workers.ml.loading import ModelLoadError, load_causal_lm
from workers.runner import JobContext

if TYPE_CHECKING:
    from workers.ml.sampling import SampleResult

MAX_ROUNDS = 3
#: a job of fewer than MIN_BATCHES * batch_size prompts samples in smaller batches: the demo's
#: four prompts fit one batch of 8, and its page showed 0% until all four were answered
MIN_BATCHES = 4


class GenerationError(JobFailure, RuntimeError):
    """The job cannot run (no model, not a causal LM); said on the job page as it is."""


def _missing(ctx: JobContext, project_id: int, k: int) -> dict[int, int]:
    """Prompt id -> how many answers it still lacks."""
    with session_scope(ctx.session_factory) as session:
        counts = (
            select(Prompt.id, func.count(Completion.id))
            .outerjoin(Completion, Completion.prompt_id == Prompt.id)
            .where(Prompt.project_id == project_id)
            .group_by(Prompt.id)
            .order_by(Prompt.id)
        )
        return {pid: k - n for pid, n in session.execute(counts) if n < k}


def _resolve_model(ctx: JobContext, project: Project) -> tuple[str, int | None]:
    """The model to sample from: the job's `model` (a registered version id or a path), else
    the project's current policy."""
    ref = ctx.params.get("model")
    with session_scope(ctx.session_factory) as session:
        if ref is None:
            if project.current_policy_id is None:
                raise GenerationError(
                    "The project has no current policy: promote a model to it "
                    "(rlhf models promote VERSION PROJECT) or pass --model."
                )
            version = session.get_one(ModelVersion, project.current_policy_id)
            return version.path, version.id
        if isinstance(ref, int) or str(ref).isdigit():
            found = session.get(ModelVersion, int(ref))
            if found is None:
                raise GenerationError(f"No model version {ref}.")
            return found.path, found.id
        return str(ref), None


def prompts_per_batch(total: int, batch_size: int) -> int:
    """At most ``batch_size`` prompts a batch, and few enough for ``MIN_BATCHES`` batches."""
    return max(1, min(batch_size, math.ceil(total / MIN_BATCHES)))


def generate_impl(ctx: JobContext) -> None:
    from workers.ml.sampling import SamplingParams, dedupe_answers, sample_answers

    with session_scope(ctx.session_factory) as session:
        project = session.get_one(Project, ctx.project_id)
        session.expunge(project)
    k = int(ctx.params.get("k") or project.k)
    sampling = {**project.sampling_params, **(ctx.params.get("sampling") or {})}
    params = SamplingParams(
        temperature=float(sampling.get("temperature", 1.0)),
        top_p=float(sampling.get("top_p", 1.0)),
        top_k=int(sampling.get("top_k", 0)),
        max_new_tokens=int(sampling.get("max_new_tokens", 64)),
        seed=sampling.get("seed"),
    )
    batch_size = int(ctx.params.get("batch_size", 8))
    endpoint = ctx.params.get("endpoint") or sampling.get("endpoint")
    sample: Callable[[list[str]], SampleResult]
    if endpoint:
        from workers.ml.openai_backend import OpenAIBackend, sample_openai

        backend = OpenAIBackend.from_params(endpoint)
        version_id = None
        origin = f"endpoint:{backend.base_url}#{backend.model}"[:200]
        ctx.log(f"sampling from {backend.base_url} ({backend.model}, chat={backend.chat})")

        def sample(texts: Sequence[PromptInput]) -> SampleResult:
            return sample_openai(backend, texts, k=k, params=params)

    else:
        path, version_id = _resolve_model(ctx, project)
        ctx.log(f"loading {path}")
        try:
            model, tokenizer = load_causal_lm(path, padding_side="left")
        except ModelLoadError as exc:
            raise GenerationError(str(exc)) from exc
        model.eval()
        context = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", None
        )
        if context and params.max_new_tokens > context // 2:
            # Leave room for the prompt: answers longer than half the context are cut there.
            ctx.log(
                f"max_new_tokens {params.max_new_tokens} > half the context ({context}); "
                f"using {context // 2}"
            )
            params = replace(params, max_new_tokens=context // 2)
        origin = f"model:{version_id}" if version_id is not None else f"model:{path}"[:200]

        def sample(texts: Sequence[PromptInput]) -> SampleResult:
            return sample_answers(
                model, tokenizer, texts, k=k, params=params, batch_size=batch_size
            )

    missing = _missing(ctx, project.id, k)
    total = len(missing)
    ctx.log(f"{total} prompts lack answers (K={k})")
    ctx.progress(0.0, f"0 / {total} prompts", prompts_total=total)
    done, tokens, seconds, truncated = 0, 0, 0.0, 0
    prompt_ids = sorted(missing)
    size = prompts_per_batch(total, batch_size)
    for start in range(0, len(prompt_ids), size):
        batch = prompt_ids[start : start + size]
        with session_scope(ctx.session_factory) as session:
            inputs = {
                pid: messages if messages is not None else text
                for pid, text, messages in session.execute(
                    select(Prompt.id, Prompt.text, Prompt.messages).where(Prompt.id.in_(batch))
                )
            }
            existing: dict[int, set[str]] = {pid: set() for pid in batch}
            for pid, text in session.execute(
                select(Completion.prompt_id, Completion.text).where(Completion.prompt_id.in_(batch))
            ):
                existing[pid].add(text)
        new: dict[int, list[str]] = {pid: [] for pid in batch}
        for _round in range(MAX_ROUNDS):
            wanted = [pid for pid in batch if len(new[pid]) < missing[pid]]
            if not wanted:
                break
            started = time.perf_counter()
            result = sample([inputs[pid] for pid in wanted])
            seconds += time.perf_counter() - started
            tokens += result.new_tokens
            truncated += result.truncated_prompts
            for pid, answers in zip(wanted, result.answers, strict=True):
                fresh = dedupe_answers(answers, existing[pid] | set(new[pid]))
                new[pid].extend(fresh[: missing[pid] - len(new[pid])])
        with session_scope(ctx.session_factory) as session:
            for pid in batch:
                for text in new[pid]:
                    session.add(
                        Completion(
                            prompt_id=pid, text=text, text_sha256=text_sha256(text), origin=origin,
                            model_version_id=version_id, sampling_params=asdict(params),
                        )
                    )  # fmt: skip
        done += len(batch)
        short = sum(1 for pid in batch if len(new[pid]) < missing[pid])
        if short:
            ctx.log(f"{short} prompts got fewer answers than wanted (empty or duplicate samples)")
        ctx.progress(
            done / total if total else 1.0,
            f"{done} / {total} prompts",
            prompts_done=done,
            tokens=tokens,
            tokens_per_second=round(tokens / seconds, 1) if seconds else 0.0,
        )  # checks for a cancel after each stored batch
    if truncated:
        ctx.log(f"{truncated} prompts were longer than the model's context and were left-truncated")
    ctx.log(f"done: {done} prompts, {tokens} new tokens")
