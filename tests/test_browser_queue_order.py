"""Choosing a project's queue order in a real browser (design §14): the edit page's select,
the note that `uncertain` waits for `rlhf score`, a wrong max overlap shown next to its field,
and the saved order on the project page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.auth.models import Role
from app.auth.service import create_user
from app.projects.models import Project
from tests.browser import BROWSER_MARKS, log_in, ranking_project, server_session, shot
from tests.processes import Server

pytestmark = BROWSER_MARKS
ADMIN_PASSWORD = "browser-queue-admin-pw"

PROMPTS = [
    ("Which river is longest?", ["The Nile.", "The Amazon.", "The Thames.", "The Rhine."]),
    ("Which metal is lightest?", ["Lithium.", "Lead.", "Gold.", "Iron."]),
]


def test_an_admin_chooses_the_queue_order_on_the_edit_page(
    page: Any, demo_server: Server, tmp_path: Path
) -> None:
    project_id = ranking_project(demo_server, tmp_path, "Queue order path", PROMPTS)
    with server_session(demo_server) as session:
        create_user(
            session=session, email="queue-admin@browser.test", password=ADMIN_PASSWORD,
            role=Role.admin,
        )  # fmt: skip

    log_in(page, demo_server, "queue-admin@browser.test", ADMIN_PASSWORD)
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/projects/{project_id}/edit")
    order = page.get_by_label("Queue order")
    assert order.input_value() == "oldest"
    # No answer is scored yet: the page says what `uncertain` does until then.
    assert "serves oldest first until" in page.inner_text("#queue-order-unscored")
    page.locator("#queue-title").scroll_into_view_if_needed()
    shot(page, "project-queue-order", full_page=False)

    order.select_option(label="More rankings where labelers disagree")
    page.locator("input[name='overlap']").fill("3")
    page.get_by_label("Max overlap").fill("2")
    page.get_by_label("Disagreement threshold").fill("0.25")
    page.get_by_role("button", name="Save changes").click()
    error = page.locator("#max_overlap-error")
    error.wait_for()
    assert error.inner_text() == "Max overlap must be at least the overlap (3), not 2."
    assert page.get_by_label("Queue order").input_value() == "disagreement"  # kept as chosen

    page.get_by_label("Max overlap").fill("5")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"**/admin/projects/{project_id}?saved=updated")
    assert page.inner_text("#queue-order") == (
        "More rankings where labelers disagree (up to 5 above 0.25)"
    )
    with server_session(demo_server) as session:
        project = session.get_one(Project, project_id)
        assert (project.queue_order, project.overlap, project.max_overlap) == ("disagreement", 3, 5)
        assert project.disagreement_threshold == 0.25

    # And back to the reward model's most uncertain first, the max overlap left blank.
    page.goto(f"{demo_server.url}/admin/projects/{project_id}/edit")
    page.get_by_label("Queue order").select_option("uncertain")
    page.get_by_label("Max overlap").fill("")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"**/admin/projects/{project_id}?saved=updated")
    assert page.inner_text("#queue-order") == "Most uncertain first"
    with server_session(demo_server) as session:
        project = session.get_one(Project, project_id)
        assert (project.queue_order, project.max_overlap) == ("uncertain", None)
