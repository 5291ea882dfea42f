"""Admin pages for exports: the project's exports with a form to start one, an export's
manifest and card, and its files to download (admins only, names from the manifest only)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from app.agreement.service import labeler_choices
from app.audit.service import record
from app.deps import AdminUser, CeleryDep, DbSession
from app.exports.options import (
    AI_CHOICES,
    CONVERSATIONAL_CHOICES,
    FORMATS,
    GOLD_CHOICES,
    KINDS,
    ExportError,
    ExportOptions,
)
from app.exports.service import export_file, get_export, list_exports
from app.jobs import kinds
from app.jobs.service import commit_and_enqueue, create_job
from app.projects.service import get_project
from app.web.templating import render

router = APIRouter(tags=["exports"])

KIND_TITLES = {
    "pairwise": "Pairwise (RM, DPO)",
    "kwise": "K-wise rankings",
    "sft": "SFT demonstrations",
    "prompts": "Prompts (PPO)",
}
FORMAT_TITLES = {
    "jsonl": "JSONL",
    "parquet": "Parquet",
    "hf": "datasets folder",
}
AI_TITLES = {
    "exclude": "Leave out",
    "include": "Include",
    "only": "Only AI judges'",
}
CONVERSATIONAL_TITLES = {
    "auto": "Messages if a prompt is a dialogue",
    "always": "Messages (conversational)",
    "never": "Texts (standard)",
}


def _page(
    request: Request, session: DbSession, project_id: int, *, form: dict[str, Any], error: str = ""
) -> Response:
    project = get_project(session=session, ref=project_id)
    return render(
        request,
        "exports/list.html",
        {
            "project": project,
            "labeler_choices": labeler_choices(session=session, project=project, authors=True),
            "exports": list_exports(session=session, project=project),
            "kinds": [(k, KIND_TITLES[k]) for k in KINDS],
            "formats": [(f, FORMAT_TITLES[f]) for f in FORMATS],
            "gold_choices": GOLD_CHOICES,
            "ai_choices": [(c, AI_TITLES[c]) for c in AI_CHOICES],
            "conversational_choices": [
                (c, CONVERSATIONAL_TITLES[c]) for c in CONVERSATIONAL_CHOICES
            ],
            "form": form,
            "error": error,
        },
        status_code=422 if error else 200,
    )


DEFAULT_FORM = {"kind": "pairwise", "format": "jsonl", "validation_pct": "10", "seed": "0",
                "gold": "include", "include_surplus": True, "conversational": "auto",
                "ai": "exclude"}  # fmt: skip


@router.get("/admin/projects/{project_id}/exports", name="project_exports")
def exports_page(
    request: Request, session: DbSession, user: AdminUser, project_id: int
) -> Response:
    return _page(request, session, project_id, form=DEFAULT_FORM)


@router.post("/admin/projects/{project_id}/exports", name="project_export_start")
def start_export(
    request: Request,
    session: DbSession,
    celery: CeleryDep,
    user: AdminUser,
    project_id: int,
    kind: Annotated[str, Form()] = "pairwise",
    format: Annotated[str, Form()] = "jsonl",
    gzip: Annotated[bool, Form()] = False,
    validation_pct: Annotated[str, Form()] = "10",
    seed: Annotated[str, Form()] = "0",
    min_agreement_pct: Annotated[str, Form()] = "",
    consensus_only: Annotated[bool, Form()] = False,
    gold: Annotated[str, Form()] = "include",
    include_surplus: Annotated[bool, Form()] = False,
    since: Annotated[str, Form()] = "",
    until: Annotated[str, Form()] = "",
    labelers: Annotated[list[str] | None, Form()] = None,
    conversational: Annotated[str, Form()] = "auto",
    ai: Annotated[str, Form()] = "exclude",
) -> Response:
    project = get_project(session=session, ref=project_id)
    form = {
        "kind": kind, "format": format, "gzip": gzip, "validation_pct": validation_pct,
        "seed": seed, "min_agreement_pct": min_agreement_pct, "consensus_only": consensus_only,
        "gold": gold, "include_surplus": include_surplus, "since": since, "until": until,
        "labelers": labelers or [], "conversational": conversational, "ai": ai,
    }  # fmt: skip

    def fraction(text: str) -> float | str | None:
        text = text.strip().removesuffix("%").strip()
        if not text:
            return None
        try:
            return float(text) / 100
        except ValueError:
            return text  # refused with its own message below

    try:
        options = ExportOptions.from_dict(
            {
                "kind": kind, "format": format, "gzip": gzip,
                "validation_ratio": fraction(validation_pct), "seed": seed or 0,
                "min_agreement": fraction(min_agreement_pct), "consensus_only": consensus_only,
                "gold": gold, "include_surplus": include_surplus, "since": since,
                "until": until, "labelers": labelers or [], "conversational": conversational,
                "ai": ai,
            }
        )  # fmt: skip
    except ExportError as exc:
        return _page(request, session, project.id, form=form, error=str(exc))
    job = create_job(
        session=session,
        kind=kinds.EXPORT,
        project_id=project.id,
        params=options.as_dict(),
        created_by_id=user.id,
    )
    record(
        session=session, actor_id=user.id, action="job.start", target_type="job", target_id=job.id
    )
    commit_and_enqueue(session=session, celery=celery, job=job)
    return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)


@router.get("/admin/exports/{export_id}", name="export_detail")
def export_detail(
    request: Request, session: DbSession, user: AdminUser, export_id: int
) -> Response:
    export = get_export(session=session, export_id=export_id)
    project = get_project(session=session, ref=export.project_id)
    manifest: dict[str, Any] | None = None
    card = ""
    try:
        manifest = json.loads(export_file(export, "manifest.json").read_text(encoding="utf-8"))
        card = export_file(export, "README.md").read_text(encoding="utf-8")
    except (OSError, ValueError, LookupError):
        manifest = None  # the folder was moved or deleted: said on the page
    return render(
        request,
        "exports/detail.html",
        {"export": export, "project": project, "manifest": manifest, "card": card,
         "manifest_json": json.dumps(manifest, indent=2, ensure_ascii=False) if manifest else ""},
    )  # fmt: skip


@router.get("/admin/exports/{export_id}/files/{name:path}", name="export_download")
def download(session: DbSession, user: AdminUser, export_id: int, name: str) -> Response:
    export = get_export(session=session, export_id=export_id)
    path = export_file(export, name)
    filename = f"{export.kind}-export-{export.id}-{name.replace('/', '-')}"
    return FileResponse(path, filename=filename, media_type="application/octet-stream")
