"""Sampling from an OpenAI-compatible server (vLLM, TGI, llama.cpp server), for teams whose
policy is served elsewhere: one request per prompt with ``n=K``.

``/v1/completions`` gets the prompt formatted with the plain template (the server's model
has no tokenizer here to apply a chat template with); ``/v1/chat/completions`` gets the prompt
as a user message and the server applies its own chat template.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from app.dialogue import PromptInput, as_messages
from workers.ml.formatting import plain_layout
from workers.ml.sampling import SampleResult, SamplingParams

TIMEOUT_SECONDS = 300.0
API_KEY_VARIABLE = "RLHF_ENDPOINT_API_KEY"


class BackendError(RuntimeError):
    """The endpoint refused or answered something unusable; said on the job page."""


@dataclass(frozen=True)
class OpenAIBackend:
    base_url: str  # e.g. http://gpu-box:8000 (the /v1/... paths are added)
    model: str
    chat: bool = False
    api_key: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> OpenAIBackend:
        url = str(params.get("url") or "").rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise BackendError(
                f"The endpoint URL must start with http:// or https://, not {url!r}."
            )
        model = str(params.get("model") or "")
        if not model:
            raise BackendError("The endpoint needs the name of the model it serves.")
        # The key is not stored with the project: the worker's environment holds it.
        api_key = params.get("api_key") or os.environ.get(API_KEY_VARIABLE) or None
        return cls(base_url=url.removesuffix("/v1"), model=model, chat=bool(params.get("chat")),
                   api_key=api_key)  # fmt: skip


def _body(
    backend: OpenAIBackend, prompt: PromptInput, k: int, params: SamplingParams
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": backend.model,
        "n": k,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if backend.chat:
        body["messages"] = as_messages(prompt)
    else:
        body["prompt"] = plain_layout(prompt)
    return body


def sample_openai(
    backend: OpenAIBackend, prompts: Sequence[PromptInput], *, k: int, params: SamplingParams
) -> SampleResult:
    path = "/v1/chat/completions" if backend.chat else "/v1/completions"
    headers = {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}
    answers: list[list[str]] = []
    counts: list[list[int]] = []
    start = time.perf_counter()
    with httpx.Client(
        base_url=backend.base_url, timeout=TIMEOUT_SECONDS, headers=headers
    ) as client:
        for prompt in prompts:
            try:
                response = client.post(path, json=_body(backend, prompt, k, params))
            except httpx.HTTPError as exc:
                raise BackendError(f"Cannot reach {backend.base_url}{path}: {exc}") from exc
            if response.status_code != 200:
                raise BackendError(
                    f"{backend.base_url}{path} answered {response.status_code}: {response.text[:300]}"
                )
            data = response.json()
            choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
            if backend.chat:
                texts = [(c.get("message") or {}).get("content") or "" for c in choices]
            else:
                texts = [c.get("text") or "" for c in choices]
            texts = [t.strip() for t in texts][:k]
            used = int((data.get("usage") or {}).get("completion_tokens") or 0)
            answers.append(texts)
            counts.append([used // max(1, len(texts))] * len(texts))
    return SampleResult(
        answers=answers, token_counts=counts, seconds=time.perf_counter() - start, params=params
    )
