"""The layout at the sizes people use, measured in a real browser: on a 1280px laptop the
admin tables fit their panels, menus show their whole choice, paths wrap only after a slash
and the sticky header hides what scrolls under it; on a 390x844 phone the header stays small
and scrolls away, leaving the screen to the task, with every link still there.

The module works on a project, a labeler and a model of its own (made in the server's
database), so nothing depends on what other browser tests did with the demo."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.models import Role
from app.auth.service import create_api_token, create_user
from app.models_registry.models import ModelKind
from app.models_registry.service import register_model
from tests.browser import BROWSER_MARKS, log_in, ranking_project, server_session, shot
from tests.processes import Server

pytestmark = BROWSER_MARKS

PROMPTS = [
    (
        "My sourdough starter smells like nail polish remover. Is it ruined?",
        [
            "No. That acetone smell means the yeast is hungry: discard most of it and feed it twice a day with equal weights of flour and water for a few days.",
            "Yes, throw it away and start again; a bad smell always means mould.",
            "Starters smell of many things. Bake with it anyway and see what happens to the loaf.",
            "It is hungry, not ruined. Feed it more often (or keep it in the fridge between bakes) and the smell fades once it is active again.",
        ],
    ),
    (
        "How long should I rest a steak after cooking it?",
        [
            "About five minutes for a thin steak, up to ten for a thick one, loosely covered.",
            "Resting is a myth; cut it straight away.",
            "Half as long as you cooked it is a good rule of thumb.",
            "Rest it on a warm plate for 5 to 10 minutes so the juices settle.",
        ],
    ),
    (
        "Can I freeze cooked rice, and how do I reheat it safely?",
        [
            "Yes. Cool it quickly (within an hour), freeze it flat in a bag, and reheat it until it is steaming hot all the way through; eat it within a month.",
            "No, cooked rice must never be frozen.",
            "Yes, and you can reheat it as often as you like.",
            "Yes: spread it out to cool, freeze it in portions, then microwave it with a splash of water until piping hot, and reheat it only once.",
        ],
    ),
]  # fmt: skip
# A realistic long name: before a fix it did not wrap, and it widened the labeler table.
LABELER_NAME = "Alexandra Konstantinopoulou"
LABELER_EMAIL = "layout@browser.test"
LABELER_PASSWORD = "layout-labeler-pw"
RANKED = 2  # of the three prompts; the third waits on the rank page


@pytest.fixture(scope="module")
def project(demo_server: Server, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A project of three K=4 prompts, two of them ranked through the API by a labeler of its
    own (so the agreement page has a labeler table); the third is left for the rank page."""
    project = ranking_project(demo_server, tmp_path_factory.mktemp("layout"), "Layout", PROMPTS)
    with server_session(demo_server) as session:
        user = create_user(
            session=session, email=LABELER_EMAIL, password=LABELER_PASSWORD,
            role=Role.labeler, display_name=LABELER_NAME,
        )  # fmt: skip
        token = create_api_token(session=session, user=user, name="layout test")[1]
    with httpx.Client(
        base_url=f"{demo_server.url}/api/v1", headers={"Authorization": f"Bearer {token}"}
    ) as api:
        for _ in range(RANKED):
            task = api.post(f"/projects/{project}/tasks/next", json={"kind": "rank"}).json()
            ranking = [[answer["id"]] for answer in task["completions"]]
            submitted = api.post(f"/tasks/{task['task_id']}/submit", json={"ranking": ranking})
            assert submitted.status_code == 201, submitted.text
    return project


def overflow(page: Any, scroller: str) -> dict[str, float]:
    """How far the scroller's content reaches past its box, and its last header's right edge
    against the scroller's own (clipped where it is beyond)."""
    return dict(
        page.eval_on_selector(
            scroller,
            """w => ({
                past: w.scrollWidth - w.clientWidth,
                lastHeader: w.querySelector('th:last-child').getBoundingClientRect().right,
                box: w.getBoundingClientRect().right,
            })""",
        )
    )


def test_the_agreement_labeler_table_fits_a_laptop_screen(
    page: Any, demo_server: Server, project: int
) -> None:
    log_in(page, demo_server, "admin@demo.local", "demo-admin")
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/projects/{project}/agreement")
    page.wait_for_selector("table.table-labelers")
    assert page.locator("table.table-labelers tbody tr", has_text=LABELER_NAME).count() == 1
    shot(page, "layout-agreement")
    sizes = overflow(page, "#labeler-table")
    assert sizes["past"] <= 0, f"the labeler table is clipped by {sizes['past']}px at 1280px"
    assert sizes["lastHeader"] <= sizes["box"], sizes  # "Last ranking" in view


