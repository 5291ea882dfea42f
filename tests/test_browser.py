"""A newcomer's first minutes in a real browser (Debian's Chromium driven by Playwright):
the demo served by `rlhf serve --with-worker`, exactly as `make run` starts it."""

from __future__ import annotations

import re
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
        # Name the file and line of any Content-Security-Policy violation.
        page.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => console.error("
            "'CSP violation', e.violatedDirective, e.sourceFile, e.lineNumber, e.sample, Array.from(document.querySelectorAll('[style]')).map(x => x.tagName + '#' + x.id + '.' + x.className + ' ' + x.getAttribute('style')).join('; ')))"
        )
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text)
                if msg.type == "error"
                and ("Content Security Policy" in msg.text or "CSP" in msg.text)
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


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def prompt_text(page) -> str:  # type: ignore[no-untyped-def]
    return page.inner_text(".prompt-text").strip()


def test_a_labelers_session_with_the_keyboard(page, demo_server: Server) -> None:  # type: ignore[no-untyped-def]
    log_in(page, demo_server, "labeler1@demo.local", "demo-labeler")
    page.wait_for_url("**/home")

    # Write a demonstration; the draft survives a reload.
    page.get_by_role("link", name=re.compile("Write demonstrations")).click()
    page.wait_for_selector("#demo-text")
    page.fill("#demo-text", "A leap year has 366 days")
    page.wait_for_selector("#draft-status:has-text('Draft saved')", timeout=10_000)
    page.reload()
    page.wait_for_selector("#demo-text")
    assert page.input_value("#demo-text") == "A leap year has 366 days"
    page.type("#demo-text", ". It comes every four years, with exceptions for centuries.")
    shot(page, "labeling-demonstration")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".toast:has-text('Demonstration saved.')")

    # Rank four answers with the keyboard alone: B first, A second, C and D tied third.
    page.goto(f"{demo_server.url}/projects/1/rank")
    page.wait_for_selector("#rank-form")
    first_prompt = prompt_text(page)
    submit = page.locator("[data-submit]")
    assert submit.is_disabled()  # refused until the ranking is complete
    page.keyboard.press("j")  # answer B
    page.keyboard.press("1")  # B first; focus moves on to the next unranked answer (C)
    page.keyboard.press("k")
    page.keyboard.press("k")  # back to A
    page.keyboard.press("2")
    page.keyboard.press("3")  # C
    page.keyboard.press("k")
    page.keyboard.press("j")  # D (focus returns to the first unranked one)
    page.keyboard.press("3")  # D ties with C
    assert page.inner_text("#rank-order").split() == ["B", "A", "C", "=", "D"]
    answer_b = page.locator(".answer").nth(1)
    answer_b.focus()
    page.keyboard.press("Shift+Digit6")  # rate B 6/7
    answer_b.locator("input[type=checkbox]").first.check()  # flag B
    assert submit.is_enabled()
    shot(page, "labeling-rank-filled")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".toast:has-text('Ranking saved.')")
    second_prompt = prompt_text(page)
    assert second_prompt != first_prompt  # the next task, without a page load

    # Skip one with a reason.
    page.keyboard.press("s")
    page.get_by_label("Outside my expertise").check()
    page.get_by_role("button", name="Skip task").click()
    page.wait_for_selector(".toast:has-text('Skipped')")
    third_prompt = prompt_text(page)
    assert third_prompt not in (first_prompt, second_prompt)
    # Coming back never shows a finished or skipped prompt again.
    page.goto(f"{demo_server.url}/projects/1/rank")
    page.wait_for_selector("#rank-form")
    assert prompt_text(page) == third_prompt
    shot(page, "labeling-rank-next")


