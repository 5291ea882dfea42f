"""Dialogue prompts (design §11) where labelers and admins read them: the task pages show the
turns with their roles (the earlier turns of a long dialogue folded), a string prompt looks as
it always did, and the API gives every prompt as messages."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

from app.auth.models import User
from app.auth.service import create_api_token
from app.dialogue import Message
from app.imports.service import import_file
from app.projects.models import Project
from app.projects.service import create_project
from tests.browser import BROWSER_MARKS, labeler, log_in, server_session, shot
from tests.helpers import csrf_token, login, make_admin, make_project, make_prompt, make_user

HTMX = {"HX-Request": "true"}


def browser_test(test: Callable[..., None]) -> Callable[..., None]:
    """Marked as the browser tests are (slow, browser, skipped without Chromium)."""
    return functools.reduce(lambda marked, mark: mark(marked), BROWSER_MARKS, test)


DIALOGUE: list[Message] = [
    {"role": "system", "content": "You are a **patient** tutor."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "It is 4."},
    {"role": "user", "content": "And times 3?"},
]
TURN = re.compile(
    r'<div class="turn turn-(\w+)">\s*<p class="turn-role">(\w+)</p>\s*'
    r'<div class="prose turn-body" dir="auto">(.*?)</div>\s*</div>',
    re.S,
)


def turns(html: str) -> list[tuple[str, str, str]]:
    """Each turn on the page, in order: (role, its label, its rendered content)."""
    return [(role, label, body.strip()) for role, label, body in TURN.findall(html)]


def folded_part(html: str) -> str:
    """What the "Show N earlier turns" control folds away ('' when nothing is folded)."""
    match = re.search(r'<details class="turns-earlier">(.*?)</details>', html, re.S)
    return match.group(1) if match else ""


def long_dialogue(n: int) -> list[Message]:
    """``n`` turns (n odd), user and assistant by turns, ending with the user's."""
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn number {i + 1}"}
        for i in range(n)
    ]


async def rank_task(client: httpx.AsyncClient, project: Project) -> tuple[str, str]:
    """Leases a rank task as the page does (an htmx fragment); the fragment and the task's
    own page (a reload)."""
    token = await csrf_token(client, f"/projects/{project.id}/rank")
    fragment = await client.post(
        f"/projects/{project.id}/rank/next", headers={**HTMX, "X-CSRF-Token": token}
    )
    assert fragment.status_code == 200, fragment.text
    found = re.search(r'action="/tasks/(\d+)/rank"', fragment.text)
    assert found, fragment.text
    page = await client.get(f"/tasks/{found.group(1)}")
    assert page.status_code == 200 and "<html" in page.text
    return fragment.text, page.text


async def test_rank_page_shows_each_turn_with_its_role_in_order(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, messages=DIALOGUE)
    await login(client, make_user(session))
    for html in await rank_task(client, project):
        assert turns(html) == [
            ("system", "System", '<p dir="auto">You are a <strong>patient</strong> tutor.</p>'),
            ("user", "User", '<p dir="auto">What is 2 + 2?</p>'),
            ("assistant", "Assistant", '<p dir="auto">It is 4.</p>'),
            ("user", "User", '<p dir="auto">And times 3?</p>'),
        ]
        assert "Conversation" in html and "The answers are the next assistant turn." in html
        # Four turns: the system turn folds away, the last three show.
        assert "Show 1 earlier turn<" in html
        assert [role for role, _, _ in turns(folded_part(html))] == ["system"]


async def test_a_long_dialogue_shows_its_last_three_turns(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, messages=long_dialogue(9))
    await login(client, make_user(session))
    html, _ = await rank_task(client, project)
    contents = [body for _, _, body in turns(html)]
    assert contents == [f'<p dir="auto">turn number {i}</p>' for i in range(1, 10)]
    folded = [body for _, _, body in turns(folded_part(html))]
    assert folded == contents[:6]  # behind the control, in order
    assert "Show 6 earlier turns" in html and "Hide the 6 earlier turns" in html
    # A <details> opens without JavaScript, and is closed until the labeler opens it.
    assert '<details class="turns-earlier">' in html


async def test_a_short_dialogue_folds_nothing(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, messages=long_dialogue(3))
    await login(client, make_user(session))
    html, _ = await rank_task(client, project)
    assert [label for _, label, _ in turns(html)] == ["User", "Assistant", "User"]
    assert "turns-earlier" not in html and "earlier turn" not in html


