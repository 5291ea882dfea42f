"""Shared pieces of the browser tests (Debian's Chromium driven by Playwright).

One demo server (`rlhf serve --with-worker`, as `make run` starts it) and one Chromium serve
every browser test of the session (fixtures `demo_server`, `chromium` and `page` in
conftest.py); each test gets a fresh browser context, so cookies never leak between tests.
Tests that need a state of their own make it with `rlhf` (a project of their own, users of
their own) instead of relying on what earlier tests did.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.auth.models import Role
from app.auth.service import create_user
from app.db import make_engine, make_session_factory, session_scope
from app.imports.service import import_file
from app.projects.service import create_project
from tests.processes import Server, rlhf

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]
LABELER_PASSWORD = "browser-labeler-pw"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
# Name the file and line of any Content-Security-Policy violation.
CSP_REPORTER = (
    "document.addEventListener('securitypolicyviolation', e => console.error("
    "'CSP violation', e.violatedDirective, e.sourceFile, e.lineNumber, e.sample, Array.from(document.querySelectorAll('[style]')).map(x => x.tagName + '#' + x.id + '.' + x.className + ' ' + x.getAttribute('style')).join('; ')))"
)


def watch_errors(page: Any) -> list[str]:
    """Collects script errors and CSP violations of the page; the fixture asserts none."""
    errors: list[str] = []
    page.add_init_script(CSP_REPORTER)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and ("Content Security Policy" in msg.text or "CSP" in msg.text)
            else None
        ),
    )
    return errors


def log_in(page: Any, server: Server, email: str, password: str) -> None:
    page.goto(f"{server.url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def log_out(page: Any) -> None:
    page.click("form[action='/logout'] button")
    page.wait_for_url("**/login")


def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def prompt_text(page: Any) -> str:
    return str(page.inner_text(".prompt-text")).strip()


def cli(server: Server, *args: str, stdin: str = "") -> str:
    """`rlhf ARGS` against the server's database; its stdout, after asserting success."""
    result = rlhf(server.env, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextmanager
def server_session(server: Server) -> Iterator[Session]:
    """A session on the server's own database, committed at the end: set-up without the cost
    of an `rlhf` process per step."""
    engine = make_engine(server.env["RLHF_DATABASE_URL"])
    try:
        # A write transaction from the start (BEGIN IMMEDIATE on SQLite) waits for the
        # server's writers instead of failing with "database is locked".
        with session_scope(make_session_factory(engine, writes=True)) as session:
            yield session
    finally:
        engine.dispose()


def labeler(server: Server, email: str) -> str:
    """A labeler of the test's own (state from other tests never reaches it); its password."""
    with server_session(server) as session:
        create_user(session=session, email=email, password=LABELER_PASSWORD, role=Role.labeler)
    return LABELER_PASSWORD


def ranking_project(
    server: Server, tmp: Path, name: str, prompts: list[tuple[str, list[str]]], *, k: int = 4
) -> int:
    """A project of its own (K answers, overlap 1, the default rating and flags), imported
    from (prompt, answers) pairs; a prompt with no answers awaits a demonstration only."""
    path = tmp / f"{name.replace(' ', '-')}.jsonl"
    rows = [
        {"prompt": prompt, **({"completions": [{"text": a} for a in answers]} if answers else {})}
        for prompt, answers in prompts
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with server_session(server) as session:
        project = create_project(session=session, name=name, k=k, overlap=1)
        import_file(session=session, project=project, path=path, source_name=path.name)
        return project.id
