"""A newcomer's first minutes in a real browser (Debian's Chromium driven by Playwright):
the demo served by `rlhf serve --with-worker`, exactly as `make run` starts it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Server, rlhf, rlhf_env, serve_with_worker

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("browser")
    env = rlhf_env(f"sqlite:///{tmp / 'demo.db'}", tmp / "var", RLHF_DEMO_MODE="1")
    for command in (["db", "upgrade"], ["demo"]):
        result = rlhf(env, *command)
        assert result.returncode == 0, result.stderr
    with serve_with_worker(env) as server:
        yield server


@pytest.fixture
def page(demo_server: Server) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text)
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )
        yield page
        browser.close()
        assert errors == [], errors  # no script errors, nothing blocked by the CSP


def log_in(page, server: Server, email: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server.url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_wrong_password_then_labeler_home(page, demo_server: Server) -> None:  # type: ignore[no-untyped-def]
    log_in(page, demo_server, "labeler1@demo.local", "not-the-password")
    assert page.get_by_role("alert").inner_text() == "Wrong email or password."
    log_in(page, demo_server, "labeler1@demo.local", "demo-labeler")
    page.wait_for_url("**/home")
    assert "Welcome back" in page.inner_text("h1")
    assert page.get_by_text("Everyday assistant (demo)").is_visible()
    page.get_by_role("link", name="Read the guidelines").click()
    assert page.get_by_role("heading", name="Labeling guidelines: Everyday assistant").is_visible()
    # A labeler who types an admin address gets a clear refusal, not a crash.
    page.goto(f"{demo_server.url}/admin")
    assert "for admins" in page.inner_text("main")


def test_admin_runs_a_self_check_and_watches_it_finish(page, demo_server: Server) -> None:  # type: ignore[no-untyped-def]
    log_in(page, demo_server, "admin@demo.local", "demo-admin")
    page.wait_for_url("**/admin")
    assert page.get_by_role("cell", name="Everyday assistant (demo)").is_visible()
    page.get_by_role("button", name="Run a worker self-check").click()
    page.wait_for_url("**/admin/jobs/*")
    # The page polls itself with htmx (the CSRF header rides along) until the job finishes.
    page.locator("#job-status").get_by_text("succeeded", exact=True).wait_for(timeout=90_000)
    assert "all checks passed" in page.inner_text("#job-status")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
