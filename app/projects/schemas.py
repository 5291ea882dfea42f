from __future__ import annotations

import math

from pydantic import BaseModel

from app.projects.service import ProjectSettings


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
        )

    def to_settings(self, fallback: ProjectSettings) -> tuple[ProjectSettings, dict[str, str]]:
        """The typed settings, and a message per number that could not be read (that field
        then keeps ``fallback``'s value, so the other fields can still be checked)."""
        errors: dict[str, str] = {}

        def whole(field: str, text: str, default: int, what: str) -> int:
            try:
                return int(text.strip())
            except ValueError:
                errors[field] = f"{what} must be a whole number"
                return default

        k = whole("k", self.k, fallback.k, "K")
        overlap = whole("overlap", self.overlap, fallback.overlap, "overlap")
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
        settings = ProjectSettings(
            name=self.name,
            description=self.description,
            k=k,
            overlap=overlap,
            likert=self.likert,
            flags=self.flags.splitlines(),
            guidelines=self.guidelines,
            gold_rate=gold_rate,
        )
        return settings, errors