# Chromium draws a menu's arrow inside its content box, beside the chosen option's text.
ARROW = 16
MENU_ROOM = """(menus, arrow) => menus.map(s => {
    const style = getComputedStyle(s);
    const ctx = document.createElement('canvas').getContext('2d');
    ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
    return {
        room: s.clientWidth - padding - arrow,
        widest: Math.max(...Array.from(s.options, o => ctx.measureText(o.text).width)),
    };
})"""
# Each element's text and its lines as rendered (a character's line: the top of its box).
RENDERED_LINES = """els => els.map(el => {
    const lines = [];
    let top = null;
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            const charTop = Math.round(range.getBoundingClientRect().top);
            if (charTop !== top) { lines.push(''); top = charTop; }
            lines[lines.length - 1] += node.data[i];
        }
    }
    return {text: el.textContent, lines};
})"""


def test_the_models_table_shows_whole_project_names_and_paths_break_between_words(
    page: Any, demo_server: Server, project: int, tmp_path: Path
) -> None:
    folder = tmp_path / "checkpoints" / "everyday-assistant-sft-2025-03-run-2"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with server_session(demo_server) as session:
        model = register_model(session=session, path=str(folder), kind=ModelKind.sft)
        model_id, path = model.id, model.path

    log_in(page, demo_server, "admin@demo.local", "demo-admin")
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/models")
    page.wait_for_selector(f"#model-{model_id}")
    shot(page, "layout-models")
    sizes = overflow(page, ".table-wrap")
    assert sizes["past"] <= 0, f"the models table is clipped by {sizes['past']}px at 1280px"

    menus = page.eval_on_selector_all("select[name=project_id]", MENU_ROOM, ARROW)
    assert menus, "no promote menu"
    for menu in menus:
        assert menu["room"] >= menu["widest"], f"a project name is cut in its menu: {menu}"

    paths = {p["text"]: p["lines"] for p in page.eval_on_selector_all("table tbody code", RENDERED_LINES)}  # fmt: skip
    assert len(paths[path]) > 1, paths[path]  # long enough to wrap: the check is real
    for text, lines in paths.items():  # after a slash, or a hyphen of a folder name too long
        for line in lines[:-1]:
            assert line.endswith(("/", "-")), f"{text!r} breaks inside a word: {lines}"


def alpha(css_color: str) -> float:
    """The opacity of a computed color, "rgb(...)" or "rgba(...)"."""
    channels = re.findall(r"[\d.]+", css_color)
    return float(channels[3]) if len(channels) == 4 else 1.0


def test_the_sticky_header_hides_what_scrolls_under_it(
    page: Any, demo_server: Server, project: int
) -> None:
    log_in(page, demo_server, "admin@demo.local", "demo-admin")
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/projects/{project}/agreement")
    page.evaluate("window.scrollTo(0, 600)")
    header = page.eval_on_selector(
        ".topbar",
        "h => ({top: h.getBoundingClientRect().top, color: getComputedStyle(h).backgroundColor})",
    )
    assert header["top"] == 0  # still sticky on a laptop
    assert alpha(header["color"]) == 1, f"content shows through the header ({header['color']})"


def scrolled_away(page: Any) -> bool:
    """Whether the header leaves the screen once the page scrolls past it."""
    page.evaluate("window.scrollTo(0, 200)")  # more than the header's height
    return bool(page.eval_on_selector(".topbar", "h => h.getBoundingClientRect().bottom <= 0"))


def test_on_a_phone_the_header_is_one_short_row_that_scrolls_away(
    phone: Any, demo_server: Server, project: int
) -> None:
    log_in(phone, demo_server, LABELER_EMAIL, LABELER_PASSWORD)
    phone.wait_for_url("**/home")
    phone.goto(f"{demo_server.url}/projects/{project}/rank")
    phone.wait_for_selector("#rank-form")
    shot(phone, "layout-rank-phone", full_page=False)
    height = phone.eval_on_selector(".topbar", "h => h.getBoundingClientRect().height")
    assert height <= 56, f"the header takes {height}px of the phone's 844"
    assert phone.get_by_role("link", name="Label").is_visible()
    assert phone.get_by_role("button", name="Log out").is_visible()
    assert scrolled_away(phone), "the header stays on screen while the labeler scrolls"


def test_on_a_phone_an_admin_keeps_every_link_and_the_header_scrolls_away(
    phone: Any, demo_server: Server, project: int
) -> None:
    log_in(phone, demo_server, "admin@demo.local", "demo-admin")
    phone.wait_for_url("**/admin")
    phone.goto(f"{demo_server.url}/admin/projects/{project}/agreement")  # a long page
    links = phone.eval_on_selector_all(
        ".mainnav a",
        "as => as.map(a => [a.textContent.trim(), a.getBoundingClientRect().left, a.getBoundingClientRect().right])",
    )
    assert [name for name, _, _ in links] == ["Label", "Overview", "Jobs", "Models", "Users"]
    for name, left, right in links:
        assert left >= 0 and right <= 390, f"{name} is off the screen ({left}..{right})"
    assert scrolled_away(phone), "the header stays on screen while the admin scrolls"
