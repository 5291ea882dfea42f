"""How a project's answers are sampled: the sampling parameters, and where from (the
project's current policy, loaded by the worker, or an OpenAI-compatible server).

Stored in ``Project.sampling_params``; the generation job reads the same keys
(``temperature``, ``top_p``, ``top_k``, ``max_new_tokens`` and, for a server,
``endpoint = {"url", "model", "chat"}``). The server's API key is never stored: the worker
reads it from ``RLHF_ENDPOINT_API_KEY``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from app.projects.models import Project, default_sampling_params
from app.projects.service import ProjectFormError

MAX_NEW_TOKENS = 4096
MAX_TOP_K = 1000
MAX_TEMPERATURE = 5.0
MAX_URL, MAX_MODEL_NAME = 500, 200


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    use_endpoint: bool = False
    endpoint_url: str = ""
    endpoint_model: str = ""
    endpoint_chat: bool = False

    @classmethod
    def of(cls, project: Project) -> GenerationSettings:
        stored = {**default_sampling_params(), **(project.sampling_params or {})}
        endpoint = stored.get("endpoint") or {}
        shown = endpoint or stored.get("saved_endpoint") or {}
        return cls(
            temperature=float(stored["temperature"]),
            top_p=float(stored["top_p"]),
            top_k=int(stored["top_k"]),
            max_new_tokens=int(stored["max_new_tokens"]),
            use_endpoint=bool(endpoint),
            endpoint_url=str(shown.get("url", "")),
            endpoint_model=str(shown.get("model", "")),
            endpoint_chat=bool(shown.get("chat", False)),
        )


def check_generation_settings(
    settings: GenerationSettings,
) -> tuple[GenerationSettings, dict[str, str]]:
    """The settings normalised, and a message per wrong field (empty when all is well)."""
    errors: dict[str, str] = {}
    if not math.isfinite(settings.temperature) or not 0 < settings.temperature <= MAX_TEMPERATURE:
        errors["temperature"] = (
            f"the temperature must be above 0 and at most {MAX_TEMPERATURE:g} (1 is pure sampling)"
        )
    if not math.isfinite(settings.top_p) or not 0 < settings.top_p <= 1:
        errors["top_p"] = "top-p must be above 0 and at most 1 (1 keeps every token)"
    if not 0 <= settings.top_k <= MAX_TOP_K:
        errors["top_k"] = f"top-k must be between 0 (off) and {MAX_TOP_K}"
    if not 1 <= settings.max_new_tokens <= MAX_NEW_TOKENS:
        errors["max_new_tokens"] = (
            f"the answer length must be between 1 and {MAX_NEW_TOKENS} tokens"
        )

    url = settings.endpoint_url.strip().rstrip("/")
    model = settings.endpoint_model.strip()
    if settings.use_endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            errors["endpoint_url"] = (
                "the server's address must start with http:// or https://, "
                "for example http://gpu-box:8000"
            )
        elif len(url) > MAX_URL:
            errors["endpoint_url"] = f"the address has at most {MAX_URL} characters"
        elif parts.username or parts.password:
            errors["endpoint_url"] = (
                "put no password in the address: the worker reads the API key from "
                "RLHF_ENDPOINT_API_KEY"
            )
        if not model:
            errors["endpoint_model"] = "name the model the server serves (its --model or id)"
        elif len(model) > MAX_MODEL_NAME:
            errors["endpoint_model"] = f"the model name has at most {MAX_MODEL_NAME} characters"
    cleaned = GenerationSettings(
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        max_new_tokens=settings.max_new_tokens,
        use_endpoint=settings.use_endpoint,
        endpoint_url=url,
        endpoint_model=model,
        endpoint_chat=settings.endpoint_chat,
    )
    return cleaned, errors


def update_generation_settings(
    *, session: Session, project: Project, settings: GenerationSettings
) -> dict[str, Any]:
    """Store the settings (raises ``ProjectFormError``); returns what changed as
    {key: [old, new]} for the audit log. A URL and model typed while "the current policy"
    is chosen are kept, so switching back and forth loses nothing."""
    settings, errors = check_generation_settings(settings)
    if errors:
        raise ProjectFormError(errors)
    before = dict(project.sampling_params or {})
    after: dict[str, Any] = {
        **{k: v for k, v in before.items() if k not in ("endpoint", "saved_endpoint")},
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        "max_new_tokens": settings.max_new_tokens,
    }
    endpoint = {
        "url": settings.endpoint_url,
        "model": settings.endpoint_model,
        "chat": settings.endpoint_chat,
    }
    if settings.use_endpoint:
        after["endpoint"] = endpoint
    elif settings.endpoint_url or settings.endpoint_model:
        after["saved_endpoint"] = endpoint
    project.sampling_params = after  # a new dict, so the JSON column is seen as changed
    session.flush()
    return {
        key: [before.get(key), after.get(key)]
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    }
