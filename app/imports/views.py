"""The admin's upload page: import a JSONL or CSV file into a project (design §8)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path, PureWindowsPath
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from app.audit.service import record
from app.deps import AdminUser, DbSession, SettingsDep
from app.imports.parse import (
    MAX_COMPLETIONS,
    MAX_ROW_BYTES,
    TRANSCRIPTS,
    ImportFileError,
    file_format,
)
from app.imports.service import import_file
from app.projects.models import Project
from app.projects.service import get_project
from app.web.templating import render

router = APIRouter(prefix="/admin/projects", tags=["imports"])

MAX_ERRORS_SHOWN = 200
_CHUNK = 1024 * 1024

# One example per row shape, shown on the form (serialised here so they are valid JSON).
ROW_SHAPES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "Prompt",
        "A prompt to write a demonstration for or to sample answers to. "
        "Optional: id, submitter (used for train/validation splits), metadata.",
        {"prompt": "Explain photosynthesis to a 10-year-old.", "id": "p-001", "submitter": "u17"},
    ),
    (
        "Prompt with answers to rank",
        f"Up to {MAX_COMPLETIONS} answers, each with an optional model name. "
        "An answer already stored for the prompt is not added twice.",
        {
            "prompt": "Name a prime number.",
            "id": "p-002",
            "completions": [{"text": "7", "model": "gpt2-sft"}, {"text": "9", "model": "base"}],
        },
    ),
    (
        "Demonstration",
        "An ideal answer written for the prompt.",
        {"prompt": "Say hello in French.", "completion": "Bonjour !"},
    ),
    (
        "Preference",
        "Which of two answers is better; stored as a ranking of the two by the labeler "
        "import:<file name>. A preference already imported, from any file, is not added again.",
        {"prompt": "Is the sky green?", "chosen": "No, it is usually blue.", "rejected": "Yes."},
    ),
    (
        "Dialogue",
        "A prompt may be a conversation: an array of messages (role system, user or "
        "assistant) ending with the user's turn; the answers are the next assistant turn. "
        "'messages' may stand for 'prompt', and a preference's chosen and rejected may each be "
        "one assistant message (TRL's conversational format).",
        {
            "prompt": [
                {"role": "user", "content": "Suggest a name for a cat."},
                {"role": "assistant", "content": "How about Miso?"},
                {"role": "user", "content": "Something longer?"},
            ],
            "completions": [{"text": "Sir Pounce-a-lot"}, {"text": "Bartholomew"}],
        },
    ),
]


class UploadTooLarge(Exception):
    """The upload went past ``max_upload_bytes`` while it was being saved."""


def _form_page(
    request: Request, project: Project, *, error: str | None = None, status_code: int = 200
) -> Response:
    shapes = [
        (title, text, json.dumps(example, ensure_ascii=False))
        for title, text, example in ROW_SHAPES
    ]
    return render(
        request,
        "imports/form.html",
        {
            "project": project,
            "shapes": shapes,
            "error": error,
            "max_upload": _size(request.app.state.settings.max_upload_bytes),
            "max_row_mib": MAX_ROW_BYTES // 1024**2,
            "max_completions": MAX_COMPLETIONS,
        },
        status_code=status_code,
    )


def _size(size: int) -> str:
    return f"{size / 1024**3:g} GB" if size >= 1024**3 else f"{size / 1024**2:g} MB"


def _too_large(limit: int) -> str:
    return (
        f"The file is larger than {_size(limit)}. Compress it (.jsonl.gz), "
        "split it, or import it on the server with `rlhf import`."
    )


def _save_upload(source: BinaryIO, target: Path, limit: int) -> int:
    """Copy the upload to ``target`` a chunk at a time (never whole in memory); its size.
    (Bodies far over the limit never get here: app/web/limits.py refuses them first.)"""
    size = 0
    with target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge()
            out.write(chunk)
    return size


@router.get("/{project_id}/import", name="project_import_form")
def import_form(request: Request, session: DbSession, user: AdminUser, project_id: int) -> Response:
    return _form_page(request, get_project(session=session, ref=project_id))


@router.post("/{project_id}/import", name="project_import")
def import_upload(
    request: Request,
    session: DbSession,
    settings: SettingsDep,
    user: AdminUser,
    project_id: int,
    file: Annotated[UploadFile | None, File()] = None,
    skip_invalid: Annotated[bool, Form()] = False,
    transcript: Annotated[str, Form()] = "",
) -> Response:
    """Save the upload under the data folder, import it, and show what happened: the counts,
    or every rejected row (nothing is written then, unless the admin chose to skip them)."""
    project = get_project(session=session, ref=project_id)
    limit = settings.max_upload_bytes
    if transcript not in ("", *TRANSCRIPTS):
        return _form_page(request, project, error="Choose how prompts are read.", status_code=422)
    if file is None or not file.filename:
        return _form_page(request, project, error="Choose a file to import.", status_code=422)
    name = PureWindowsPath(file.filename).name  # some browsers send a whole client path
    try:
        suffix = file_format(name)[1]
    except ImportFileError as exc:
        return _form_page(request, project, error=f"{exc}.", status_code=422)

    uploads = settings.data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    path = uploads / f"{secrets.token_hex(16)}{suffix}"
    try:
        _save_upload(file.file, path, limit)
        summary = import_file(
            session=session,
            project=project,
            path=path,
            source_name=name,
            skip_invalid=skip_invalid,
            commit=session.commit,
            transcript=transcript or None,
        )
    except UploadTooLarge:
        return _form_page(request, project, error=_too_large(limit), status_code=413)
    except ImportFileError as exc:
        return _form_page(request, project, error=f"{exc}.", status_code=422)
    finally:
        path.unlink(missing_ok=True)

    if summary.imported:
        record(
            session=session,
            actor_id=user.id,
            action="project.import",
            target_type="project",
            target_id=project.id,
            details={
                "file": name,
                "skip_invalid": skip_invalid,
                "transcript": transcript or None,
                **summary.counts(),
            },
        )
        session.commit()
    return render(
        request,
        "imports/result.html",
        {
            "project": project,
            "summary": summary,
            "errors_shown": summary.errors[:MAX_ERRORS_SHOWN],
        },
        status_code=200 if summary.imported else 422,
    )
