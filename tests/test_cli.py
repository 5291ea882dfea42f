"""The `rlhf` command as a user runs it: real processes, a fresh SQLite file each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.processes import rlhf, rlhf_env

COMMANDS = [
    [], ["serve"], ["worker"], ["db"], ["db", "upgrade"], ["users"], ["users", "create"],
    ["projects"], ["projects", "create"], ["projects", "show"], ["demo"], ["jobs"],
    ["jobs", "list"], ["jobs", "show"], ["jobs", "selfcheck"],
]  # fmt: skip


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return rlhf_env(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "data")


def test_every_command_has_help(cli_env: dict[str, str]) -> None:
    """`rlhf --help` as a process; every command's help in this one (typer's runner renders
    the same text, without a process start per command)."""
    from typer.testing import CliRunner

    from app.cli import app

    result = rlhf(cli_env, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout, result.stderr
    runner = CliRunner()
    for command in COMMANDS:
        shown = runner.invoke(app, [*command, "--help"], env=cli_env)
        assert shown.exit_code == 0, (command, shown.output)
        assert "Usage:" in shown.output, command


def test_a_whole_session(cli_env: dict[str, str]) -> None:
    assert rlhf(cli_env, "db", "upgrade").returncode == 0

    created = rlhf(cli_env, "users", "create", "Ops@Example.test", "--role", "admin",
                   "--password-stdin", "--token", stdin="s3cret-password\n")  # fmt: skip
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert lines[0].startswith("created user 1 (Ops@Example.test, admin)")
    assert lines[1].startswith("rlhf_")  # the API token, printed once

    project = rlhf(cli_env, "projects", "create", "Summaries", "--k", "5", "--overlap", "2")
    assert project.returncode == 0 and project.stdout.strip().isdigit()
    shown = json.loads(rlhf(cli_env, "projects", "show", "Summaries", "--json").stdout)
    assert (shown["id"], shown["k"], shown["overlap"]) == (int(project.stdout), 5, 2)
    assert shown["counts"]["prompts"] == 0
    by_id = json.loads(rlhf(cli_env, "projects", "show", project.stdout.strip(), "--json").stdout)
    assert by_id == shown

    assert rlhf(cli_env, "jobs", "list").stdout.strip() == "no jobs yet"


def test_demo_seeds_once_and_can_run_again(cli_env: dict[str, str]) -> None:
    rlhf(cli_env, "db", "upgrade")
    first = rlhf(cli_env, "demo")
    assert first.returncode == 0, first.stderr
    assert "admin@demo.local" in first.stdout and "labeler3@demo.local" in first.stdout
    again = rlhf(cli_env, "demo")
    assert again.returncode == 0
    assert "0 prompts added" in again.stdout
    data = json.loads(rlhf(cli_env, "projects", "show", "1", "--json").stdout)
    assert data["k"] == 4
    assert data["counts"]["rankable_prompts"] >= 10
    assert data["counts"]["completions"] == 4 * data["counts"]["rankable_prompts"]


BAD_INPUT = [
    (["projects", "show", "nope"], "error: no project 'nope'"),
    (["jobs", "show", "42"], "error: no job 42"),
    (["projects", "create", "Twice"], "error: a project named 'Twice' already exists"),
    (
        ["worker", "--queues", "gpu"],
        "error: unknown queue(s) gpu; known: default, train, or a training machine's own "
        "train-NAME",
    ),
    (
        ["projects", "create", "2024"],
        "error: a project name cannot be only digits (it would read as an id)",
    ),
    (["projects", "create", "x" * 201], "error: a project name has at most 200 characters"),
]


def test_bad_input_is_one_line_and_exit_2(cli_env: dict[str, str]) -> None:
    # one database for every case (each command is still a process of its own)
    rlhf(cli_env, "db", "upgrade")
    rlhf(cli_env, "projects", "create", "Twice")
    for args, message in BAD_INPUT:
        result = rlhf(cli_env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip() == message
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["projects", "create", "X", "--k", "12"], "error: Invalid value for '--k'"),
        (["projects", "create"], "error: Missing argument 'name'"),
        (["jobs", "show", "seven"], "error: Invalid value for 'job_id'"),
        (["projects", "frobnicate"], "error: No such command 'frobnicate'"),
        (["projects", "create", "X", "--overlap", "0"], "error: Invalid value for '--overlap'"),
        (["jobs", "selfcheck", "--delay", "61"], "error: Invalid value for '--delay'"),
        (["users", "create", "a@b.test", "--role", "owner"], "error: Invalid value for '--role'"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    cli_env: dict[str, str], args: list[str], expected: str
) -> None:
    result = rlhf(cli_env, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(expected), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_short_password_is_refused(cli_env: dict[str, str]) -> None:
    rlhf(cli_env, "db", "upgrade")
    result = rlhf(cli_env, "users", "create", "a@b.test", "--password-stdin", stdin="short\n")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: the password must have at least 8 characters"


def test_default_secret_is_refused_outside_demo_mode(cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "RLHF_SECRET_KEY"}
    result = rlhf(env, "jobs", "list")
    assert result.returncode == 2
    assert "RLHF_SECRET_KEY is left at its default" in result.stderr
    assert "Traceback" not in result.stderr
    assert rlhf({**env, "RLHF_DEMO_MODE": "1"}, "db", "upgrade").returncode == 0


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("not-an-email", "error: not an email address: 'not-an-email'"),
        ("Taken@Example.test", "error: a user with the email taken@example.test already exists"),
    ],
)
def test_users_create_refuses_bad_or_taken_emails(
    cli_env: dict[str, str], email: str, message: str
) -> None:
    rlhf(cli_env, "db", "upgrade")
    first = rlhf(
        cli_env, "users", "create", "taken@example.test", "--password-stdin", stdin="long-enough\n"
    )
    assert first.returncode == 0, first.stderr
    result = rlhf(cli_env, "users", "create", email, "--password-stdin", stdin="long-enough\n")
    assert result.returncode == 2
    assert result.stderr.strip() == message
