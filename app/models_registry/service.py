"""The model registry: register checkpoints, look them up, promote one to a project's policy.

A model version is a Hugging Face ``save_pretrained`` folder on this machine (stored as an
absolute path), or a hub id such as ``org/name`` for deployments with network access
(design §5). Functions flush and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.errors import NotFoundError
from app.exports.models import Export
from app.models_registry.models import ModelKind, ModelVersion
from app.projects.models import Project

NAME_MAX = 200
CONFIG_FILE = "config.json"
RLHF_FILE = "rlhf.json"
# Kinds that can generate answers, so can be a project's current policy.
POLICY_KINDS = frozenset({ModelKind.policy, ModelKind.sft, ModelKind.base})
# "org/name" as the Hugging Face hub spells repository ids.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelError(ValueError):
    """A model could not be registered or promoted; the message is shown as it is.
    ``field`` names the form field it is about (``path``, ``kind``, ``name``, ...)."""

    def __init__(self, message: str, *, field: str = "path") -> None:
        super().__init__(message)
        self.field = field


def _read_rlhf_json(folder: Path) -> dict[str, Any]:
    file = folder / RLHF_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{file} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{file} must hold a JSON object")
    return data


#: longest path, and longest folder name, that any file system here accepts
PATH_MAX, NAME_MAX_BYTES = 4096, 255


def _check_folder(folder: Path, kind: ModelKind, *, shown: str) -> str:
    """``folder`` as stored, once it holds a config.json and an rlhf.json (if any) that agrees
    with ``kind``; ``shown`` names it in messages."""
    if not (folder / CONFIG_FILE).is_file():
        raise ModelError(f"{shown} has no {CONFIG_FILE}: not a Hugging Face save_pretrained folder")
    declared = _read_rlhf_json(folder).get("kind")
    if declared is not None and str(declared) != kind.value:
        raise ModelError(
            f"{shown}/{RLHF_FILE} says this is a {declared!s} model, not {kind.value}",
            field="kind",
        )
    return str(folder)


def _within_roots(raw: str, roots: Sequence[Path]) -> Path:
    """The folder ``raw`` names, if it is an absolute path under one of ``roots``. Checked on
    the resolved path before anything is looked up, so the answer says nothing about which
    paths exist elsewhere, and the message echoes only what was typed."""
    accepted = ", ".join(str(root) for root in roots)
    if not Path(raw).is_absolute():
        raise ModelError(
            f"give the absolute path of a model folder under {accepted}, or a hub id such as "
            "org/name"
        )
    folder = Path(raw).resolve()
    if not any(folder.is_relative_to(root.resolve()) for root in roots):
        raise ModelError(
            f"{raw} is not under the model folders this server accepts ({accepted}); "
            "RLHF_MODEL_ROOTS adds folders, and `rlhf models register` takes any path"
        )
    return folder


def _resolve_path(
    path: str, kind: ModelKind, roots: Sequence[Path] | None = None
) -> tuple[str, str]:
    """(the path to store, the default name) for a local folder or a hub id. With ``roots``
    (the web form) a local folder must lie under one of them, and messages never show a
    resolved path."""
    raw = path.strip()
    if not raw:
        raise ModelError("give the path of a model folder (or a hub id such as org/name)")
    if (
        "\x00" in raw
        or len(raw) > PATH_MAX
        or any(len(part.encode()) > NAME_MAX_BYTES for part in raw.split("/"))
    ):
        raise ModelError("that is not a usable path (a NUL character, or a name too long)")
    if roots is not None:
        if HUB_ID.match(raw):
            return raw, raw.rsplit("/", 1)[1]
        folder = _within_roots(raw, roots)
        if not folder.is_dir():
            raise ModelError(f"no model folder at {raw}")
        return _check_folder(folder, kind, shown=raw), folder.name
    local = Path(raw).expanduser()
    if local.exists():
        folder = local.resolve()
        if not folder.is_dir():
            raise ModelError(f"{folder} is a file, not a model folder (save_pretrained format)")
        return _check_folder(folder, kind, shown=str(folder)), folder.name
    if HUB_ID.match(raw) and not raw.startswith((".", "~")):
        return raw, raw.rsplit("/", 1)[1]
    raise ModelError(f"no folder at {local.resolve()} (and {raw!r} is not a hub id like org/name)")


def _name_taken(session: Session, name: str) -> bool:
    return session.scalar(select(ModelVersion.id).where(ModelVersion.name == name)) is not None


def unique_name(session: Session, base: str) -> str:
    base = base[: NAME_MAX - 8] or "model"
    if base.isdigit():  # names that look like ids could not be looked up by name
        base = f"model-{base}"
    name, n = base, 1
    while _name_taken(session, name):
        n += 1
        name = f"{base}-{n}"
    return name


def _check_name(session: Session, name: str) -> str:
    name = name.strip()
    if not name:
        raise ModelError("the name must not be empty", field="name")
    if len(name) > NAME_MAX:
        raise ModelError(f"the name must have at most {NAME_MAX} characters", field="name")
    if name.isdigit():
        raise ModelError("the name must not be a number (numbers refer to ids)", field="name")
    if _name_taken(session, name):
        raise ModelError(f"a model named {name!r} already exists", field="name")
    return name


def register_model(
    *,
    session: Session,
    path: str,
    kind: ModelKind,
    name: str | None = None,
    parent_id: int | None = None,
    metrics: dict[str, Any] | None = None,
    created_by_id: int | None = None,
    roots: Sequence[Path] | None = None,
) -> ModelVersion:
    """Add a model version. ``path`` is a local save_pretrained folder (it must hold a
    config.json; an rlhf.json's "kind" must agree with ``kind``) or a hub id ``org/name``.
    Without ``name`` the folder's name is used, made unique with ``-2``, ``-3``, ...
    ``roots``: where a local folder may be (the web form; the CLI and jobs pass None)."""
    kind = ModelKind(kind)
    stored_path, default_name = _resolve_path(path, kind, roots)
    if name is not None and name.strip():
        final_name = _check_name(session, name)
    else:
        final_name = unique_name(session, default_name)
    if parent_id is not None and session.get(ModelVersion, parent_id) is None:
        raise ModelError(f"no parent model with id {parent_id}", field="parent")
    model = ModelVersion(
        name=final_name,
        kind=kind,
        path=stored_path,
        parent_id=parent_id,
        metrics=dict(metrics or {}),
        created_by_id=created_by_id,
    )
    session.add(model)
    session.flush()
    record(
        session=session,
        actor_id=created_by_id,
        action="model.register",
        target_type="model_version",
        target_id=model.id,
        details={"name": model.name, "kind": kind.value, "path": model.path},
    )
    return model


def get_model(*, session: Session, ref: str | int) -> ModelVersion:
    """A model version by id or by exact name (the CLI's VERSION argument)."""
    model: ModelVersion | None
    if isinstance(ref, int) or ref.strip().isdigit():
        model = session.get(ModelVersion, int(ref))
    else:
        model = session.scalar(select(ModelVersion).where(ModelVersion.name == ref.strip()))
    if model is None:
        raise NotFoundError(f"no model version {str(ref)!r}")
    return model


def list_models(*, session: Session) -> Sequence[ModelVersion]:
    return session.scalars(select(ModelVersion).order_by(ModelVersion.id)).all()


def policy_projects(*, session: Session) -> dict[int, list[Project]]:
    """For each model id, the projects that sample with it (their current policy)."""
    projects = session.scalars(
        select(Project).where(Project.current_policy_id.is_not(None)).order_by(Project.name)
    ).all()
    found: dict[int, list[Project]] = {}
    for project in projects:
        assert project.current_policy_id is not None
        found.setdefault(project.current_policy_id, []).append(project)
    return found


def promote_model(
    *, session: Session, model: ModelVersion, project: Project, actor_id: int | None
) -> Project:
    """Make ``model`` the project's current policy (the model that samples its answers)."""
    if model.kind not in POLICY_KINDS:
        raise ModelError(
            f"{model.name!r} is a reward model ({model.kind.value}) and cannot generate "
            "answers; promote a policy, sft or base model",
            field="model",
        )
    previous = project.current_policy_id
    project.current_policy_id = model.id
    session.flush()
    record(
        session=session,
        actor_id=actor_id,
        action="model.promote",
        target_type="model_version",
        target_id=model.id,
        details={
            "name": model.name,
            "project_id": project.id,
            "project": project.name,
            "previous_policy_id": previous,
        },
    )
    return project


def lineage(*, session: Session, model: ModelVersion) -> list[ModelVersion]:
    """The model and its ancestors, root first (following parent_id; a cycle stops it)."""
    chain: list[ModelVersion] = []
    seen: set[int] = set()
    current: ModelVersion | None = model
    while current is not None and current.id not in seen:
        seen.add(current.id)
        chain.append(current)
        current = session.get(ModelVersion, current.parent_id) if current.parent_id else None
    chain.reverse()
    return chain


@dataclass(frozen=True)
class LineageStep:
    model: ModelVersion
    role: str  # what the step is to the model at the end of the chain
    export: Export | None  # the dataset snapshot it was trained on


ROLES = {
    ModelKind.base: "base model", ModelKind.sft: "supervised fine-tuning",
    ModelKind.rm: "reward model", ModelKind.policy: "policy",
}  # fmt: skip


def lineage_steps(*, session: Session, model: ModelVersion) -> list[LineageStep]:
    """The model's history, root first, with the dataset snapshot of each step: its parents
    (base -> SFT -> policy) and, just before a policy trained with PPO, the reward model it
    was trained against (InstructGPT's base -> SFT -> RM -> policy)."""
    steps: list[LineageStep] = []
    chain = lineage(session=session, model=model)
    in_chain = {version.id for version in chain}
    for version in chain:
        reward_id = (version.metrics or {}).get("reward_model_id")
        if isinstance(reward_id, int) and reward_id not in in_chain:
            reward = session.get(ModelVersion, reward_id)
            if reward is not None:
                role = "reward model it was trained against"
                steps.append(LineageStep(reward, role, _export(session, reward)))
        steps.append(LineageStep(version, ROLES[version.kind], _export(session, version)))
    return steps


def _export(session: Session, version: ModelVersion) -> Export | None:
    return session.get(Export, version.export_id) if version.export_id else None
