"""The settings of the score and judge jobs (``rlhf score``, ``rlhf judge``: design §14),
checked before the job is queued.

Torch-free, like ``app/jobs/training.py`` whose field checker it shares: the CLI checks a
request without loading the ML stack, and the worker checks the stored params again.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from app.errors import NotFoundError
from app.jobs.errors import JobFailure
from app.jobs.training import OptionChecker
from app.labeling.models import AI_RATER_PREFIX
from app.models_registry.models import ModelKind, ModelVersion
from app.models_registry.service import get_model
from workers.ml.long_inputs import LONG_ANSWERS, TRUNCATE

#: ``labeler_external`` holds 200 characters, ``ai:`` included
NAME_MAX: Final = 200 - len(AI_RATER_PREFIX)
#: what a judge's name may hold: model names as servers and the hub spell them
#: (``Qwen/Qwen2.5-7B-Instruct``, ``llama3.1:8b``); anything else becomes "-" in a default name
_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9._:/@+-]+")
#: adjacent RM scores this close are a tie. RM scores are logits of a Bradley-Terry
#: preference: a gap of 0.1 means the RM prefers the better answer 52.5 : 47.5, which is a
#: coin toss, not a ranking worth feeding back
TIE_TOLERANCE: Final = 0.1


ENDPOINT_FIELDS: Final = ("endpoint_url", "endpoint_model", "chat", "max_tokens", "temperature")
REWARD_FIELDS: Final = ("reward", "tie_tolerance", "batch_size", "max_length", "long_answers")


class JudgeError(JobFailure, ValueError):
    """Settings a score or judge job cannot run with; the message names what to change."""


def judge_name(raw: str) -> str:
    """A default judge name made safe: runs of other characters become "-", at most
    ``NAME_MAX`` characters."""
    return _NAME_CHARS.sub("-", raw.strip()).strip("-")[:NAME_MAX]


def check_endpoint_url(url: str) -> str | None:
    """Why ``url`` is not an endpoint's address (None when it is one)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # a port that is not a number raises here
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--endpoint must be a URL like http://host:8000, not {url!r}"
    if parts.query or parts.fragment or (port is not None and not 0 < port < 65536):
        return f"--endpoint must be a URL like http://host:8000 (no query), not {url!r}"
    return None


@dataclass(frozen=True)
class ScoreOptions:
    """Score every answer of the project with a registered reward model."""

    reward: str  # the reward model's version id
    batch_size: int = 16  # answers per forward pass
    max_length: int = 1024  # tokens of prompt and answer (capped at the RM's context)
    # An answer longer than max_length is cut to fit by default: a score of its beginning
    # beats none, since one unscored answer leaves its prompt without a gap, served last by
    # queue_order=uncertain (with drop, 215 of AlpacaEval's 481 prompts had none).
    long_answers: str = TRUNCATE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreOptions:
        check = OptionChecker(cls, data)
        reward = str(data.get("reward") or "").strip()
        if not reward:
            check.errors.append(
                "--reward is required: a registered reward model (see rlhf models list)"
            )
        values = _rm_fields(check)
        if check.errors:
            raise JudgeError("; ".join(check.errors))
        return cls(reward=reward, **values)


