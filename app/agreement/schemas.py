"""What ``GET /api/v1/projects/{id}/leaderboard`` sends (design §14)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class HeadToHeadOut(BaseModel):
    win_rate: float = Field(description="Weighted share of the pairs against that origin won")
    n_pairs: int


class StandingOut(BaseModel):
    origin: str = Field(description='"model:<version id>" or "import:<name>"')
    name: str = Field(description="The model version's name, or the imported model's")
    rating: float = Field(description="Bradley-Terry rating on Elo's scale; the mean is 1000")
    ci: list[float | None] = Field(
        description="[low, high]: the bootstrap interval over prompts", min_length=2, max_length=2
    )
    win_rate: float = Field(description="Weighted share of its pairs won")
    n_pairs: int = Field(description="Pairs of answers it took part in")
    against: dict[str, HeadToHeadOut] = Field(description="Per other origin")


class LeaderboardOut(BaseModel):
    models: list[StandingOut] = Field(description="Best first")
    rankings: int = Field(description="Human rankings that ordered answers of two origins")
    pairs: int
    resamples: int = Field(description="Bootstrap resamples behind the intervals")
    confidence: float
