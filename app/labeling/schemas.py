"""The labeling API's shapes (design §8a)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.labeling.models import TaskKind


class NextTaskIn(BaseModel):
    kind: Literal["rank", "demonstration"] = "rank"


class PromptOut(BaseModel):
    id: int
    text: str


class CompletionOut(BaseModel):
    id: int
    text: str


class TaskOut(BaseModel):
    task_id: int
    kind: TaskKind
    prompt: PromptOut
    completions: list[CompletionOut] = Field(description="In this labeler's display order")
    expires_at: datetime
    draft: str | None = None


class SubmitIn(BaseModel):
    """A ranking (groups of completion ids, best first; 2+ ids in a group tie) or, for a
    demonstration task, its text."""

    ranking: list[list[int]] | None = None
    ratings: dict[int, int] | None = None
    flags: dict[int, list[str]] | None = None
    not_rankable: bool = False
    text: str | None = None
    seconds_spent: float | None = Field(default=None, ge=0)


class SubmittedOut(BaseModel):
    id: int


class SkipIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class SkippedOut(BaseModel):
    task_id: int
    state: str
