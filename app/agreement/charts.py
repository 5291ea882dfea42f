"""Geometry for the dashboard's charts, drawn as inline SVG by templates/macros/charts.html:
every point and bar carries its value as text, so nothing needs a hover to be read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

INSTRUCTGPT_AGREEMENT = 0.726  # InstructGPT's labelers agreed with each other 72.6% +- 1.5%


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    label: str  # under the axis
    value: str  # above the point
    detail: str  # for screen readers and the table beside the chart


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    points: list[ChartPoint]
    grid: list[tuple[float, str]]  # (y, label)
    reference: tuple[float, str] | None
    path: str
    label_every: int  # show every n-th x label so they never overlap


def rate_line_chart(
    values: Sequence[tuple[str, float, int]],
    *,
    width: int = 720,
    height: int = 260,
    reference: float | None = INSTRUCTGPT_AGREEMENT,
    reference_label: str = "InstructGPT 72.6%",
) -> LineChart:
    """A line of rates (0..1) over labelled steps (e.g. weeks): (label, rate, pairs)."""
    left, right, top, bottom = 44, 16, 24, 34
    inner_w, inner_h = width - left - right, height - top - bottom

    def y_of(rate: float) -> float:
        return round(top + (1 - rate) * inner_h, 1)

    step = inner_w / max(len(values) - 1, 1)
    points = []
    for i, (label, rate, n) in enumerate(values):
        x = round(left + (i * step if len(values) > 1 else inner_w / 2), 1)
        points.append(
            ChartPoint(
                x=x,
                y=y_of(rate),
                label=label,
                value=f"{rate * 100:.0f}%",
                detail=f"{label}: {rate * 100:.1f}% of {n:,} pairs",
            )
        )
    path = " ".join(f"{'M' if i == 0 else 'L'}{p.x},{p.y}" for i, p in enumerate(points))
    grid = [(y_of(g / 100), f"{g}%") for g in (0, 25, 50, 75, 100)]
    return LineChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        points=points,
        grid=grid,
        reference=(y_of(reference), reference_label) if reference is not None else None,
        path=path,
        label_every=max(1, -(-len(values) // 8)),
    )


@dataclass(frozen=True)
class Bar:
    y: float
    width: float
    name: str
    value: str
    missing: bool


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    label_width: int
    bar_height: int
    bars: list[Bar]
    reference_x: float | None


def rate_bar_chart(
    rows: Sequence[tuple[str, float | None, str]],
    *,
    width: int = 720,
    reference: float | None = INSTRUCTGPT_AGREEMENT,
) -> BarChart:
    """Horizontal bars of rates (0..1), one per (name, rate or None, text shown)."""
    label_width, bar_height, gap, value_room = 180, 18, 8, 120
    inner = width - label_width - value_room
    bars = [
        Bar(
            y=i * (bar_height + gap),
            width=round((rate or 0) * inner, 1),
            name=name,
            value=shown,
            missing=rate is None,
        )
        for i, (name, rate, shown) in enumerate(rows)
    ]
    return BarChart(
        width=width,
        height=max(len(rows) * (bar_height + gap), bar_height),
        label_width=label_width,
        bar_height=bar_height,
        bars=bars,
        reference_x=round(label_width + reference * inner, 1) if reference is not None else None,
    )
