"""A newcomer's first minutes in a real browser (Debian's Chromium driven by Playwright):
the demo served by `rlhf serve --with-worker`, exactly as `make run` starts it."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from app.labeling.models import Comparison, Prompt
from tests.browser import BROWSER_MARKS, log_in, log_out, prompt_text, server_session, shot
from tests.processes import Server, rlhf

pytestmark = BROWSER_MARKS


def demo_card(page):  # type: ignore[no-untyped-def]
    """The demo project's card on the home page (other tests' projects are listed too)."""
    return page.locator("li:has(a[href='/projects/1/guidelines'])")


def test_wrong_password_then_labeler_home(page, demo_server: Server) -> None:  # type: ignore[no-untyped-def]
    log_in(page, demo_server, "labeler1@demo.local", "not-the-password")
    assert page.get_by_role("alert").inner_text() == "Wrong email or password."
    log_in(page, demo_server, "labeler1@demo.local", "demo-labeler")
    page.wait_for_url("**/home")
    assert "Welcome back" in page.inner_text("h1")
    assert page.get_by_text("Everyday assistant (demo)").is_visible()
    demo_card(page).get_by_role("link", name="Read the guidelines").click()
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


def test_a_labelers_session_with_the_keyboard(page, demo_server: Server) -> None:  # type: ignore[no-untyped-def]
    log_in(page, demo_server, "labeler1@demo.local", "demo-labeler")
    page.wait_for_url("**/home")

    # Write a demonstration; the draft survives a reload.
    demo_card(page).get_by_role("link", name=re.compile("Write demonstrations")).click()
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
    # Each key does one thing: J/K select an answer, a number gives it that place.
    page.keyboard.press("2")  # A (selected first) second
    page.keyboard.press("j")  # B
    page.keyboard.press("1")  # B first
    page.keyboard.press("j")  # C
    page.keyboard.press("3")
    page.keyboard.press("j")  # D
    page.keyboard.press("3")  # D ties with C
    assert page.inner_text("#rank-order").split() == ["B", "A", "C", "=", "D"]
    answer_b = page.locator(".answer").nth(1)
    answer_b.focus()
    page.keyboard.press("Shift+Digit6")  # rate B 6/7, folded line says so
    assert "rated 6/7" in answer_b.locator(".answer-extra summary").inner_text()
    answer_b.locator(".answer-extra summary").click()
    answer_b.locator("input[type=checkbox]").first.check()  # flag B
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


def test_a_second_labeler_on_a_phone(phone, demo_server: Server) -> None:  # type: ignore[no-untyped-def]
    """Taps, no keyboard, a narrow screen; never served the first labeler's finished task
    when the prompt needs only one ranking."""
    page = phone
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

    # An AI judge (as `rlhf judge` stores it) ranks the prompts they ranked, in the order of
    # the last of them: listed apart, never in the labeler table.
    with server_session(demo_server) as session:
        judged: set[int] = set()
        for c in session.scalars(
            select(Comparison)
            .join(Prompt, Prompt.id == Comparison.prompt_id)
            .where(Prompt.project_id == 1, Comparison.labeler_id.is_not(None))
            .where(Comparison.is_latest.is_(True), Comparison.not_rankable.is_(False))
            .order_by(Comparison.id.desc())
        ):
            if c.prompt_id not in judged:
                judged.add(c.prompt_id)
                session.add(
                    Comparison(
                        prompt_id=c.prompt_id, labeler_external="ai:browser-judge",
                        displayed_completion_ids=c.displayed_completion_ids, ranking=c.ranking,
                    )
                )  # fmt: skip

    log_in(page, demo_server, "admin@demo.local", "demo-admin")
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/projects/1")
    page.get_by_role("link", name="Agreement").click()
    page.wait_for_url("**/agreement")
    ai = page.locator("section[aria-labelledby=ai-title]")
    assert ai.get_by_role("heading", name="AI judges").is_visible()
    assert ai.locator("td", has_text="ai:browser-judge").is_visible()
    assert page.locator("table.table-labelers", has_text="browser-judge").count() == 0
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
