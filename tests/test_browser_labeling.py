"""The labeler's path in a real browser, where a new user trips: the keys of the rank page,
errors of in-page actions, the shortcut list, dragging, right-to-left text, restored drafts,
the demonstration queue and how much of a task fits on a laptop screen.

Each test works on a project and a labeler of its own (made in the server's database), so
nothing depends on what other browser tests did with the demo."""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.auth.models import User
from app.demo.content import DEMO_PROMPTS
from app.exports.options import ExportOptions
from app.exports.rows import pairwise_rows
from app.labeling.models import Completion, Demonstration
from app.projects.models import Project
from tests.browser import (
    BROWSER_MARKS,
    labeler,
    log_in,
    log_out,
    prompt_text,
    ranking_project,
    server_session,
    shot,
)
from tests.processes import Server

pytestmark = BROWSER_MARKS
README = Path(__file__).resolve().parents[1] / "README.md"

SHORT = [
    (
        "How do I boil an egg so the yolk stays soft?",
        [
            "Put the egg in boiling water for six minutes, then cool it in cold water.",
            "Boil it for about 12 minutes until it is firm all the way through.",
            "Eggs can be cooked in many ways, such as frying, poaching or scrambling.",
            "Lower the egg into simmering water, cook 6 to 7 minutes, then chill it in ice water so it stops cooking.",
        ],
    ),
    (
        "Name a prime number between 10 and 20.",
        ["13 is prime.", "15.", "Both 11 and 17 are primes in that range.", "20."],
    ),
    (
        "What is the capital of Australia?",
        ["Sydney.", "Canberra.", "Canberra, since 1913.", "Melbourne was the capital once."],
    ),
]  # fmt: skip
_numbers = count(1)


@pytest.fixture
def newcomer(demo_server: Server, tmp_path: Path) -> Iterator[tuple[int, str, str]]:
    """A project of three short K=4 prompts and a labeler nobody else uses."""
    n = next(_numbers)
    project = ranking_project(demo_server, tmp_path, f"Labeling path {n}", SHORT)
    email = f"path{n}@browser.test"
    yield project, email, labeler(demo_server, email)


def open_rank_page(page: Any, server: Server, newcomer: tuple[int, str, str]) -> None:
    project, email, password = newcomer
    log_in(page, server, email, password)
    page.wait_for_url("**/home")
    page.goto(f"{server.url}/projects/{project}/rank")
    page.wait_for_selector("#rank-form")


def places(page: Any) -> dict[str, str | None]:
    """Each answer's letter -> its place as the form would send it (None: no place)."""
    return dict(
        page.evaluate(
            """() => Array.from(document.querySelectorAll('.answer')).map(a => [
                a.dataset.letter,
                a.querySelector('input[name^=rank_]:checked')?.value ?? null])"""
        )
    )


def test_keys_do_what_the_readme_says(page, demo_server: Server, newcomer) -> None:  # type: ignore[no-untyped-def]
    """The README's own example, typed literally: each key does one thing."""
    example = re.search(r"So `([^`]+)` ranks (A \w+, B \w+, C \w+ and D \w+)", README.read_text())
    assert example, "the README's keyboard example is gone"
    keys = example.group(1).split()
    words = {"first": "1", "second": "2", "third": "3", "fourth": "4"}
    expected = {
        letter: words[word] for letter, word in re.findall(r"([ABCD]) (\w+)", example.group(2))
    }
    open_rank_page(page, demo_server, newcomer)
    for key in keys:
        page.keyboard.press(key.lower() if key.isalpha() else key)
    assert places(page) == expected
    assert page.inner_text("#rank-order").split() == ["A", "C", "B", "D"]
    page.keyboard.press("0")  # clears the selected answer (D) only
    assert places(page) == {**expected, "D": None}
    assert "Still to place: D" in page.inner_text(".rank-summary")
    # The page's own hint and the shortcut list say the same.
    assert "the selection stays" in page.text_content(".shortcuts-panel")
    assert "gives the selected answer that place" in page.inner_text(".hint")


