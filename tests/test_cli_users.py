"""`rlhf users deactivate` and `rlhf users reset-password`, run as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth.models import User, UserSession
from app.auth.passwords import verify_password
from app.auth.service import start_session
from app.db import make_engine, make_session_factory
from tests.processes import rlhf, rlhf_env

OLD_PASSWORD = "the-old-password"


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = rlhf_env(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    created = rlhf(
        env, "users", "create", "Lin@Example.test", "--password-stdin", stdin=f"{OLD_PASSWORD}\n"
    )
    assert created.returncode == 0, created.stderr
    return env


def _user(env: dict[str, str]) -> tuple[User, list[UserSession], list[str]]:
    """The user, their sessions and the audit actions, read from the CLI's database."""
    engine = make_engine(env["RLHF_DATABASE_URL"])
    try:
        with make_session_factory(engine)() as session:
            user = session.scalars(select(User).where(User.email == "lin@example.test")).one()
            sessions = list(session.scalars(select(UserSession)))
            actions = list(session.scalars(select(AuditEvent.action)))
            session.expunge_all()
            return user, sessions, actions
    finally:
        engine.dispose()


def _sign_in(env: dict[str, str]) -> None:
    """A browser session for the user, as the login form would start it."""
    engine = make_engine(env["RLHF_DATABASE_URL"])
    try:
        with make_session_factory(engine, writes=True)() as session:
            user = session.scalars(select(User).where(User.email == "lin@example.test")).one()
            start_session(session=session, user=user, ip="127.0.0.1", user_agent="test")
            session.commit()
    finally:
        engine.dispose()


def test_new_commands_have_help(cli_env: dict[str, str]) -> None:
    for command in (["users", "deactivate"], ["users", "reset-password"]):
        result = rlhf(cli_env, *command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, command


def test_deactivate(cli_env: dict[str, str]) -> None:
    _sign_in(cli_env)
    result = rlhf(cli_env, "users", "deactivate", "LIN@example.test")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "deactivated lin@example.test (signed out everywhere, API tokens revoked)"
    )
    user, sessions, actions = _user(cli_env)
    assert user.is_active is False
    assert sessions and all(s.revoked_at is not None for s in sessions)
    assert "user.deactivate" in actions
    listed = json.loads(rlhf(cli_env, "users", "list", "--json").stdout)
    assert listed[0]["active"] is False


def test_reset_password_prints_a_generated_one(cli_env: dict[str, str]) -> None:
    _sign_in(cli_env)
    result = rlhf(cli_env, "users", "reset-password", "lin@example.test")
    assert result.returncode == 0, result.stderr
    first, password = result.stdout.splitlines()
    assert first == "password reset for lin@example.test (signed out everywhere)"
    user, sessions, actions = _user(cli_env)
    assert verify_password(user.password_hash, password)
    assert not verify_password(user.password_hash, OLD_PASSWORD)
    assert all(s.revoked_at is not None for s in sessions)
    assert "user.reset_password" in actions


def test_reset_password_from_stdin(cli_env: dict[str, str]) -> None:
    result = rlhf(
        cli_env, "users", "reset-password", "lin@example.test", "--password-stdin",
        stdin="a-typed-password\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "password reset for lin@example.test (signed out everywhere)"
    ]
    user, _, _ = _user(cli_env)
    assert verify_password(user.password_hash, "a-typed-password")


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["deactivate", "nobody@example.test"], "", "error: no user with the email nobody@example.test"),
        (["reset-password", "Nobody@example.test"], "", "error: no user with the email nobody@example.test"),
        (
            ["reset-password", "lin@example.test", "--password-stdin"], "short\n",
            "error: the password must have at least 8 characters",
        ),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    cli_env: dict[str, str], args: list[str], stdin: str, message: str
) -> None:
    result = rlhf(cli_env, "users", *args, stdin=stdin)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.stderr
    user, _, _ = _user(cli_env)
    assert user.is_active and verify_password(user.password_hash, OLD_PASSWORD)


def test_tokens_are_listed_made_and_revoked(cli_env: dict[str, str]) -> None:
    made = rlhf(cli_env, "users", "tokens", "lin@example.test", "--create", "nightly export",
                "--expires-days", "30")  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[-1]
    assert secret.startswith("rlhf_")
    [token] = json.loads(rlhf(cli_env, "users", "tokens", "lin@example.test", "--json").stdout)
    assert (token["name"], token["state"], token["last_used_at"]) == (
        "nightly export",
        "live",
        None,
    )
    assert token["expires_at"] is not None and secret.startswith(token["prefix"])
    revoked = rlhf(cli_env, "users", "tokens", "lin@example.test", "--revoke", str(token["id"]))
    assert revoked.returncode == 0, revoked.stderr
    assert " revoked " in revoked.stdout and "nightly export" in revoked.stdout
    assert "token.revoke" in _user(cli_env)[2]
    other = rlhf(cli_env, "users", "tokens", "lin@example.test", "--revoke", "999")
    assert other.returncode == 2
    assert other.stderr.strip() == "error: lin@example.test has no API token 999"


def test_project_members_are_added_removed_and_the_project_restricted(
    cli_env: dict[str, str],
) -> None:
    project = rlhf(cli_env, "projects", "create", "Private").stdout.strip()
    result = rlhf(cli_env, "projects", "members", project, "--add", "LIN@example.test",
                  "--restricted", "true", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "project": int(project),
        "restricted": True,
        "members": ["lin@example.test"],
    }
    result = rlhf(cli_env, "projects", "members", "Private", "--remove", "lin@example.test",
                  "--restricted", "false")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"project {project}: every labeler (open); 0 member(s)"]
    assert "project.members" in _user(cli_env)[2]
    bad = rlhf(cli_env, "projects", "members", "Private", "--restricted", "maybe")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