async def test_turns_are_sanitized_like_answers(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(
        session,
        project,
        messages=[
            {"role": "user", "content": "<script>alert('x')</script> hi"},
            {"role": "assistant", "content": "<img src=x onerror=alert(1)> [a](javascript:x)"},
            {"role": "user", "content": "</div></section><b>out</b>"},
        ],
    )
    await login(client, make_user(session))
    for html in await rank_task(client, project):
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "<b>out" not in html and 'href="javascript' not in html
        assert "&lt;script&gt;alert('x')&lt;/script&gt; hi" in html
        assert "&lt;/div&gt;&lt;/section&gt;&lt;b&gt;out&lt;/b&gt;" in html
        assert len(turns(html)) == 3  # a closing tag in a turn closes nothing of the page


async def test_a_string_prompt_looks_as_before(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, text="User: this only *looks* like a dialogue")
    # A dialogue of one user message is the same prompt as its text, shown the same way.
    make_prompt(session, project, messages=[{"role": "user", "content": "Just **one** turn"}])
    await login(client, make_user(session))
    token = await csrf_token(client, f"/projects/{project.id}/rank")
    seen = []
    for _ in range(2):
        html = (
            await client.post(
                f"/projects/{project.id}/rank/next", headers={**HTMX, "X-CSRF-Token": token}
            )
        ).text
        task_id = re.search(r'action="/tasks/(\d+)/rank"', html).group(1)  # type: ignore[union-attr]
        assert '<h2 id="prompt-title" class="eyebrow">Prompt</h2>' in html
        assert "turn-role" not in html and "Conversation" not in html
        shown = re.search(r'<div class="prose prompt-text" dir="auto">(.*?)</div>', html, re.S)
        assert shown, html
        seen.append(shown.group(1).strip())
        skipped = await client.post(
            f"/tasks/{task_id}/skip",
            data={"csrf_token": token, "reason": "The prompt is unclear"},
            headers=HTMX,
        )
        assert skipped.status_code == 200, skipped.text
    assert sorted(seen) == [
        '<p dir="auto">Just <strong>one</strong> turn</p>',
        '<p dir="auto">User: this only <em>looks</em> like a dialogue</p>',
    ]


async def test_demonstration_page_shows_the_turns(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, messages=DIALOGUE, answers=0)
    await login(client, make_user(session))
    token = await csrf_token(client, f"/projects/{project.id}/demonstrate")
    html = (
        await client.post(
            f"/projects/{project.id}/demonstrate/next", headers={**HTMX, "X-CSRF-Token": token}
        )
    ).text
    assert 'id="demo-form"' in html
    assert [label for _, label, _ in turns(html)] == ["System", "User", "Assistant", "User"]
    assert "Your answer is the next assistant turn." in html


async def test_gold_page_shows_the_turns(client: httpx.AsyncClient, session: Session) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project, messages=long_dialogue(5))
    await login(client, make_admin(session))
    html = (await client.get(f"/admin/prompts/{prompt.id}/gold")).text
    assert [body for _, _, body in turns(html)] == [
        f'<p dir="auto">turn number {i}</p>' for i in range(1, 6)
    ]
    assert "Show 2 earlier turns" in html