def test_a_refused_submit_says_why_where_the_labeler_acted(
    page, demo_server: Server, newcomer
) -> None:  # type: ignore[no-untyped-def]
    open_rank_page(page, demo_server, newcomer)
    for place, answer in enumerate(page.locator(".answer").all(), start=1):
        answer.locator(f".rank-choice:has-text('{place}')").click()
    page.locator("[data-submit]").click()
    page.wait_for_selector(".toast:has-text('Ranking saved.')")

    # An incomplete ranking: the server's reason, in the alert region by the Submit button,
    # and the green "saved" banner of the last task is gone.
    seen = prompt_text(page)
    page.locator(".answer").first.locator(".rank-choice:has-text('1')").click()
    page.locator("[data-submit]").click()
    alert = page.locator("#rank-form [role=alert]")
    alert.get_by_text("answers B, C and D have none yet").wait_for()
    assert page.locator(".toast").count() == 0
    assert alert.is_visible() and alert.evaluate(
        "el => { const r = el.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }"
    )
    assert prompt_text(page) == seen and places(page)["A"] == "1"  # nothing lost
    shot(page, "labeling-rank-refused", full_page=False)

    # Ctrl+Enter says the same; so does a ranking with nothing placed.
    page.locator(".answer").nth(1).focus()
    page.keyboard.press("2")
    page.keyboard.press("Control+Enter")
    alert.get_by_text("answers C and D have none yet").wait_for()

    # A server error and a lost connection are shown there too, and lose nothing.
    page.route("**/tasks/*/rank", lambda route: route.fulfill(status=500, body="boom"))
    page.locator("[data-submit]").click()
    alert.get_by_text("The server had a problem with that request (500)").wait_for()
    page.unroute("**/tasks/*/rank")
    page.route("**/tasks/*/rank", lambda route: route.abort())
    page.locator("[data-submit]").click()
    alert.get_by_text("The server cannot be reached").wait_for()
    page.unroute("**/tasks/*/rank")
    # A refusal with a reason of its own (an expired form: the CSRF token no longer holds).
    page.evaluate(
        """() => { document.body.setAttribute('hx-headers', '{"X-CSRF-Token": "stale"}');
                   document.querySelector('#rank-form [name=csrf_token]').value = 'stale'; }"""
    )
    page.locator("[data-submit]").click()
    alert.get_by_text("This form has expired or did not come from this site").wait_for()
    assert places(page)["B"] == "2"


def test_a_blank_demonstration_is_refused_in_words(page, demo_server: Server, newcomer) -> None:  # type: ignore[no-untyped-def]
    project, email, password = newcomer
    log_in(page, demo_server, email, password)
    page.wait_for_url("**/home")
    page.goto(f"{demo_server.url}/projects/{project}/demonstrate")
    page.wait_for_selector("#demo-text")
    page.fill("#demo-text", "   \n  ")
    page.keyboard.press("Control+Enter")
    alert = page.locator("#demo-form [role=alert]")
    alert.wait_for()
    assert "demonstration" in alert.inner_text().lower() and "empty" in alert.inner_text().lower()
    assert page.locator("#demo-text").is_visible()


def test_the_shortcut_list_closes_and_never_blocks_a_click(
    page, demo_server: Server, newcomer
) -> None:  # type: ignore[no-untyped-def]
    open_rank_page(page, demo_server, newcomer)
    panel = page.locator(".shortcuts-panel")
    page.get_by_text("Shortcuts", exact=True).click()
    assert panel.is_visible()
    page.keyboard.press("Escape")
    assert not panel.is_visible()
    page.get_by_text("Shortcuts", exact=True).click()
    page.locator("main").click(position={"x": 5, "y": 5})  # somewhere else
    assert not panel.is_visible()
    # Open, then a click on the answer buttons it covers reaches them (and closes it).
    page.get_by_text("Shortcuts", exact=True).click()
    covered = page.locator(".answer").nth(1).locator(".rank-choice:has-text('2')")
    box = covered.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert places(page)["B"] == "2"
    assert not panel.is_visible()