@dataclass(frozen=True)
class JudgeOptions:
    """Rank each prompt's served answers with an OpenAI-compatible endpoint or a reward
    model; stored as comparisons by ``ai:<name>``."""

    name: str  # the judge: its rankings are by "ai:<name>"
    endpoint_url: str | None = None
    endpoint_model: str | None = None
    chat: bool = False  # /v1/chat/completions rather than /v1/completions
    max_tokens: int = 256  # of the judge's reply: room for a few words before the ranking
    temperature: float = 0.0  # greedy: the same judge gives the same ranking
    reward: str | None = None  # the reward model's version id
    tie_tolerance: float = TIE_TOLERANCE
    batch_size: int = 16
    max_length: int = 1024
    long_answers: str = TRUNCATE  # as ScoreOptions: a ranking from the beginnings beats none

    @property
    def labeler(self) -> str:
        return f"{AI_RATER_PREFIX}{self.name}"

    @property
    def endpoint(self) -> dict[str, Any] | None:
        """What ``OpenAIBackend.from_params`` reads (the API key stays in the environment)."""
        if self.endpoint_url is None:
            return None
        return {"url": self.endpoint_url, "model": self.endpoint_model, "chat": self.chat}

    def as_dict(self) -> dict[str, Any]:
        """The job's params: the fields of its kind of judge only (so that they read back)."""
        other = REWARD_FIELDS if self.endpoint_url is not None else ENDPOINT_FIELDS
        return {key: value for key, value in asdict(self).items() if key not in other}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgeOptions:
        check = OptionChecker(cls, data)
        errors = check.errors

        def given(field: str) -> bool:
            return data.get(field) not in (None, "", False)

        url = str(data.get("endpoint_url") or "").strip() or None
        model = str(data.get("endpoint_model") or "").strip() or None
        reward = str(data.get("reward") or "").strip() or None
        if url is not None and reward is not None:
            errors.append("give --endpoint or --reward, not both: one judge per job")
        elif url is None and reward is None:
            errors.append(
                "give a judge: --endpoint URL --endpoint-model NAME (an OpenAI-compatible "
                "server) or --reward VERSION (a registered reward model)"
            )
        if url is not None:
            if (problem := check_endpoint_url(url)) is not None:
                errors.append(problem)
            if model is None:
                errors.append(
                    "--endpoint needs --endpoint-model (the model name the server serves)"
                )
        else:
            for field in ENDPOINT_FIELDS[1:]:
                if given(field):
                    errors.append(f"{_option(field)} applies only with --endpoint")
        if reward is None:
            for field in REWARD_FIELDS[1:]:
                if given(field):
                    errors.append(f"{_option(field)} applies only with --reward")
        values: dict[str, Any] = {
            "chat": check.flag("chat"),
            "max_tokens": check.number("max_tokens", 1, 4096, whole=True),
            "temperature": check.number("temperature", 0, 2),
            "tie_tolerance": check.number("tie_tolerance", 0, 1000),
            **_rm_fields(check),
        }
        name = str(data.get("name") or "").strip()
        if not name:
            name = judge_name(model or "")
            if not name and (url is not None or reward is not None) and not errors:
                errors.append("give the judge a --name (letters, digits and . _ : / @ + -)")
        elif judge_name(name) != name or len(name) > NAME_MAX:
            errors.append(
                f"--name may hold letters, digits and . _ : / @ + - (at most {NAME_MAX} "
                f"characters), not {name[:60]!r}"
            )
        if errors:
            raise JudgeError("; ".join(errors))
        return cls(name=name, endpoint_url=url, endpoint_model=model, reward=reward, **values)


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


def _rm_fields(check: OptionChecker) -> dict[str, Any]:
    return {
        "batch_size": check.number("batch_size", 1, 4096, whole=True),
        "max_length": check.number("max_length", 8, 131072, whole=True),
        "long_answers": check.choice("long_answers", LONG_ANSWERS),
    }


def reward_model(*, session: Session, ref: str | int) -> ModelVersion:
    """The registered reward model ``ref`` (a version id or name) names; scores are stored
    per version, so a folder that is not registered will not do."""
    try:
        version = get_model(session=session, ref=ref)
    except NotFoundError as exc:
        raise JudgeError(f"no model version {str(ref)!r}; see rlhf models list") from exc
    if version.kind != ModelKind.rm:
        raise JudgeError(
            f"model version {version.name!r} is a {version.kind.value} model, not a reward "
            "model; see rlhf models list"
        )
    return version


def score_params(*, session: Session, raw: dict[str, Any]) -> dict[str, Any]:
    """A score job's params from a request (``--reward`` by id or name): checked, with the
    reward model resolved to its id. Raises ``JudgeError``."""
    options = ScoreOptions.from_dict(raw)
    version = reward_model(session=session, ref=options.reward)
    return {**options.as_dict(), "reward": str(version.id)}


def judge_params(*, session: Session, raw: dict[str, Any]) -> dict[str, Any]:
    """A judge job's params from a request: checked, the reward model (if any) resolved to
    its id and, with no ``--name``, the judge named after it (or the endpoint's model)."""
    raw = dict(raw)
    version = None
    if str(raw.get("reward") or "").strip() and not str(raw.get("endpoint_url") or "").strip():
        version = reward_model(session=session, ref=str(raw["reward"]).strip())
        raw["reward"] = str(version.id)
        if not str(raw.get("name") or "").strip():
            raw["name"] = judge_name(version.name) or f"rm-{version.id}"
    return JudgeOptions.from_dict(raw).as_dict()
