"""Geometry for the dashboard's charts, drawn as inline SVG by templates/macros/charts.html:
every point and bar carries its value as text, so nothing needs a hover to be read."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


@dataclass(frozen=True)
class Series:
    name: str  # "train" or "validation"
    path: str  # SVG path of the line
    dots: list[tuple[float, float]]  # drawn as points (sparse series: evaluations)
    last: tuple[float, float, str] | None  # (x, y, value) of the newest point


@dataclass(frozen=True)
class MetricChart:
    metric: str  # the key the job logs
    title: str  # what the chart is called on the page
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    series: list[Series]
    grid: list[tuple[float, str]]  # (y, label)
    ticks: list[tuple[float, str]]  # (x, step)
    summary: str  # the newest values, in words


def _number(value: float) -> str:
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.2e}"
    if magnitude >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if magnitude < 1 else f"{value:.4g}"


def _thin(points: Sequence[tuple[int, float]], most: int) -> list[tuple[int, float]]:
    """At most ``most`` points, evenly spaced, the newest always kept."""
    if len(points) <= most:
        return list(points)
    stride = -(-len(points) // most)
    kept = list(points[::stride])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


def metric_chart(
    metric: str,
    lines: Mapping[str, Sequence[tuple[int, float]]],
    *,
    title: str | None = None,
    width: int = 460,
    height: int = 210,
    most_points: int = 240,
) -> MetricChart:
    """One metric against the training step, a line per series ({"train": [(step, value)],
    "validation": [...]}); the y range fits the values, the newest value is written at its end.
    A series of one point (a one-epoch run's validation) is drawn as a dot; when every point
    is at the same step, they stand in the middle of the chart, not on its y axis."""
    left, right, top, bottom = 64, 64, 14, 28
    inner_w, inner_h = width - left - right, height - top - bottom
    shown = {name: _thin(points, most_points) for name, points in lines.items() if points}
    values = [v for points in shown.values() for _, v in points]
    steps = [s for points in shown.values() for s, _ in points]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)
    pad = (high - low) * 0.06
    low, high = low - pad, high + pad
    first, last = (min(steps), max(steps)) if steps else (0, 1)
    span = max(last - first, 1)

    def x_of(step: float) -> float:
        if first == last:
            return round(left + inner_w / 2, 1)
        return round(left + (step - first) / span * inner_w, 1)

    def y_of(value: float) -> float:
        return round(top + (high - value) / (high - low) * inner_h, 1)

    series = []
    for name, points in shown.items():
        coords = [(x_of(s), y_of(v)) for s, v in points]
        path = " ".join(f"{'M' if i == 0 else 'L'}{x},{y}" for i, (x, y) in enumerate(coords))
        series.append(
            Series(
                name=name,
                path=path,
                dots=coords if len(points) <= 30 else [],
                last=(coords[-1][0], coords[-1][1], _number(points[-1][1])),
            )
        )
    grid = [
        (y_of(low + (high - low) * f), _number(low + (high - low) * f)) for f in (0.1, 0.5, 0.9)
    ]
    tick_steps = sorted({first, first + span // 2, last}) if steps else []
    summary = "; ".join(
        f"{name} {_number(points[-1][1])} at step {points[-1][0]:,}"
        for name, points in shown.items()
    )
    return MetricChart(
        metric=metric, title=title or metric, width=width, height=height, left=left,
        right=right, top=top, bottom=bottom, series=series, grid=grid,
        ticks=[(x_of(s), f"{s:,}") for s in tick_steps], summary=summary or "no values yet",
    )  # fmt: skip


@dataclass(frozen=True)
class IntervalRow:
    y: float  # the row's centre line
    name: str
    x: float  # the estimate
    low_x: float | None  # the interval's ends (None: no interval)
    high_x: float | None
    value: str  # written at the right
    detail: str  # for screen readers


@dataclass(frozen=True)
class IntervalChart:
    width: int
    height: int
    label_width: int
    right: int
    rows: list[IntervalRow]
    grid: list[tuple[float, str]]  # (x, label)
    reference_x: float | None  # a dashed line across the rows (e.g. the mean)
    axis_y: float


def _step(span: float, most: int) -> float:
    """A round grid step (1, 2 or 5 times a power of ten) that cuts ``span`` in ``most`` at
    the most."""
    raw = span / max(most, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(power * f for f in (1, 2, 5, 10) if power * f >= raw)


def interval_chart(
    rows: Sequence[tuple[str, float, float | None, float | None]],
    *,
    width: int = 720,
    reference: float | None = None,
) -> IntervalChart:
    """Estimates with their intervals, a row each: (name, value, low, high), on one shared
    horizontal scale that holds every interval (and the reference line)."""
    label_width, right, row_height, axis = 180, 150, 26, 24
    inner = width - label_width - right
    ends = [v for _, value, low, high in rows for v in (value, low, high) if v is not None]
    if reference is not None:
        ends.append(reference)
    first, last = (min(ends), max(ends)) if ends else (0.0, 1.0)
    if last - first < 1e-9:
        first, last = first - 1, last + 1
    step = _step(last - first, 5)
    first, last = math.floor(first / step) * step, math.ceil(last / step) * step

    def x_of(value: float) -> float:
        return round(label_width + (value - first) / (last - first) * inner, 1)

    out = []
    for i, (name, value, low, high) in enumerate(rows):
        has_interval = low is not None and high is not None
        shown = f"{value:,.0f}" + (f" ({low:,.0f} to {high:,.0f})" if has_interval else "")
        out.append(
            IntervalRow(
                y=i * row_height + row_height / 2,
                name=name,
                x=x_of(value),
                low_x=x_of(low) if low is not None and has_interval else None,
                high_x=x_of(high) if high is not None and has_interval else None,
                value=shown,
                detail=f"{name} {shown}",
            )
        )
    ticks = [first + k * step for k in range(round((last - first) / step) + 1)]
    height = len(rows) * row_height + axis
    return IntervalChart(
        width=width,
        height=height,
        label_width=label_width,
        right=right,
        rows=out,
        grid=[(x_of(t), f"{t:,.0f}") for t in ticks],
        reference_x=x_of(reference) if reference is not None else None,
        axis_y=len(rows) * row_height,
    )