def test_dragging_keeps_ties_as_the_hint_says(page, demo_server: Server, newcomer) -> None:  # type: ignore[no-untyped-def]
    open_rank_page(page, demo_server, newcomer)
    for letter, place in zip("ABCD", "1233", strict=True):
        page.locator(f".answer[data-letter={letter}] .rank-choice:has-text('{place}')").click()
    assert page.inner_text("#rank-order").split() == ["A", "B", "C", "=", "D"]
    hint = page.locator("[data-drag-hint]")
    assert hint.is_visible() and "tied answers move together" in hint.inner_text()
    # The tie C = D dragged to the front: it moves as one, still a tie.
    drag(page, "C = D", onto="A", side="left")
    assert page.inner_text("#rank-order").split() == ["C", "=", "D", "A", "B"]
    assert places(page) == {"C": "1", "D": "1", "A": "2", "B": "3"}
    # One answer dragged behind another.
    drag(page, "A", onto="B", side="right")
    assert page.inner_text("#rank-order").split() == ["C", "=", "D", "B", "A"]
    assert places(page) == {"C": "1", "D": "1", "B": "2", "A": "3"}


def drag(page: Any, chip: str, *, onto: str, side: str) -> None:
    """Drags the chip of "Your ranking" reading `chip` to the left or right edge of another,
    with the mouse, as a person does."""
    source = page.locator(".rank-chip", has_text=re.compile(f"^{re.escape(chip)}$")).bounding_box()
    target = page.locator(".rank-chip", has_text=re.compile(f"^{re.escape(onto)}$")).bounding_box()
    page.mouse.move(source["x"] + source["width"] / 2, source["y"] + source["height"] / 2)
    page.mouse.down()
    x = target["x"] + (3 if side == "left" else target["width"] - 3)
    page.mouse.move(x, target["y"] + target["height"] / 2, steps=8)
    page.mouse.up()


RTL_PROMPT = "Translate into English, please:\n\nمرحبا بكم في المكتبة. نفتح في الساعة التاسعة."  # noqa: RUF001


def test_right_to_left_text_reads_right_to_left(page, demo_server: Server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A name with a RIGHT-TO-LEFT OVERRIDE must not reverse the page's text after it.
    project = ranking_project(
        demo_server, tmp_path, "Bidi \u202eoverride", [(RTL_PROMPT, ["Welcome.", "أهلا", "Hi", "שלום"])]
    )  # fmt: skip
    email = "rtl@browser.test"
    log_in(page, demo_server, email, labeler(demo_server, email))
    page.wait_for_url("**/home")
    page.goto(f"{demo_server.url}/projects/{project}/rank")
    page.wait_for_selector("#rank-form")
    directions = page.eval_on_selector_all(
        ".prompt-text p", "ps => ps.map(p => getComputedStyle(p).direction)"
    )
    assert directions == ["ltr", "rtl"]  # per paragraph
    answer_dirs = page.eval_on_selector_all(
        ".answer-body p", "ps => ps.map(p => [p.innerText, getComputedStyle(p).direction])"
    )
    assert dict(answer_dirs) == {"Welcome.": "ltr", "أهلا": "rtl", "Hi": "ltr", "שלום": "rtl"}
    shot(page, "labeling-rank-rtl", full_page=False)
    # A demonstration typed in Arabic is laid out right to left as it is typed.
    page.goto(f"{demo_server.url}/projects/{project}/demonstrate")
    page.wait_for_selector("#demo-text")
    page.fill("#demo-text", "مرحبا")
    assert page.eval_on_selector("#demo-text", "el => getComputedStyle(el).direction") == "rtl"
    # The page's own words after the name (inline, in the same sentence) still read left to
    # right: the override the name opens is closed where the name ends.
    log_out(page)
    log_in(page, demo_server, "admin@demo.local", "demo-admin")
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/projects/{project}/import")
    assert reads_left_to_right(page, "main", "from a JSON Lines or CSV file")


def reads_left_to_right(page: Any, within: str, words: str) -> bool:
    """Whether `words` (page text under `within`) are laid out left to right on screen."""
    return bool(
        page.evaluate(
            """([within, words]) => {
              const walker = document.createTreeWalker(document.querySelector(within), NodeFilter.SHOW_TEXT);
              for (let node; (node = walker.nextNode());) {
                const at = node.data.indexOf(words);
                if (at < 0) continue;
                const x = (i) => { const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1);
                                   return r.getBoundingClientRect().left; };
                return x(at) < x(at + words.length - 1);
              }
              throw new Error("not on the page: " + words);
            }""",
            [within, words],
        )
    )


def test_a_restored_draft_is_saved_on_the_server_at_once(
    page, demo_server: Server, newcomer
) -> None:  # type: ignore[no-untyped-def]
    project, email, password = newcomer
    log_in(page, demo_server, email, password)
    page.wait_for_url("**/home")
    page.goto(f"{demo_server.url}/projects/{project}/demonstrate")
    page.wait_for_selector("#demo-text")
    # Typed while the server cannot be reached: only this browser has the text.
    page.route("**/draft", lambda route: route.abort())
    page.fill("#demo-text", "Six minutes in boiling water, then cold water.")
    page.get_by_text("The server cannot be reached").wait_for()
    page.unroute("**/draft")
    page.reload()
    # the page's script restores the draft once it runs (deferred: later on a busy machine)
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.value === text",
        arg=["#demo-text", "Six minutes in boiling water, then cold water."],
    )
    # No keystroke: the restored text reaches the server by itself.
    page.wait_for_selector("#draft-status:has-text('Draft saved')")
    page.evaluate("localStorage.clear()")
    page.reload()
    page.wait_for_selector("#demo-text")
    assert page.input_value("#demo-text") == "Six minutes in boiling water, then cold water."


