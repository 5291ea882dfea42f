"""Admin user management: the table, new users, deactivate/reactivate, password resets."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.auth.models import Role, User
from app.auth.passwords import verify_password
from app.labeling.models import Comparison, Demonstration
from app.users.service import user_rows
from tests.helpers import (
    PASSWORD,
    csrf_token,
    field_error,
    login,
    make_admin,
    make_project,
    make_prompt,
    make_user,
    visible_text,
)

HTMX = {"HX-Request": "true"}


@pytest.fixture
async def labeler_browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser, for the labeler an admin acts on."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as browser:
        yield browser


async def _admin(client: httpx.AsyncClient, session: Session) -> tuple[User, str]:
    admin = make_admin(session)
    await login(client, admin)
    return admin, await csrf_token(client, "/admin/users")


def _audit(session: Session, action: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


async def _can_log_in(client: httpx.AsyncClient, email: str, password: str) -> bool:
    client.cookies.clear()
    token = await csrf_token(client)
    r = await client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}
    )
    return r.status_code == 303


def _row(page: str, user: User) -> str:
    match = re.search(rf'<tr id="user-{user.id}".*?</tr>', page, re.S)
    assert match, f"no row for user {user.id}"
    return match.group(0)


async def test_users_table_lists_everyone_with_their_work(
    client: httpx.AsyncClient, session: Session
) -> None:
    labeler = make_user(session)
    idle = make_user(session)
    idle.is_active = False
    project = make_project(session, k=2)
    for text in ("a", "b", "c"):
        prompt = make_prompt(session, project, text=text, answers=2)
        session.refresh(prompt)
        ids = [c.id for c in prompt.completions]
        session.add(
            Comparison(
                prompt_id=prompt.id, labeler_id=labeler.id,
                displayed_completion_ids=ids, ranking=[ids],
            )
        )  # fmt: skip
    session.add(Demonstration(prompt_id=prompt.id, author_id=labeler.id, text="An answer"))
    session.flush()
    admin, _ = await _admin(client, session)

    page = (await client.get("/admin/users")).text
    row = visible_text(_row(page, labeler))
    assert labeler.display_name in row and labeler.email in row
    assert "labeler active" in row and "never 3 1 Deactivate Reset password" in row
    assert "deactivated" in visible_text(_row(page, idle)) and "Reactivate" in _row(page, idle)
    own = _row(page, admin)
    assert "you" in visible_text(own) and "Deactivate" not in own  # no button for oneself
    assert re.search(r'href="/admin/users"\s+aria-current="page">Users', page)


def test_user_counts_take_the_same_queries_for_any_number_of_users(session: Session) -> None:
    for _ in range(2):
        make_user(session)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", count)
    try:
        user_rows(session=session)
        few = len(statements)
        for _ in range(5):
            make_user(session)
        statements.clear()
        rows = user_rows(session=session)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == few == 3  # users, rankings, demonstrations
    assert len(rows) >= 7


async def test_create_user_with_a_generated_password(
    client: httpx.AsyncClient, session: Session, labeler_browser: httpx.AsyncClient
) -> None:
    _, token = await _admin(client, session)
    r = await client.post(
        "/admin/users",
        data={
            "email": " New.Person@Example.test ", "display_name": "New Person",
            "role": "labeler", "password_mode": "generate", "csrf_token": token,
        },
    )  # fmt: skip
    assert r.status_code == 200, r.text
    password = re.search(r'<code class="secret-value">([^<]+)</code>', r.text)
    assert password, r.text
    assert r.headers["cache-control"] == "no-store"  # no copy in the history or a proxy
    user = session.scalars(select(User).where(User.email == "new.person@example.test")).one()
    assert (user.role, user.display_name, user.is_active) == (Role.labeler, "New Person", True)
    assert [e.target_id for e in _audit(session, "user.create")] == [user.id]
    assert password.group(1) not in (await client.get("/admin/users")).text  # shown once
    assert await _can_log_in(labeler_browser, "new.person@example.test", password.group(1))


async def test_create_an_admin_with_a_typed_password(
    client: httpx.AsyncClient, session: Session, labeler_browser: httpx.AsyncClient
) -> None:
    _, token = await _admin(client, session)
    r = await client.post(
        "/admin/users",
        data={
            "email": "boss@example.test", "role": "admin", "password_mode": "set",
            "password": "typed-by-the-admin", "csrf_token": token,
        },
    )  # fmt: skip
    assert r.status_code == 200
    assert "secret-value" not in r.text and "typed-by-the-admin" not in r.text
    assert await _can_log_in(labeler_browser, "boss@example.test", "typed-by-the-admin")
    assert (await labeler_browser.get("/admin/users")).status_code == 200  # an admin indeed


NEW_USER_ERRORS = [
    ({"email": "not-an-email"}, "email", "Not an email address: &#39;not-an-email&#39;."),
    ({"email": ""}, "email", "An email address is needed."),
    ({"email": "TAKEN@example.test"}, "email", "A user with the email taken@example.test already exists."),
    ({"display_name": "n" * 121}, "display_name", "A display name has at most 120 characters."),
    ({"role": "owner"}, "role", "The role is admin or labeler."),
    ({"password": "short"}, "password", "The password must have at least 8 characters."),
    ({"password": ""}, "password", "Type a password, or choose to generate one."),
]  # fmt: skip


@pytest.mark.parametrize(("change", "field", "message"), NEW_USER_ERRORS)
async def test_new_user_rules_are_shown_next_to_their_fields(
    client: httpx.AsyncClient, session: Session, change: dict[str, str], field: str, message: str
) -> None:
    make_user(session, email="taken@example.test")
    _, token = await _admin(client, session)
    before = len(session.scalars(select(User)).all())
    data = {
        "email": "someone@example.test", "display_name": "Some One", "role": "labeler",
        "password_mode": "set", "password": "long-enough-password", **change, "csrf_token": token,
    }  # fmt: skip
    r = await client.post("/admin/users", data=data)
    assert r.status_code == 422
    assert field_error(r.text, field) == message
    assert f'name="email" value="{data["email"]}"' in r.text
    assert f'name="display_name" value="{data["display_name"]}"' in r.text
    assert 'value="set" checked' in r.text
    assert data["password"] == "" or data["password"] not in r.text  # never echoed
    assert len(session.scalars(select(User)).all()) == before


async def test_deactivate_ends_the_labelers_sessions(
    client: httpx.AsyncClient, session: Session, labeler_browser: httpx.AsyncClient
) -> None:
    labeler = make_user(session)
    await login(labeler_browser, labeler)
    assert (await labeler_browser.get("/home")).status_code == 200
    _, token = await _admin(client, session)

    r = await client.post(f"/admin/users/{labeler.id}/deactivate", data={"csrf_token": token})
    assert r.status_code == 303
    assert r.headers["location"] == f"/admin/users?done=deactivated&user_id={labeler.id}"
    page = (await client.get(r.headers["location"])).text
    assert f"{labeler.display_name} was deactivated and signed out everywhere." in page
    assert "Reactivate" in _row(page, labeler)

    session.refresh(labeler)
    assert labeler.is_active is False
    after = await labeler_browser.get("/home")
    assert after.status_code == 303 and after.headers["location"].startswith("/login")
    assert not await _can_log_in(labeler_browser, labeler.email, PASSWORD)
    assert [e.target_id for e in _audit(session, "user.deactivate")] == [labeler.id]


async def test_deactivate_and_reactivate_with_htmx_swap_the_row(
    client: httpx.AsyncClient, session: Session, labeler_browser: httpx.AsyncClient
) -> None:
    labeler = make_user(session)
    await login(labeler_browser, labeler)
    _, token = await _admin(client, session)
    headers = {**HTMX, "X-CSRF-Token": token}

    r = await client.post(f"/admin/users/{labeler.id}/deactivate", headers=headers)
    assert r.status_code == 200
    assert "<html" not in r.text and r.text.strip().startswith(f'<tr id="user-{labeler.id}"')
    assert "deactivated" in r.text and "Reactivate" in r.text
    assert (await labeler_browser.get("/home")).status_code == 303

    r = await client.post(f"/admin/users/{labeler.id}/reactivate", headers=headers)
    assert r.status_code == 200 and "<html" not in r.text
    assert "Deactivate" in r.text and "badge-active" in r.text
    session.refresh(labeler)
    assert labeler.is_active is True
    assert await _can_log_in(labeler_browser, labeler.email, PASSWORD)
    assert len(_audit(session, "user.reactivate")) == 1


async def test_reactivate_without_htmx(client: httpx.AsyncClient, session: Session) -> None:
    labeler = make_user(session)
    labeler.is_active = False
    session.flush()
    _, token = await _admin(client, session)
    r = await client.post(f"/admin/users/{labeler.id}/reactivate", data={"csrf_token": token})
    assert r.status_code == 303
    assert (
        f"{labeler.display_name} can sign in again."
        in (await client.get(r.headers["location"])).text
    )


async def test_an_admin_cannot_deactivate_themself(
    client: httpx.AsyncClient, session: Session
) -> None:
    admin, token = await _admin(client, session)
    r = await client.post(f"/admin/users/{admin.id}/deactivate", data={"csrf_token": token})
    assert r.status_code == 409
    assert "You cannot deactivate your own account; ask another admin." in r.text
    r = await client.post(
        f"/admin/users/{admin.id}/deactivate", headers={**HTMX, "X-CSRF-Token": token}
    )
    assert r.status_code == 200 and "<html" not in r.text  # the row, with the message in it
    assert "You cannot deactivate your own account" in r.text
    session.refresh(admin)
    assert admin.is_active is True
    assert (await client.get("/admin/users")).status_code == 200  # still signed in
    assert _audit(session, "user.deactivate") == []


async def test_reset_password_generates_one_and_ends_sessions(
    client: httpx.AsyncClient, session: Session, labeler_browser: httpx.AsyncClient
) -> None:
    labeler = make_user(session)
    await login(labeler_browser, labeler)
    _, token = await _admin(client, session)
    form = await client.get(f"/admin/users/{labeler.id}/reset-password")
    assert form.status_code == 200 and 'value="generate" checked' in form.text

    r = await client.post(
        f"/admin/users/{labeler.id}/reset-password",
        data={"password_mode": "generate", "csrf_token": token},
    )
    assert r.status_code == 200
    found = re.search(r'<code class="secret-value">([^<]+)</code>', r.text)
    assert found
    new_password = found.group(1)
    assert r.headers["cache-control"] == "no-store"
    assert len(new_password) >= 16

    assert (await labeler_browser.get("/home")).status_code == 303  # signed out
    assert not await _can_log_in(labeler_browser, labeler.email, PASSWORD)
    assert await _can_log_in(labeler_browser, labeler.email, new_password)
    [event] = _audit(session, "user.reset_password")
    assert event.target_id == labeler.id and new_password not in str(event.details)


async def test_reset_password_to_a_typed_one(
    client: httpx.AsyncClient, session: Session, labeler_browser: httpx.AsyncClient
) -> None:
    labeler = make_user(session)
    _, token = await _admin(client, session)
    url = f"/admin/users/{labeler.id}/reset-password"
    short = await client.post(
        url, data={"password_mode": "set", "password": "short", "csrf_token": token}
    )
    assert short.status_code == 422
    assert field_error(short.text, "password") == "The password must have at least 8 characters."
    empty = await client.post(url, data={"password_mode": "set", "csrf_token": token})
    assert field_error(empty.text, "password") == "Type a password, or choose to generate one."
    assert await _can_log_in(labeler_browser, labeler.email, PASSWORD)  # unchanged so far

    ok = await client.post(
        url, data={"password_mode": "set", "password": "a-new-password", "csrf_token": token}
    )
    assert ok.status_code == 200 and "a-new-password" not in ok.text
    session.refresh(labeler)
    assert verify_password(labeler.password_hash, "a-new-password")
    assert not await _can_log_in(labeler_browser, labeler.email, PASSWORD)


async def test_unknown_user_is_404(client: httpx.AsyncClient, session: Session) -> None:
    _, token = await _admin(client, session)
    assert (await client.get("/admin/users/999999/reset-password")).status_code == 404
    r = await client.post("/admin/users/999999/deactivate", data={"csrf_token": token})
    assert r.status_code == 404


async def test_labeler_gets_403_on_every_user_admin_page(
    client: httpx.AsyncClient, session: Session
) -> None:
    other = make_user(session)
    labeler = make_user(session)
    await login(client, labeler)
    token = await csrf_token(client, "/home")
    assert 'href="/admin/users"' not in (await client.get("/home")).text
    for method, path in [
        ("GET", "/admin/users"),
        ("POST", "/admin/users"),
        ("POST", f"/admin/users/{other.id}/deactivate"),
        ("POST", f"/admin/users/{other.id}/reactivate"),
        ("GET", f"/admin/users/{other.id}/reset-password"),
        ("POST", f"/admin/users/{other.id}/reset-password"),
    ]:
        data = {"email": "x@example.test", "role": "admin", "password_mode": "generate"}
        r = await client.request(method, path, headers={"X-CSRF-Token": token}, data=data)
        assert r.status_code == 403, (method, path)
    session.refresh(other)
    assert (
        other.is_active
        and session.scalars(select(User).where(User.email == "x@example.test")).first() is None
    )


async def test_user_text_is_escaped(client: httpx.AsyncClient, session: Session) -> None:
    script = "<script>alert(1)</script>"
    evil = make_user(session)
    evil.display_name = script
    session.flush()
    _, token = await _admin(client, session)
    new_user = {"role": "labeler", "password_mode": "generate", "csrf_token": token}
    htmx = {**HTMX, "X-CSRF-Token": token}
    pages = [
        await client.get("/admin/users"),
        await client.get(f"/admin/users/{evil.id}/reset-password"),
        await client.post(f"/admin/users/{evil.id}/deactivate", headers=htmx),
        await client.post(
            "/admin/users", data={**new_user, "email": "new@example.test", "display_name": script}
        ),
        await client.post(
            "/admin/users", data={**new_user, "email": script, "display_name": script}
        ),
    ]
    for page in pages:
        assert page.status_code in (200, 422), page.request.url
        assert script not in page.text, page.request.url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, page.request.url
