"""Admin pages for the model registry: the versions table, register a model, promote one to a
project's current policy. Plain form posts that redirect back, so no JavaScript is needed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.deps import AdminUser, DbSession
from app.errors import NotFoundError
from app.models_registry.models import ModelKind, ModelVersion
from app.models_registry.service import (
    ModelError,
    get_model,
    lineage_steps,
    list_models,
    policy_projects,
    promote_model,
    register_model,
)
from app.projects.models import Project
from app.projects.service import get_project, list_projects
from app.web.templating import render

router = APIRouter(prefix="/admin/models", tags=["models"])

EMPTY_FORM = {"path": "", "kind": ModelKind.base.value, "name": ""}


def _models_page(
    request: Request,
    session: DbSession,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    row_errors: dict[int, str] | None = None,
    note: str | None = None,
    status_code: int = 200,
) -> Response:
    models = list_models(session=session)
    context: dict[str, Any] = {
        "models": models,
        "names": {m.id: m.name for m in models},
        "used_by": policy_projects(session=session),
        "projects": list_projects(session=session),
        "kinds": [k.value for k in ModelKind],
        "form": form or dict(EMPTY_FORM),
        "errors": errors or {},
        "row_errors": row_errors or {},
        "note": note,
    }
    return render(request, "models/list.html", context, status_code=status_code)


def _note(session: DbSession, done: str, model_id: int, project_id: int) -> str | None:
    model = session.get(ModelVersion, model_id) if model_id else None
    if model is None:
        return None
    if done == "registered":
        return f"Model {model.name} registered (id {model.id})."
    project = session.get(Project, project_id) if project_id else None
    if done == "promoted" and project is not None:
        return f"{model.name} is now the current policy of {project.name}."
    return None


@router.get("", name="models_list")
def models_list(
    request: Request,
    session: DbSession,
    user: AdminUser,
    done: str = "",
    model_id: int = 0,
    project_id: int = 0,
) -> Response:
    return _models_page(request, session, note=_note(session, done, model_id, project_id))


@router.get("/{model_id}", name="model_detail")
def model_detail(request: Request, session: DbSession, user: AdminUser, model_id: int) -> Response:
    model = get_model(session=session, ref=model_id)
    context: dict[str, Any] = {
        "model": model,
        "steps": lineage_steps(session=session, model=model),
        "used_by": policy_projects(session=session).get(model.id, []),
        "projects": list_projects(session=session),
    }
    return render(request, "models/detail.html", context)


@router.post("", name="models_register")
def models_register(
    request: Request,
    session: DbSession,
    user: AdminUser,
    path: Annotated[str, Form(max_length=4096)] = "",
    kind: Annotated[str, Form(max_length=20)] = "",
    name: Annotated[str, Form(max_length=400)] = "",
) -> Response:
    form = {"path": path, "kind": kind, "name": name}
    errors: dict[str, str] = {}
    if kind not in {k.value for k in ModelKind}:
        errors["kind"] = "choose what the model is: base, sft, rm or policy"
    if not path.strip():
        errors["path"] = "give the path of a model folder (or a hub id such as org/name)"
    if not errors:
        try:
            model = register_model(
                session=session,
                path=path,
                kind=ModelKind(kind),
                name=name or None,
                created_by_id=user.id,
                roots=request.app.state.settings.model_root_paths,
            )
        except ModelError as exc:
            errors[exc.field if exc.field in form else "path"] = str(exc)
    if errors:  # nothing was written: the checks come before any change
        return _models_page(request, session, form=form, errors=errors, status_code=422)
    session.commit()
    return RedirectResponse(f"/admin/models?done=registered&model_id={model.id}", status_code=303)


@router.post("/{model_id}/promote", name="models_promote")
def models_promote(
    request: Request,
    session: DbSession,
    user: AdminUser,
    model_id: int,
    project_id: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    model = get_model(session=session, ref=model_id)
    try:
        if not project_id.strip():
            raise ModelError(f"choose a project to promote {model.name} in", field="project")
        try:
            project = get_project(session=session, ref=project_id.strip())
        except NotFoundError as exc:
            raise ModelError(exc.message, field="project") from exc
        promote_model(session=session, model=model, project=project, actor_id=user.id)
    except ModelError as exc:
        return _models_page(request, session, row_errors={model.id: str(exc)}, status_code=422)
    session.commit()
    return RedirectResponse(
        f"/admin/models?done=promoted&model_id={model.id}&project_id={project.id}",
        status_code=303,
    )