def test_the_demonstration_queue_serves_unanswered_prompts_first(
    page, demo_server: Server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Every prompt without a demonstration is in the queue (the count on the home page),
    and those with nothing to rank come first."""
    ranking_project(
        demo_server, tmp_path, "Demonstrations first",
        [*SHORT[:2], ("Write a haiku about rain.", []), ("Explain DNS to a child.", [])],
    )  # fmt: skip
    email = "demos@browser.test"
    log_in(page, demo_server, email, labeler(demo_server, email))
    page.wait_for_url("**/home")
    card = page.locator(".card", has_text="Demonstrations first")
    link = card.get_by_role("link", name=re.compile("Write demonstrations"))
    assert re.search(r"\b4\b", link.inner_text()), link.inner_text()
    link.click()
    page.wait_for_selector("#demo-text")
    assert prompt_text(page) == "Write a haiku about rain."
    page.fill("#demo-text", "Soft rain on the roof")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".toast:has-text('Demonstration saved.')")
    assert prompt_text(page) == "Explain DNS to a child."


def whole_answers_on_screen(page: Any) -> int:
    assert page.eval_on_selector(".prompt-box", "e => e.getBoundingClientRect().bottom") <= 800
    return int(
        page.eval_on_selector_all(
            ".answer",
            """els => els.filter(e => e.getBoundingClientRect().bottom <= innerHeight
                                   && !e.querySelector('.is-collapsed')).length""",
        )
    )


def test_a_task_fits_a_laptop_screen(page, demo_server: Server, newcomer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """On 1280x800 the prompt and at least two whole short answers show without scrolling
    (all four when they are one-liners); the rating and flags are folded into one line until
    used, and say what is set."""
    assert page.evaluate("innerHeight") == 800
    open_rank_page(page, demo_server, newcomer)
    assert whole_answers_on_screen(page) == 4
    shot(page, "labeling-rank-desktop", full_page=False)
    answer = page.locator(".answer").first
    assert not answer.locator(".rating").is_visible()
    answer.locator(".answer-extra summary").click()
    answer.locator(".rating-choice:has-text('5')").click()
    answer.locator(".flag-choice", has_text="hallucination").click()
    answer.locator(".answer-extra summary").click()  # folded again: the line says what is set
    assert "rated 5/7, hallucination" in answer.locator(".answer-extra summary").inner_text()

    # The demo's own answers of a few hundred characters each.
    demo = [(p["prompt"], [a["text"] for a in p["answers"]]) for p in DEMO_PROMPTS[:1]]
    project = ranking_project(demo_server, tmp_path, "Demo answers on a laptop", demo)
    page.goto(f"{demo_server.url}/projects/{project}/rank")
    page.wait_for_selector("#rank-form")
    assert whole_answers_on_screen(page) >= 2
    shot(page, "labeling-rank-desktop-demo", full_page=False)


def test_on_a_phone_the_answers_get_the_screen(phone, demo_server: Server, newcomer) -> None:  # type: ignore[no-untyped-def]
    """390x844: once the labeler scrolls into the answers, the header and the sticky "Your
    ranking" bar together cover little of the screen (they took 320 px)."""
    open_rank_page(phone, demo_server, newcomer)
    for place, answer in enumerate(phone.locator(".answer").all(), start=1):
        answer.locator(f".rank-choice:has-text('{place}')").tap()
    phone.locator(".answer").nth(1).evaluate("e => e.scrollIntoView({block: 'start'})")
    covered = phone.evaluate(
        """() => Array.from(document.querySelectorAll('.topbar, .rank-summary')).map(e => {
             const r = e.getBoundingClientRect();
             return Math.max(0, Math.min(r.bottom, innerHeight) - Math.max(r.top, 0));
           })"""
    )
    assert sum(covered) <= 110, covered
    assert not phone.locator("[data-drag-hint]").is_visible()  # no dragging on a phone
    shot(phone, "labeling-rank-phone-scrolled", full_page=False)


def test_a_rewrite_of_the_best_answer_goes_with_the_ranking(
    page, demo_server: Server, newcomer
) -> None:  # type: ignore[no-untyped-def]
    """The "Improve this answer" editor opens on the answer ranked first, follows a new best while left
    untouched, and the edited text is stored as the labeler's demonstration and exported as
    one more pair, preferred over the original (design §13)."""
    project, email, _ = newcomer
    open_rank_page(page, demo_server, newcomer)
    answers = page.locator(".answer").all()
    ids = [int(a.get_attribute("data-completion")) for a in answers]
    for place, answer in enumerate(answers, start=1):
        answer.locator(f".rank-choice:has-text('{place}')").click()
    with server_session(demo_server) as session:
        texts = {c.id: c.text for c in session.scalars(select(Completion).where(Completion.id.in_(ids)))}  # fmt: skip

    page.get_by_text("Improve this answer").click()
    editor = page.get_by_label("Your better version of the answer ranked first")
    editor.wait_for()
    page.wait_for_function("() => document.querySelector('#rewrite-text').value !== ''")
    assert editor.input_value() == texts[ids[0]]
    assert "(answer A)" in page.inner_text(".rewrite")
    # B ranked first instead: the untouched copy follows it.
    answers[1].locator(".rank-choice:has-text('1')").click()
    answers[0].locator(".rank-choice:has-text('2')").click()
    assert editor.input_value() == texts[ids[1]] and "(answer B)" in page.inner_text(".rewrite")
    shot(page, "labeling-rewrite", full_page=False)
    better = "Lower the egg into boiling water for <b>six</b> minutes, then cool it in cold water."
    editor.fill(better)
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".toast:has-text('Ranking saved.')")

    with server_session(demo_server) as session:
        user = session.scalars(select(User).where(User.email == email)).one()
        (rewrite,) = session.scalars(
            select(Demonstration).where(Demonstration.author_id == user.id)
        ).all()
        assert (rewrite.text, rewrite.rewrite_of_id) == (better, ids[1])
        row = session.get_one(Project, project)
        options = ExportOptions.from_dict({"kind": "pairwise", "validation_ratio": 0})
        rows = [r for _, r in pairwise_rows(session, row, options) if r["labeler"] == f"user:{user.id}"]  # fmt: skip
    assert [(r["chosen"], r["rejected"]) for r in rows if r["source"] == "rewrite"] == [
        (better, texts[ids[1]])
    ]
    assert len(rows) == 7  # the ranking's 6 pairs and the rewrite's

    # The next task's editor is closed and empty: a ranking alone is sent as before.
    assert not page.locator(".rewrite").evaluate("el => el.open")
    assert page.locator("textarea[name=rewrite_text]").input_value() == ""
