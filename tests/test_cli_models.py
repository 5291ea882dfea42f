"""`rlhf models list|register|promote`, run as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.db import make_engine, make_session_factory
from app.models_registry.models import ModelKind
from app.models_registry.service import register_model
from app.projects.models import Project
from tests.processes import rlhf, rlhf_env


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = rlhf_env(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    created = rlhf(env, "projects", "create", "Chat")
    assert created.returncode == 0, created.stderr
    return env


def _folder(root: Path, name: str, kind: str | None = None) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}', encoding="utf-8")
    if kind:
        (folder / "rlhf.json").write_text(json.dumps({"kind": kind}), encoding="utf-8")
    return folder


def _db(env: dict[str, str]) -> tuple[int | None, list[str]]:
    """The project's current policy id and the audit actions, read from the CLI's database."""
    engine = make_engine(env["RLHF_DATABASE_URL"])
    try:
        with make_session_factory(engine)() as session:
            project = session.scalars(select(Project).where(Project.name == "Chat")).one()
            return project.current_policy_id, list(session.scalars(select(AuditEvent.action)))
    finally:
        engine.dispose()


def test_commands_have_help(cli_env: dict[str, str]) -> None:
    for command in ("list", "register", "promote"):
        result = rlhf(cli_env, "models", command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, command


def test_register_list_promote(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert rlhf(cli_env, "models", "list", "--json").stdout.strip() == "[]"
    folder = _folder(tmp_path, "tiny-sft", kind="sft")
    result = rlhf(cli_env, "models", "register", str(folder), "--kind", "sft")
    assert result.returncode == 0, result.stderr
    sft_id = int(result.stdout.strip())
    result = rlhf(cli_env, "models", "register", "org/rm", "--kind", "rm", "--name", "the-rm")
    assert result.returncode == 0, result.stderr
    rm_id = int(result.stdout.strip())

    result = rlhf(cli_env, "models", "promote", "tiny-sft", "Chat")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tiny-sft (id {sft_id}) is now the policy of project 'Chat'"
    policy_id, actions = _db(cli_env)
    assert policy_id == sft_id
    assert actions.count("model.register") == 2 and "model.promote" in actions

    listed = json.loads(rlhf(cli_env, "models", "list", "--json").stdout)
    assert [(m["id"], m["name"], m["kind"]) for m in listed] == [
        (sft_id, "tiny-sft", "sft"),
        (rm_id, "the-rm", "rm"),
    ]
    assert listed[0]["path"] == str(folder.resolve())
    assert listed[0]["current_policy_of"] == ["Chat"] and listed[1]["current_policy_of"] == []
    assert listed[1]["path"] == "org/rm" and listed[0]["parent_id"] is None
    text = rlhf(cli_env, "models", "list").stdout
    assert "tiny-sft" in text and "(policy of Chat)" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "nope", "Chat"], "error: no model version 'nope'"),
        (["promote", "999", "Chat"], "error: no model version '999'"),
        (["promote", "org-rm", "Chat"], "error: 'org-rm' is a reward model"),
        (["promote", "org-sft", "Nope"], "error: no project 'Nope'"),
        (["register", "/no/such/folder", "--kind", "base"], "error: no folder at /no/such/folder"),
        (["register", "{tmp}/empty", "--kind", "base"], "error: {tmp}/empty has no config.json"),
        (["register", "{tmp}/rm", "--kind", "policy"], "error: {tmp}/rm/rlhf.json says this is"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli_env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    engine = make_engine(cli_env["RLHF_DATABASE_URL"])
    try:
        with make_session_factory(engine, writes=True)() as session:
            for ref, kind in (("org/rm", ModelKind.rm), ("org/sft", ModelKind.sft)):
                register_model(session=session, path=ref, kind=kind, name=ref.replace("/", "-"))
            session.commit()
    finally:
        engine.dispose()
    (tmp_path / "empty").mkdir()
    _folder(tmp_path, "rm", kind="rm")
    tmp = str(tmp_path.resolve())
    result = rlhf(cli_env, "models", *[a.replace("{tmp}", tmp) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.replace("{tmp}", tmp)), result.stderr
    assert "Traceback" not in result.stderr
    assert _db(cli_env)[0] is None


def test_bad_kind_is_a_usage_error(cli_env: dict[str, str]) -> None:
    result = rlhf(cli_env, "models", "register", "org/x", "--kind", "giant")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "giant" in result.stderr
