"""Review in a real browser (design §13): an admin walks a labeler's rankings on the review
page with the keyboard, accepts one (A), rejects the next with a note (R, type, Enter), and the
labeler then reads the note on their home page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.auth.models import Role, User
from app.auth.service import create_user
from app.labeling.models import Prompt
from app.review.models import Review, Verdict
from tests.browser import BROWSER_MARKS, labeler, log_in, log_out, ranking_project, server_session
from tests.helpers import rank
from tests.processes import Server

pytestmark = BROWSER_MARKS
ADMIN_PASSWORD = "browser-reviewer-pw"
NOTE = "Facts first: <the> second answer is wrong."

PROMPTS = [
    ("Which planet is largest?", ["Jupiter.", "Mars.", "Saturn is.", "Earth."]),
    ("Which ocean is deepest?", ["The Pacific.", "The Atlantic.", "Lake Baikal.", "The Arctic."]),
]


def test_an_admin_rejects_with_the_keyboard_and_the_labeler_reads_the_note(
    page: Any, demo_server: Server, tmp_path: Path
) -> None:
    project = ranking_project(demo_server, tmp_path, "Review path", PROMPTS)
    password = labeler(demo_server, "reviewed@browser.test")
    with server_session(demo_server) as session:
        create_user(
            session=session, email="reviewer@browser.test", password=ADMIN_PASSWORD,
            role=Role.admin,
        )  # fmt: skip
        ann = session.scalar(select(User).where(User.email == "reviewed@browser.test"))
        assert ann is not None
        prompts = session.scalars(
            select(Prompt).where(Prompt.project_id == project).order_by(Prompt.id)
        ).all()
        ranked = [rank(session, prompt, ann, [0, 1, 2, 3]).id for prompt in prompts]

    log_in(page, demo_server, "reviewer@browser.test", ADMIN_PASSWORD)
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/projects/{project}")
    page.get_by_role("link", name="Review", exact=True).click()
    page.wait_for_url(f"**/admin/projects/{project}/review")
    # Newest first: the second prompt's ranking, then the first's.
    page.wait_for_selector(f'[data-review-item="comparison-{ranked[1]}"]')
    assert "1 of 2" in page.inner_text("#review-title")
    page.keyboard.press("a")
    page.wait_for_selector(f'[data-review-item="comparison-{ranked[0]}"]')
    assert "1 of 1" in page.inner_text("#review-title")
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.name") == "note"
    page.keyboard.type(NOTE)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Nothing to review with these filters.")

    with server_session(demo_server) as session:
        verdicts = {
            r.comparison_id: (r.verdict, r.note)
            for r in session.scalars(select(Review).where(Review.comparison_id.in_(ranked)))
        }
    assert verdicts == {ranked[1]: (Verdict.accepted, None), ranked[0]: (Verdict.rejected, NOTE)}

    log_out(page)
    log_in(page, demo_server, "reviewed@browser.test", password)
    page.wait_for_url("**/home")
    section = page.locator("section[aria-labelledby='rejected-title']")
    assert section.is_visible()
    text = section.inner_text()
    assert NOTE in text  # as text: "<the>" is not a tag
    assert "Which planet is largest?" in text and "Which ocean is deepest?" not in text
