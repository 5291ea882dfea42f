"""The agreement dashboard (admins): project figures, weekly chart, labeler table, the
prompts with the lowest agreement, the AI judges apart, and one labeler's rankings beside the
others'."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.agreement.service import (
    CONSENSUS_METHOD,
    GOLD_CHOICES,
    AgreementFilters,
    FilterError,
    LabelerRow,
    labeler_choices,
    project_agreement,
    side_by_side,
)
from app.deps import AdminUser, DbSession
from app.projects.service import get_project
from app.web.charts import rate_bar_chart, rate_line_chart
from app.web.templating import is_htmx, render

router = APIRouter(prefix="/admin/projects", tags=["agreement"])

# Sortable columns of the labeler table: (title, key). Rows without a value sort last.
SORT_COLUMNS: dict[str, tuple[str, Callable[[LabelerRow], Any]]] = {
    "labeler": ("Labeler", lambda r: r.name.casefold()),
    "rankings": ("Rankings", lambda r: r.n_comparisons),
    "agreement": ("Agreement", lambda r: r.agreement.value),
    "gold": ("Gold", lambda r: r.gold_agreement.value),
    "seconds": ("Time", lambda r: r.median_seconds),
    "skips": ("Skips", lambda r: r.skip_rate),
    "not_rankable": ("Not rankable", lambda r: r.not_rankable_share),
    "position": ("Position bias", lambda r: r.first_shown_best),
    "length": ("Length bias", lambda r: r.longer_wins),
    "last_active": ("Last ranking", lambda r: r.last_active),
}
DEFAULT_SORT = "agreement"  # the lowest agreement first: who to look at


def sort_labelers(rows: list[LabelerRow], sort: str, direction: str) -> list[LabelerRow]:
    key = SORT_COLUMNS.get(sort, SORT_COLUMNS[DEFAULT_SORT])[1]
    with_value = [r for r in rows if key(r) is not None]
    without = [r for r in rows if key(r) is None]
    return sorted(with_value, key=key, reverse=direction == "desc") + without


@router.get("/{project_id}/agreement", name="project_agreement")
def agreement_page(
    request: Request,
    session: DbSession,
    user: AdminUser,
    project_id: int,
    since: str = "",
    until: str = "",
    labeler: str = "",
    gold: str = "all",
    include_imported: str = "",
    sort: str = DEFAULT_SORT,
    dir: str = "asc",
) -> Response:
    project = get_project(session=session, ref=project_id)
    filter_error = None
    try:
        filters = AgreementFilters.parse(
            since=since, until=until, labeler=labeler, gold=gold, include_imported=include_imported
        )
    except FilterError as exc:
        filter_error = str(exc)
        filters = AgreementFilters()
    report = project_agreement(session=session, project=project, filters=filters)
    sort = sort if sort in SORT_COLUMNS else DEFAULT_SORT
    direction = "desc" if dir == "desc" else "asc"
    rows = sort_labelers(report.labelers, sort, direction)
    kept = {
        "since": since,
        "until": until,
        "labeler": labeler,
        "gold": gold,
        "include_imported": "1" if filters.include_imported else "",
    }
    path = f"/admin/projects/{project.id}/agreement"
    filtered = {k: v for k, v in kept.items() if v and v != "all"}
    sort_urls = {
        name: f"{path}?" + urlencode({
            **filtered,
            "sort": name,
            "dir": "desc" if name == sort and direction == "asc" else "asc",
        })
        for name in SORT_COLUMNS
    }  # fmt: skip
    by_agreement = sort_labelers(report.labelers, "agreement", "desc")
    context = {
        "project": project,
        "report": report,
        "filters": filters,
        "form": kept,
        "include_imported_url": f"{path}?" + urlencode({**filtered, "include_imported": "1"}),
        "filter_error": filter_error,
        # From the whole project whatever the filter: a DISTINCT query, not a second report.
        "labeler_choices": labeler_choices(session=session, project=project),
        "gold_choices": GOLD_CHOICES,
        "rows": rows,
        "sort_urls": sort_urls,
        "weekly_chart": rate_line_chart(
            [(w.week.strftime("%d %b"), w.agreement, w.n_pairs) for w in report.weekly]
        )
        if report.weekly
        else None,
        "labeler_chart": rate_bar_chart(
            [
                (
                    r.name,
                    r.agreement.value,
                    f"{r.agreement.value * 100:.0f}% of {r.agreement.n:,} pairs"
                    if r.agreement.value is not None
                    else "not enough data",
                )
                for r in by_agreement
            ]
        )
        if report.labelers
        else None,
        "sort": sort,
        "direction": direction,
        "sort_columns": {name: title for name, (title, _) in SORT_COLUMNS.items()},
        "consensus_method": CONSENSUS_METHOD,
    }
    target = request.headers.get("HX-Target", "")
    block = "labeler_table" if target == "labeler-table" else "agreement_body"
    return render(
        request, "agreement/dashboard.html", context, block=block if is_htmx(request) else None
    )


@router.get("/{project_id}/agreement/labeler", name="project_agreement_labeler")
def labeler_page(
    request: Request, session: DbSession, user: AdminUser, project_id: int, key: str = ""
) -> Response:
    project = get_project(session=session, ref=project_id)
    report = project_agreement(session=session, project=project, filters=AgreementFilters())
    row = next((r for r in [*report.labelers, *report.imported] if r.key == key), None)
    prompts = side_by_side(session=session, project=project, key=key) if row else []
    return render(
        request,
        "agreement/labeler.html",
        {"project": project, "row": row, "key": key, "prompts": prompts},
        status_code=200 if row else 404,
    )
