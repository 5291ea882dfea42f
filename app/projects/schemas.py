from __future__ import annotations

from pydantic import BaseModel


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
    counts: ProjectCountsOut
