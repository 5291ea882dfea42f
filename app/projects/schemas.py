from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.projects.generation import GenerationSettings
from app.projects.service import ProjectSettings

QueueOrder = Literal["oldest", "uncertain", "disagreement"]  # app.projects.models.QUEUE_ORDERS

#: The edit page's choice of queue order: (value, title, what it does).
QUEUE_ORDER_CHOICES = [
    ("oldest", "Oldest first", "Prompts in the order they were added."),
    (
        "uncertain",
        "Most uncertain first",
        "Prompts whose answers the reward model scores closest (from rlhf score) come first.",
    ),
    (
        "disagreement",
        "More rankings where labelers disagree",
        "A prompt whose labelers disagree above the threshold gets rankings up to the max "
        "overlap, before new prompts.",
    ),
]


class ProjectCountsOut(BaseModel):
    prompts: int
    completions: int
    demonstrations: int
    comparisons: int


class ProjectOut(BaseModel):
    id: int
    name: str
    k: int
    overlap: int
    queue_order: QueueOrder = Field(
        description="Which prompt the rank queue serves next: oldest first, the reward "
        "model's most uncertain (closest top scores) first, or extra rankings where labelers "
        "disagree (design §14)"
    )
    max_overlap: int | None = Field(
        description="The most rankings a prompt whose labelers disagree may get under "
        "`disagreement`; null: overlap + 2"
    )
    disagreement_threshold: float = Field(
        description="The share of answer pairs labelers disagree on above which a prompt "
        "gets extra rankings (0 to 1)"
    )
    counts: ProjectCountsOut


class ProjectQueueIn(BaseModel):
    """``PATCH /api/v1/projects/{id}``: the queue settings to change (those left out stay);
    ``"max_overlap": null`` goes back to the default, overlap + 2."""

    model_config = ConfigDict(extra="forbid")

    # The bounds are in the schema too (the service says the same in its messages), and no
    # lax coercion: `false` is not a threshold of 0.
    overlap: Annotated[int, Field(ge=1, strict=True)] | None = None
    queue_order: QueueOrder | None = None
    max_overlap: Annotated[int, Field(ge=1, strict=True)] | None = None
    disagreement_threshold: Annotated[float, Field(ge=0, le=1, strict=True)] | None = None


class _Reader:
    """Reads numbers typed in a form; a number that cannot be read gets a message in
    ``errors`` and gives the default, so the other fields can still be checked."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def whole(self, field: str, text: str, default: int, what: str) -> int:
        try:
            return int(text.strip())
        except ValueError:
            self.errors[field] = f"{what} must be a whole number"
            return default

    def number(self, field: str, text: str, default: float, what: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            self.errors[field] = f"{what} must be a number"
            return default
        return value


class ProjectForm(BaseModel):
    """The project form as typed (all text, so a bad number is shown back as it was typed).
    The gold rate is entered as a percentage."""

    name: str = ""
    description: str = ""
    k: str = "4"
    overlap: str = "3"
    likert: bool = False  # a checkbox: absent when unticked
    flags: str = ""  # one name a line
    guidelines: str = ""
    gold_rate_pct: str = "0"
    queue_order: str = "oldest"
    max_overlap: str = ""  # blank: overlap + 2
    disagreement_threshold: str = "0.3"

    @classmethod
    def new(cls) -> ProjectForm:
        return cls.of(ProjectSettings(name=""))

    @classmethod
    def of(cls, settings: ProjectSettings) -> ProjectForm:
        return cls(
            name=settings.name,
            description=settings.description,
            k=str(settings.k),
            overlap=str(settings.overlap),
            likert=settings.likert,
            flags="\n".join(settings.flags),
            guidelines=settings.guidelines,
            gold_rate_pct=f"{round(settings.gold_rate * 100, 4):g}",
            queue_order=settings.queue_order,
            max_overlap="" if settings.max_overlap is None else str(settings.max_overlap),
            disagreement_threshold=f"{settings.disagreement_threshold:g}",
        )

    def to_settings(self, fallback: ProjectSettings) -> tuple[ProjectSettings, dict[str, str]]:
        """The typed settings, and a message per number that could not be read (that field
        then keeps ``fallback``'s value, so the other fields can still be checked)."""
        read = _Reader()
        errors = read.errors
        k = read.whole("k", self.k, fallback.k, "K")
        overlap = read.whole("overlap", self.overlap, fallback.overlap, "overlap")
        gold_rate = fallback.gold_rate
        try:
            pct = float(self.gold_rate_pct.strip().removesuffix("%").strip() or "0")
        except ValueError:
            errors["gold_rate"] = "the gold rate must be a number from 0 to 100"
        else:
            if math.isfinite(pct):
                gold_rate = pct / 100
            else:
                errors["gold_rate"] = "the gold rate must be a number from 0 to 100"
        max_overlap = (
            read.whole("max_overlap", self.max_overlap, 0, "max overlap")
            if self.max_overlap.strip()
            else None
        )
        threshold = read.number(
            "disagreement_threshold",
            self.disagreement_threshold,
            fallback.disagreement_threshold,
            "the disagreement threshold",
        )
        settings = ProjectSettings(
            name=self.name,
            description=self.description,
            k=k,
            overlap=overlap,
            likert=self.likert,
            flags=self.flags.splitlines(),
            guidelines=self.guidelines,
            gold_rate=gold_rate,
            queue_order=self.queue_order,
            max_overlap=fallback.max_overlap if "max_overlap" in errors else max_overlap,
            disagreement_threshold=threshold,
        )
        return settings, errors


class GenerationForm(BaseModel):
    """The generation settings form as typed (numbers as text, shown back when wrong)."""

    temperature: str = "1"
    top_p: str = "1"
    top_k: str = "0"
    max_new_tokens: str = "256"
    backend: str = "policy"  # "policy" or "endpoint"
    endpoint_url: str = ""
    endpoint_model: str = ""
    endpoint_chat: bool = False  # a checkbox: absent when unticked

    @classmethod
    def of(cls, settings: GenerationSettings) -> GenerationForm:
        return cls(
            temperature=f"{settings.temperature:g}",
            top_p=f"{settings.top_p:g}",
            top_k=str(settings.top_k),
            max_new_tokens=str(settings.max_new_tokens),
            backend="endpoint" if settings.use_endpoint else "policy",
            endpoint_url=settings.endpoint_url,
            endpoint_model=settings.endpoint_model,
            endpoint_chat=settings.endpoint_chat,
        )

    def to_settings(
        self, fallback: GenerationSettings
    ) -> tuple[GenerationSettings, dict[str, str]]:
        read = _Reader()
        settings = GenerationSettings(
            temperature=read.number(
                "temperature", self.temperature, fallback.temperature, "the temperature"
            ),
            top_p=read.number("top_p", self.top_p, fallback.top_p, "top-p"),
            top_k=read.whole("top_k", self.top_k, fallback.top_k, "top-k"),
            max_new_tokens=read.whole(
                "max_new_tokens", self.max_new_tokens, fallback.max_new_tokens, "the answer length"
            ),
            use_endpoint=self.backend == "endpoint",
            endpoint_url=self.endpoint_url,
            endpoint_model=self.endpoint_model,
            endpoint_chat=self.endpoint_chat,
        )
        return settings, read.errors
