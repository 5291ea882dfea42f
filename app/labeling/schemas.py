"""The labeling API's shapes (design §8a)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.dialogue import Role as MessageRole
from app.labeling.models import TaskKind


class NextTaskIn(BaseModel):
    kind: Literal["rank", "demonstration"] = "rank"


class MessageOut(BaseModel):
    """One turn of a prompt: who speaks (`role`) and what they say (`content`)."""

    role: MessageRole
    content: str


class PromptOut(BaseModel):
    id: int
    text: str = Field(
        description="The prompt as plain text; a dialogue's turns as 'User: ...', "
        "'Assistant: ...', a blank line between turns"
    )
    messages: list[MessageOut] = Field(
        description="The prompt as turns, ending with the user's turn: the answers (and a "
        "demonstration) are the next assistant turn. A string prompt is one user message."
    )


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


class RewriteIn(BaseModel):
    """A better version of the answer ranked best, written by the labeler (design §13)."""

    completion_id: int = Field(description="The answer it rewrites: one ranked first")
    text: str = Field(
        description="The rewritten answer: trimmed, not empty, at most 100,000 characters, "
        "and not the same as the answer it rewrites"
    )


class SubmitIn(BaseModel):
    """A ranking (groups of completion ids, best first; 2+ ids in a group tie) or, for a
    demonstration task, its text. A ranking may come with a `rewrite` of the answer ranked
    best: it is stored as the labeler's demonstration of the prompt."""

    ranking: list[list[int]] | None = None
    ratings: dict[int, int] | None = None
    flags: dict[int, list[str]] | None = None
    not_rankable: bool = False
    rewrite: RewriteIn | None = None
    text: str | None = None
    seconds_spent: float | None = Field(default=None, ge=0)

    # A ranking, "none of these is acceptable" or a text: one of them, in the schema too.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["ranking"]},
                {"required": ["text"]},
                {"required": ["not_rankable"], "properties": {"not_rankable": {"const": True}}},
            ]
        }
    )

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if self.ranking is None and self.text is None and not self.not_rankable:
            raise ValueError("give a `ranking`, `not_rankable: true` or a `text`")
        return self


class SubmittedOut(BaseModel):
    id: int


# Text with something in it besides spaces and control characters (what str.strip() removes),
# said the same way to JSON Schema, pydantic and Python.
SOME_TEXT = r"[^\s\x1c-\x1f\x85]"


class SkipIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, pattern=SOME_TEXT)


class SkippedOut(BaseModel):
    task_id: int
    state: str
