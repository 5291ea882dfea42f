"""The review API's bodies (design §13)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.labeling.schemas import SOME_TEXT
from app.review.service import NOTE_MAX


class ReviewIn(BaseModel):
    # An acceptance, or a rejection with a note that says something: in the schema too.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"properties": {"verdict": {"const": "accept"}}},
                {
                    "required": ["note"],
                    "properties": {"note": {"type": "string", "pattern": SOME_TEXT}},
                },
            ]
        },
    )

    verdict: Literal["accept", "reject"]
    note: str | None = Field(
        default=None,
        max_length=NOTE_MAX,
        description="What the labeler reads on their home page; required to reject",
    )

    @model_validator(mode="after")
    def _a_rejection_says_why(self) -> ReviewIn:
        if self.verdict == "reject" and not (self.note or "").strip():
            raise ValueError("a rejection needs a note for the labeler")
        return self


class ReviewStateOut(BaseModel):
    verdict: Literal["pending", "accepted", "rejected"]
    note: str | None = None
    reviewer_id: int | None = None
    reviewed_at: datetime | None = None


class ReviewOut(ReviewStateOut):
    target: Literal["comparison", "demonstration"]
    id: int


class ComparisonOut(BaseModel):
    id: int
    prompt_id: int
    labeler: str = Field(description="user:ID, or external:NAME for an imported preference")
    ranking: list[list[int]] = Field(description="Groups of completion ids, best first")
    not_rankable: bool
    created_at: datetime
    review: ReviewStateOut


def state_out(review: Any) -> ReviewStateOut:
    if review is None:
        return ReviewStateOut(verdict="pending")
    return ReviewStateOut(
        verdict=review.verdict.value,
        note=review.note,
        reviewer_id=review.reviewer_id,
        reviewed_at=review.reviewed_at,
    )
