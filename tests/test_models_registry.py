"""The model registry: registering checkpoints, promotion, lineage, and the admin page."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.config import Settings
from app.errors import NotFoundError
from app.exports.models import Export
from app.models_registry.models import ModelKind, ModelVersion
from app.models_registry.service import (
    ModelError,
    get_model,
    lineage,
    list_models,
    policy_projects,
    promote_model,
    register_model,
)
from tests.helpers import (
    csrf_token,
    field_error,
    login,
    make_admin,
    make_project,
    make_user,
    visible_text,
)


def make_folder(root: Path, name: str = "tiny-gpt", rlhf: dict[str, object] | None = None) -> Path:
    """A minimal save_pretrained folder: a config.json (and optionally an rlhf.json)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}), encoding="utf-8")
    if rlhf is not None:
        (folder / "rlhf.json").write_text(json.dumps(rlhf), encoding="utf-8")
    return folder


def _actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


# --- service ----------------------------------------------------------------------------------


def test_register_a_local_folder(session: Session, tmp_path: Path) -> None:
    folder = make_folder(tmp_path, rlhf={"kind": "sft", "template": "{prompt}{response}"})
    admin = make_admin(session)
    model = register_model(
        session=session, path=str(folder), kind=ModelKind.sft, metrics={"loss": 1.5},
        created_by_id=admin.id,
    )  # fmt: skip
    assert model.id and model.name == "tiny-gpt" and model.kind == ModelKind.sft
    assert model.path == str(folder.resolve()) and Path(model.path).is_absolute()
    assert model.metrics == {"loss": 1.5} and model.created_by_id == admin.id
    assert get_model(session=session, ref=model.id) is model
    assert get_model(session=session, ref=str(model.id)) is model
    assert get_model(session=session, ref="tiny-gpt") is model
    assert model in list_models(session=session)
    assert "model.register" in _actions(session)