async def api_next(
    client: httpx.AsyncClient, session: Session, user: User, project: Project
) -> dict:  # type: ignore[type-arg]
    _, token = create_api_token(session=session, user=user)
    session.commit()
    r = await client.post(
        f"/api/v1/projects/{project.id}/tasks/next",
        json={"kind": "rank"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    return r.json()["prompt"]  # type: ignore[no-any-return]


async def test_api_gives_the_prompt_as_messages(
    client: httpx.AsyncClient, session: Session
) -> None:
    dialogue = make_project(session, k=4)
    turned = make_prompt(session, dialogue, messages=DIALOGUE)
    plain = make_project(session, k=4)
    string = make_prompt(session, plain, text="Why is the sea salty?")
    user = make_user(session)
    assert await api_next(client, session, user, dialogue) == {
        "id": turned.id,
        "text": "System: You are a **patient** tutor.\n\nUser: What is 2 + 2?\n\n"
        "Assistant: It is 4.\n\nUser: And times 3?",
        "messages": DIALOGUE,
    }
    assert await api_next(client, session, user, plain) == {
        "id": string.id,
        "text": "Why is the sea salty?",
        "messages": [{"role": "user", "content": "Why is the sea salty?"}],
    }


async def test_openapi_describes_the_messages(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/api/v1/openapi.json")).json()["components"]["schemas"]
    messages = schemas["PromptOut"]["properties"]["messages"]
    assert messages["items"] == {"$ref": "#/components/schemas/MessageOut"}
    assert "A string prompt is one user message" in messages["description"]
    assert schemas["MessageOut"]["properties"]["role"]["enum"] == ["system", "user", "assistant"]


# --- in a real browser (last in this module: Playwright's sync API holds an event loop while
# the module's Chromium is open, see the `chromium` fixture) ---------------------------------

LONG_CHAT: list[Message] = [
    {"role": "system", "content": "You are a friendly cooking assistant. Answer briefly."},
    {"role": "user", "content": "I want to bake bread this weekend."},
    {"role": "assistant", "content": "Great! Do you have **yeast**, or a sourdough starter?"},
    {"role": "user", "content": "Only dry yeast. What else do I need?"},
    {
        "role": "assistant",
        "content": "For one loaf:\n\n- 500 g flour\n- 7 g dry yeast\n- 10 g salt\n"
        "- 350 ml warm water\n\n```\nmix, knead 10 min, rise 1 h\n```",
    },
    {"role": "user", "content": "How do I know when the dough has risen enough?"},
]
CHAT_ANSWERS = [
    "Press it gently with a floured finger: if the dent springs back slowly, it is ready.",
    "When it has roughly doubled in size, usually after an hour somewhere warm.",
    "Bread is made from flour, water, salt and yeast.",
    "Wait one hour exactly, whatever the dough looks like.",
]


def dialogue_project(server: Any, tmp: Path, name: str) -> int:
    """A project of its own (K=4, overlap 1) with one dialogue prompt, imported as TRL's
    conversational rows are."""
    path = tmp / "chat.jsonl"
    row = {"prompt": LONG_CHAT, "completions": [{"text": a} for a in CHAT_ANSWERS]}
    path.write_text(json.dumps(row) + "\n")
    with server_session(server) as session:
        project = create_project(session=session, name=name, k=4, overlap=1)
        import_file(session=session, project=project, path=path, source_name=path.name)
        return project.id


def open_dialogue_task(page: Any, server: Any, tmp: Path, who: str) -> None:
    project = dialogue_project(server, tmp, f"Bread chat {who}")
    email = f"{who}@dialogue.test"
    log_in(page, server, email, labeler(server, email))
    page.wait_for_url("**/home")
    page.goto(f"{server.url}/projects/{project}/rank")
    page.wait_for_selector("#rank-form")


def visible_roles(page: Any) -> list[str]:
    return [
        str(label).strip()
        for label in page.eval_on_selector_all(
            ".turn-role", "els => els.filter(e => e.checkVisibility()).map(e => e.innerText)"
        )
    ]


@browser_test
def test_a_labeler_reads_a_dialogue_and_ranks_it_with_the_keyboard(
    page: Any, demo_server: Any, tmp_path: Path
) -> None:
    open_dialogue_task(page, demo_server, tmp_path, "keys")
    # The last three turns show (the role labels read as words, case aside: CSS capitals).
    assert [r.lower() for r in visible_roles(page)] == ["user", "assistant", "user"]
    assert "How do I know when the dough has risen" in page.inner_text(".prompt-box")
    assert "cooking assistant" not in page.inner_text(".prompt-box")
    # The turns take no focus: the keys act on answer A from the start.
    assert page.evaluate("document.activeElement.dataset.letter") == "A"
    shot(page, "labeling-dialogue-desktop", full_page=False)

    page.get_by_text("Show 3 earlier turns").click()
    assert [r.lower() for r in visible_roles(page)] == [
        "system", "user", "assistant", "user", "assistant", "user",
    ]  # fmt: skip
    assert "cooking assistant" in page.inner_text(".prompt-box")
    assert page.get_by_text("Hide the 3 earlier turns").is_visible()
    shot(page, "labeling-dialogue-desktop-unfolded")

    # The summary that was clicked has the focus; the keys still rank the answers.
    for key in ["2", "j", "1", "j", "4", "j", "3"]:
        page.keyboard.press(key)
    assert page.inner_text("#rank-order").split() == ["B", "A", "D", "C"]
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".toast:has-text('Ranking saved.')")


@browser_test
def test_a_dialogue_on_a_phone(phone: Any, demo_server: Any, tmp_path: Path) -> None:
    open_dialogue_task(phone, demo_server, tmp_path, "phone")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sideways
    shot(phone, "labeling-dialogue-phone", full_page=False)
    phone.get_by_text("Show 3 earlier turns").tap()
    assert len(visible_roles(phone)) == 6
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "labeling-dialogue-phone-unfolded")
    for place, answer in enumerate(phone.locator(".answer").all(), start=1):
        answer.locator(f".rank-choice:has-text('{place}')").tap()
    phone.locator("[data-submit]").tap()
    phone.wait_for_selector(".toast:has-text('Ranking saved.')")