def test_a_second_labeler_on_a_phone(demo_server: Server) -> None:
    """Taps, no keyboard, a narrow screen; never served the first labeler's finished task
    when the prompt needs only one ranking."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(
            viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
        )
        log_in(page, demo_server, "labeler2@demo.local", "demo-labeler")
        page.wait_for_url("**/home")
        page.goto(f"{demo_server.url}/projects/1/rank")
        page.wait_for_selector("#rank-form")
        seen = prompt_text(page)
        for place, answer in enumerate(page.locator(".answer").all(), start=1):
            answer.locator(f".rank-choice:has-text('{place}')").tap()
        shot(page, "labeling-rank-phone")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways ({width}px)"
        page.locator("[data-submit]").tap()
        page.wait_for_selector(".toast:has-text('Ranking saved.')")
        assert prompt_text(page) != seen
        browser.close()


def log_out(page) -> None:  # type: ignore[no-untyped-def]
    page.click("form[action='/logout'] button")
    page.wait_for_url("**/login")


def test_agreement_after_two_labelers_rank(page, demo_server: Server) -> None:  # type: ignore[no-untyped-def]
    """Two labelers rank a few prompts by clicking; the admin's dashboard then shows real
    figures (not "not enough data"), sorts its labeler table with htmx and opens a
    labeler's rankings beside the other's."""
    for email in ("labeler2@demo.local", "labeler3@demo.local"):
        log_in(page, demo_server, email, "demo-labeler")
        page.wait_for_url("**/home")
        page.goto(f"{demo_server.url}/projects/1/rank")
        for _ in range(3):
            page.wait_for_selector("#rank-form")
            seen = prompt_text(page)
            for place, answer in enumerate(page.locator(".answer").all(), start=1):
                answer.locator(f".rank-choice:has-text('{place}')").click()
            page.locator("[data-submit]").click()
            page.wait_for_function(
                "seen => document.querySelector('.prompt-text')?.innerText.trim() !== seen",
                arg=seen,
            )
        log_out(page)

    log_in(page, demo_server, "admin@demo.local", "demo-admin")
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/projects/1")
    page.get_by_role("link", name="Agreement").click()
    page.wait_for_url("**/agreement")
    card = page.locator(".metric", has_text="Pairwise agreement").first
    value = card.locator(".metric-value").inner_text()
    assert re.fullmatch(r"\d+\.\d%", value), value  # a real figure
    assert "95% interval" in card.inner_text() or "pairs" in card.inner_text()
    assert page.locator("svg.chart-line").count() == 1
    shot(page, "agreement-dashboard")

    # Sort by time per task (htmx swaps the table only), then open a labeler.
    page.locator("th a", has_text="Time").click()
    page.wait_for_selector("th[aria-sort] a:has-text('Time')")
    assert "/agreement" in page.url
    page.locator("table.table-labelers tbody a").first.click()
    page.wait_for_url("**/agreement/labeler?key=*")
    assert page.locator("th", has_text="This labeler").count() >= 1
    shot(page, "agreement-labeler")


def test_an_export_of_the_demo_downloads(page, demo_server: Server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The admin starts a pairwise export of the demo, the real worker writes it, and the
    file downloads from the export's page with the rows of the rankings made so far."""
    import json

    # One ranking, so the export has rows whatever ran before.
    log_in(page, demo_server, "labeler1@demo.local", "demo-labeler")
    page.wait_for_url("**/home")
    page.goto(f"{demo_server.url}/projects/1/rank")
    page.wait_for_selector("#rank-form")
    seen = prompt_text(page)
    for place, answer in enumerate(page.locator(".answer").all(), start=1):
        answer.locator(f".rank-choice:has-text('{place}')").click()
    page.locator("[data-submit]").click()
    page.wait_for_function(
        "seen => document.querySelector('.prompt-text')?.innerText.trim() !== seen", arg=seen
    )
    log_out(page)

    log_in(page, demo_server, "admin@demo.local", "demo-admin")
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/projects/1")
    page.get_by_role("link", name="Exports").click()
    page.wait_for_url("**/exports")
    page.select_option("select[name=kind]", "pairwise")
    page.fill("input[name=validation_pct]", "0")
    page.get_by_role("button", name="Start export").click()
    page.wait_for_url("**/admin/jobs/*")
    page.locator("#job-status").get_by_text("succeeded", exact=True).wait_for(timeout=120_000)
    page.goto(f"{demo_server.url}/admin/projects/1/exports")
    page.locator("table a", has_text="pairwise").first.click()
    page.wait_for_url("**/admin/exports/*")
    shot(page, "export-detail")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="manifest.json").click()
    manifest = json.loads(Path(download_info.value.path()).read_text())
    assert manifest["kind"] == "pairwise" and manifest["project"]["id"] == 1
    with page.expect_download() as download_info:
        page.get_by_role("link", name="train.jsonl").click()
    lines = Path(download_info.value.path()).read_text().splitlines()
    assert len(lines) == manifest["counts"]["train"] >= 6  # a ranking of 4 gives 6 pairs
    assert all({"prompt", "chosen", "rejected"} <= set(json.loads(line)) for line in lines)


def test_a_failed_training_job_says_why_first_with_the_traceback_folded(
    page, demo_server: Server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """An admin starts an RM job on a project nobody ranked in yet: the job page says so in
    plain words, and the traceback is there only when "Technical details" is opened."""
    (tmp_path / "not-a-model").mkdir()
    created = rlhf(demo_server.env, "projects", "create", "Nothing ranked yet")
    assert created.returncode == 0, created.stderr
    started = rlhf(demo_server.env, "train", "rm", created.stdout.strip(), "--base",
                   str(tmp_path / "not-a-model"))  # fmt: skip
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.split()[1]
    log_in(page, demo_server, "admin@demo.local", "demo-admin")
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/jobs/{job_id}")
    status = page.locator("#job-status")
    status.get_by_text("failed", exact=True).wait_for(timeout=90_000)
    alert = page.get_by_role("alert")
    message = alert.locator(".job-error-message").inner_text()
    assert message.startswith("Failed:") and "Error:" not in message, message
    assert "no rankings to train a reward model on: rank some answers first" in message
    traceback = alert.locator(".job-error-detail pre")
    assert not traceback.is_visible()  # folded
    alert.get_by_text("Technical details").click()
    assert traceback.is_visible() and "Traceback" in traceback.inner_text()
    shot(page, "job-failed")