def test_relative_paths_are_stored_absolute(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_folder(tmp_path / "ckpts", "base-model")
    monkeypatch.chdir(tmp_path)
    model = register_model(session=session, path="ckpts/base-model", kind=ModelKind.base)
    assert model.path == str((tmp_path / "ckpts" / "base-model").resolve())


def test_default_names_get_suffixes(session: Session, tmp_path: Path) -> None:
    names = [
        register_model(
            session=session, path=str(make_folder(tmp_path / str(i))), kind=ModelKind.base
        ).name
        for i in range(3)
    ]
    assert names == ["tiny-gpt", "tiny-gpt-2", "tiny-gpt-3"]


def test_a_chosen_name_must_be_free(session: Session, tmp_path: Path) -> None:
    register_model(session=session, path=str(make_folder(tmp_path / "a")), kind=ModelKind.base)
    with pytest.raises(ModelError, match="a model named 'tiny-gpt' already exists") as exc:
        register_model(
            session=session, path=str(make_folder(tmp_path / "b")), kind=ModelKind.base,
            name="tiny-gpt",
        )  # fmt: skip
    assert exc.value.field == "name"
    with pytest.raises(ModelError, match="must not be a number"):
        register_model(
            session=session, path=str(make_folder(tmp_path / "c")), kind=ModelKind.base, name="7"
        )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", r"no folder at .*nowhere"),
        ("no-config", r"has no config\.json: not a Hugging Face save_pretrained folder"),
        ("file", r"is a file, not a model folder"),
        ("mismatch", r"rlhf\.json says this is a rm model, not policy"),
        ("bad-json", r"rlhf\.json is not valid JSON"),
    ],
)
def test_bad_folders_say_what_is_wrong(
    session: Session, tmp_path: Path, setup: str, message: str
) -> None:
    path = tmp_path / "nowhere"
    if setup == "no-config":
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"")
    elif setup == "file":
        path.write_text("{}", encoding="utf-8")
    elif setup == "mismatch":
        path = make_folder(tmp_path, rlhf={"kind": "rm"})
    elif setup == "bad-json":
        path = make_folder(tmp_path)
        (path / "rlhf.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match=message):
        register_model(session=session, path=str(path), kind=ModelKind.policy)
    assert list_models(session=session) == []


def test_a_hub_id_is_accepted(session: Session) -> None:
    model = register_model(session=session, path="openai-community/gpt2", kind=ModelKind.base)
    assert model.path == "openai-community/gpt2" and model.name == "gpt2"
    with pytest.raises(ModelError, match="not a hub id"):
        register_model(session=session, path="just-a-word", kind=ModelKind.base)


def test_get_model_unknown(session: Session) -> None:
    with pytest.raises(NotFoundError, match="no model version 'nope'"):
        get_model(session=session, ref="nope")
    with pytest.raises(NotFoundError):
        get_model(session=session, ref=999999)


def test_promote_rules(session: Session, tmp_path: Path) -> None:
    project = make_project(session)
    admin = make_admin(session)
    rm = register_model(session=session, path="org/rm", kind=ModelKind.rm)
    with pytest.raises(ModelError, match="cannot generate answers"):
        promote_model(session=session, model=rm, project=project, actor_id=admin.id)
    assert project.current_policy_id is None
    for kind in (ModelKind.base, ModelKind.sft, ModelKind.policy):
        model = register_model(session=session, path=f"org/{kind.value}", kind=kind)
        promote_model(session=session, model=model, project=project, actor_id=admin.id)
        assert project.current_policy_id == model.id
    assert policy_projects(session=session) == {project.current_policy_id: [project]}
    assert _actions(session).count("model.promote") == 3


def test_register_checks_the_parent(session: Session) -> None:
    with pytest.raises(ModelError, match="no parent model with id 999999"):
        register_model(session=session, path="org/a", kind=ModelKind.sft, parent_id=999999)


def test_lineage_root_first_and_cycle_safe(session: Session) -> None:
    base = register_model(session=session, path="org/base", kind=ModelKind.base)
    sft = register_model(session=session, path="org/sft", kind=ModelKind.sft, parent_id=base.id)
    ppo = register_model(session=session, path="org/ppo", kind=ModelKind.policy, parent_id=sft.id)
    assert lineage(session=session, model=ppo) == [base, sft, ppo]
    assert lineage(session=session, model=base) == [base]
    base.parent_id = ppo.id  # a cycle (only by hand): the walk still ends
    session.flush()
    assert lineage(session=session, model=ppo) == [base, sft, ppo]


# --- admin page -------------------------------------------------------------------------------


def _row(page: str, model: ModelVersion) -> str:
    match = re.search(rf'<tr id="model-{model.id}".*?</tr>', page, re.S)
    assert match, f"no row for model {model.id}"
    return match.group(0)


async def _admin(client: httpx.AsyncClient, session: Session) -> str:
    await login(client, make_admin(session))
    return await csrf_token(client, "/admin/models")


async def test_page_lists_models(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, name="Chat")
    base = register_model(session=session, path="org/base", kind=ModelKind.base)
    sft = register_model(session=session, path="org/sft", kind=ModelKind.sft, parent_id=base.id)
    promote_model(session=session, model=sft, project=project, actor_id=None)
    await _admin(client, session)
    r = await client.get("/admin/models")
    assert r.status_code == 200
    row = visible_text(_row(r.text, sft))
    # The path under the name; visible_text spaces its folders (a tag each, to wrap between).
    assert f"{sft.id} sft org/ sft sft base (id {base.id})" in row
    assert "Chat" in row and "Promote" in row
    assert re.search(r'href="/admin/models"\s+aria-current="page">Models', r.text)
    assert "Register a model" in r.text


async def test_page_empty(client: httpx.AsyncClient, session: Session) -> None:
    await _admin(client, session)
    r = await client.get("/admin/models")
    assert r.status_code == 200 and "No models yet" in r.text


async def test_page_registers_a_model(
    client: httpx.AsyncClient, session: Session, settings: Settings
) -> None:
    token = await _admin(client, session)
    folder = make_folder(settings.data_dir / "models" / secrets.token_hex(4), "my-sft")
    r = await client.post(
        "/admin/models",
        data={"path": str(folder), "kind": "sft", "name": "", "csrf_token": token},
    )
    assert r.status_code == 303, r.text
    model = get_model(session=session, ref="my-sft")
    assert model.kind == ModelKind.sft and model.created_by_id is not None
    page = await client.get(r.headers["location"])
    assert f"Model my-sft registered (id {model.id})." in page.text
    assert "model.register" in _actions(session)


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"path": "", "kind": "base"}, "path", "Give the path of a model folder"),
        (
            {"path": "/no/such/dir", "kind": "base"},
            "path",
            "/no/such/dir is not under the model folders this server accepts",
        ),
        (
            {"path": "/proc/self", "kind": "base"},
            "path",
            "/proc/self is not under the model folders",
        ),
        ({"path": "~", "kind": "base"}, "path", "Give the absolute path of a model folder under"),
        ({"path": "/tmp/a\x00b", "kind": "base"}, "path", "That is not a usable path"),
        ({"path": "/tmp/" + "n" * 300, "kind": "base"}, "path", "That is not a usable path"),
        ({"path": "org/x", "kind": "giant"}, "kind", "Choose what the model is"),
        ({"path": "org/x", "kind": "base", "name": "42"}, "name", "The name must not be a number"),
    ],
)
async def test_page_register_errors_inline(
    client: httpx.AsyncClient, session: Session, form: dict[str, str], field: str, message: str
) -> None:
    token = await _admin(client, session)
    r = await client.post("/admin/models", data={**form, "csrf_token": token})
    assert r.status_code == 422
    assert field_error(r.text, field).startswith(message), r.text
    assert "/proc/1" not in r.text and "/root" not in r.text  # nothing the server resolved
    if "\x00" not in form["path"]:
        assert f'value="{form["path"]}"' in r.text  # what was typed comes back
    assert list_models(session=session) == []


