"""What an export is asked for (design §7), checked once, stored on the job as plain JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from app.jobs.errors import JobFailure
from app.labeling.models import is_ai_rater

KINDS = ("pairwise", "kwise", "sft", "prompts")
FORMATS = ("jsonl", "parquet", "hf")
GOLD_CHOICES = ("include", "exclude", "only")
# AI judges' rankings (``ai:<name>``, design §14): left out unless asked, so that nothing
# trains on them by accident (training snapshots take the default).
AI_CHOICES = ("exclude", "include", "only")
# Rows in TRL's conversational format (prompts as messages) or its standard one (strings);
# auto: conversational when a prompt of the export is a dialogue (design §11).
CONVERSATIONAL_CHOICES = ("auto", "always", "never")


class ExportError(JobFailure, ValueError):
    """An export that cannot be made as asked; the message says why (shown as it is)."""


@dataclass(frozen=True)
class ExportOptions:
    kind: str
    format: str = "jsonl"
    gzip: bool = False  # JSONL only
    validation_ratio: float = 0.1  # share of prompt submitters whose prompts go to validation
    seed: int = 0
    min_agreement: float | None = None  # drop prompts whose labelers agree less (pairwise)
    consensus_only: bool = False  # one aggregated ranking per prompt instead of each labeler's
    gold: str = "include"  # prompts with a gold ranking: include, exclude or only them
    include_surplus: bool = True  # rankings beyond the project's overlap
    since: date | None = None
    until: date | None = None  # inclusive
    labelers: tuple[str, ...] = field(default_factory=tuple)  # "user:3", "external:NAME"
    conversational: str = "auto"  # auto, always or never
    ai: str = "exclude"  # AI judges' rankings: exclude, include or only them

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        data["until"] = self.until.isoformat() if self.until else None
        data["labelers"] = list(self.labelers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportOptions:
        """Checked options from JSON-ish input (a job's params, the API, the form, the CLI).
        Raises ``ExportError`` naming every wrong field."""
        errors: list[str] = []
        kind = str(data.get("kind") or "")
        if kind not in KINDS:
            errors.append(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        fmt = str(data.get("format") or "jsonl")
        if fmt not in FORMATS:
            errors.append(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        gzip = bool(data.get("gzip", False))
        if gzip and fmt != "jsonl":
            errors.append("gzip applies to JSONL only (Parquet and hf folders are compressed)")

        def number(name: str, default: float | None, low: float, high: float) -> float | None:
            value = data.get(name, default)
            if value is None or value == "":
                return default
            try:
                number = float(value)
            except (TypeError, ValueError):
                errors.append(f"{name} must be a number, not {value!r}")
                return default
            if not math.isfinite(number) or not low <= number <= high:
                errors.append(f"{name} must be between {low:g} and {high:g}, not {value!r}")
                return default
            return number

        ratio = number("validation_ratio", 0.1, 0.0, 0.9)
        min_agreement = number("min_agreement", None, 0.0, 1.0)
        try:
            seed = int(data.get("seed", 0) or 0)
        except (TypeError, ValueError):
            errors.append(f"seed must be a whole number, not {data.get('seed')!r}")
            seed = 0
        gold = str(data.get("gold") or "include")
        if gold not in GOLD_CHOICES:
            errors.append(f"gold must be one of {', '.join(GOLD_CHOICES)}, not {gold!r}")

        def day(name: str) -> date | None:
            value = data.get(name)
            if not value:
                return None
            try:
                return date.fromisoformat(str(value))
            except ValueError:
                errors.append(f"{name} must be a date like 2026-11-21, not {value!r}")
                return None

        since, until = day("since"), day("until")
        if since and until and since > until:
            errors.append(f"since ({since}) is after until ({until})")
        labelers = data.get("labelers") or []
        if isinstance(labelers, str):
            labelers = [part for part in labelers.split(",") if part.strip()]
        labelers = tuple(str(key).strip() for key in labelers)
        bad = [key for key in labelers if not key.startswith(("user:", "external:"))]
        if bad:
            errors.append(f"labelers are user:ID or external:NAME, not {bad[0]!r}")
        conversational = str(data.get("conversational") or "auto")
        if conversational not in CONVERSATIONAL_CHOICES:
            errors.append(
                f"conversational must be one of {', '.join(CONVERSATIONAL_CHOICES)}, "
                f"not {conversational!r}"
            )
        ai = str(data.get("ai") or "exclude")
        if ai not in AI_CHOICES:
            errors.append(f"the ai option must be one of {', '.join(AI_CHOICES)}, not {ai!r}")
        judges = [key for key in labelers if is_ai_rater(key.removeprefix("external:"))]
        if judges and ai == "exclude":
            errors.append(
                f"labelers name an AI judge ({judges[0]}) but AI rankings are excluded: "
                "give ai include or only"
            )
        consensus_only = bool(data.get("consensus_only", False))
        if consensus_only and kind not in ("pairwise", "kwise"):
            errors.append("consensus-only applies to rankings (pairwise or kwise)")
        if errors:
            raise ExportError("; ".join(errors))
        return cls(
            kind=kind,
            format=fmt,
            gzip=gzip,
            validation_ratio=ratio if ratio is not None else 0.1,
            seed=seed,
            min_agreement=min_agreement,
            consensus_only=consensus_only,
            gold=gold,
            include_surplus=bool(data.get("include_surplus", True)),
            since=since,
            until=until,
            labelers=labelers,
            conversational=conversational,
            ai=ai,
        )