async def test_page_register_kind_mismatch(
    client: httpx.AsyncClient, session: Session, settings: Settings
) -> None:
    token = await _admin(client, session)
    folder = make_folder(settings.data_dir / "models" / secrets.token_hex(4), rlhf={"kind": "rm"})
    r = await client.post(
        "/admin/models", data={"path": str(folder), "kind": "policy", "csrf_token": token}
    )
    assert r.status_code == 422
    assert "says this is a rm model, not policy" in field_error(r.text, "kind")


async def test_page_promotes(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, name="Chat")
    model = register_model(session=session, path="org/policy", kind=ModelKind.policy)
    token = await _admin(client, session)
    r = await client.post(
        f"/admin/models/{model.id}/promote",
        data={"project_id": str(project.id), "csrf_token": token},
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/models?")
    session.refresh(project)
    assert project.current_policy_id == model.id
    page = await client.get(r.headers["location"])
    assert "policy is now the current policy of Chat." in page.text
    assert "model.promote" in _actions(session)


async def test_page_promote_errors_inline(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session)
    rm = register_model(session=session, path="org/rm", kind=ModelKind.rm)
    token = await _admin(client, session)
    r = await client.post(
        f"/admin/models/{rm.id}/promote", data={"project_id": str(project.id), "csrf_token": token}
    )
    assert r.status_code == 422
    assert "cannot generate answers" in visible_text(_row(r.text, rm))
    session.refresh(project)
    assert project.current_policy_id is None
    r = await client.post(
        f"/admin/models/{rm.id}/promote", data={"project_id": "999999", "csrf_token": token}
    )
    assert r.status_code == 422 and "No project &#39;999999&#39;" in _row(r.text, rm)
    r = await client.post(
        "/admin/models/999999/promote", data={"project_id": str(project.id), "csrf_token": token}
    )
    assert r.status_code == 404


async def test_page_refuses_a_labeler(client: httpx.AsyncClient, session: Session) -> None:
    model = register_model(session=session, path="org/policy", kind=ModelKind.policy)
    project = make_project(session)
    await login(client, make_user(session))
    token = await csrf_token(client, "/home")
    assert (await client.get("/admin/models")).status_code == 403
    for path, data in (
        ("/admin/models", {"path": "org/x", "kind": "base"}),
        (f"/admin/models/{model.id}/promote", {"project_id": str(project.id)}),
    ):
        r = await client.post(path, data={**data, "csrf_token": token})
        assert r.status_code == 403, path
    assert len(list_models(session=session)) == 1
    assert project.current_policy_id is None


def _export(session: Session, project_id: int, kind: str, train: int) -> Export:
    export = Export(project_id=project_id, kind=kind, format="jsonl",
                    counts={"train": train, "validation": 1}, directory="/x")  # fmt: skip
    session.add(export)
    session.flush()
    return export


async def test_model_page_shows_the_lineage_with_each_dataset_snapshot(
    client: httpx.AsyncClient, session: Session
) -> None:
    """base -> SFT -> RM -> policy (InstructGPT): the RM is not the policy's parent but the
    model it was trained against, shown just before it; each step links its snapshot."""
    project = make_project(session, name="Loop")
    base = register_model(session=session, path="org/base", kind=ModelKind.base)
    sft = register_model(session=session, path="org/sft", kind=ModelKind.sft, parent_id=base.id)
    rm = register_model(session=session, path="org/rm", kind=ModelKind.rm, parent_id=sft.id)
    ppo = register_model(session=session, path="org/ppo", kind=ModelKind.policy,
                         parent_id=sft.id, metrics={"reward_model_id": rm.id})  # fmt: skip
    for version, kind, n in ((sft, "sft", 11), (rm, "kwise", 22), (ppo, "prompts", 33)):
        version.export_id = _export(session, project.id, kind, n).id
    promote_model(session=session, model=ppo, project=project, actor_id=None)
    session.flush()
    await _admin(client, session)
    r = await client.get(f"/admin/models/{ppo.id}")
    assert r.status_code == 200
    steps = re.findall(r'<li class="lineage-step.*?</li>', r.text, re.S)
    names = [visible_text(step).split()[1] for step in steps]
    assert names == ["base", "sft", "rm", "ppo"]
    assert "reward model it was trained against" in visible_text(steps[2])
    assert f'href="/admin/exports/{sft.export_id}"' in steps[1] and "11 train" in steps[1]
    assert f'href="/admin/exports/{rm.export_id}"' in steps[2] and "kwise" in steps[2]
    assert f'href="/admin/exports/{ppo.export_id}"' in steps[3] and "prompts" in steps[3]
    assert "registered by hand" in steps[0] and "none" in visible_text(steps[0])
    assert "Current policy of Loop" in visible_text(r.text)
    assert f'action="/admin/models/{ppo.id}/promote"' in r.text
    listing = await client.get("/admin/models")
    assert f'href="/admin/models/{ppo.id}"' in listing.text
    assert (await client.get("/admin/models/99999")).status_code == 404


def test_the_web_forms_roots_are_the_data_dirs_models_and_the_listed_folders(
    session: Session, tmp_path: Path
) -> None:
    from tests.conftest import make_settings

    extra = tmp_path / "shared-models"
    settings = make_settings(data_dir=tmp_path / "data", model_roots=f"{extra}:/srv/models")
    roots = settings.model_root_paths
    assert roots == [tmp_path / "data" / "models", extra, Path("/srv/models")]
    inside = make_folder(extra, "team-rm")
    model = register_model(session=session, path=str(inside), kind=ModelKind.rm, roots=roots)
    assert model.path == str(inside.resolve())
    outside = make_folder(tmp_path / "elsewhere", "x")
    with pytest.raises(ModelError, match="is not under the model folders"):
        register_model(session=session, path=str(outside), kind=ModelKind.base, roots=roots)
    with pytest.raises(ModelError, match="is not under"):  # no way out with ..
        register_model(
            session=session, path=f"{extra}/../elsewhere/x", kind=ModelKind.base, roots=roots
        )
