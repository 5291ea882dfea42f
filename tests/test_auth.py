"""Login, logout, sessions, CSRF and roles, as a browser sees them."""

from __future__ import annotations

import json
import time
from base64 import b64encode
from datetime import timedelta

import httpx
import itsdangerous
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import LoginAttempt
from app.auth.passwords import hash_password, verify_password
from app.auth.service import (
    SESSION_ABSOLUTE_LIFETIME,
    LoginResult,
    authenticate,
    client_address,
    normalize_email,
    start_session,
)
from app.config import Settings
from app.db import utcnow
from app.deps import SESSION_ID_KEY
from app.main import SESSION_COOKIE
from tests.helpers import PASSWORD, csrf_token, login, make_admin, make_user


async def test_login_then_labeler_home(client: httpx.AsyncClient, session: Session) -> None:
    user = make_user(session)
    response = await login(client, user)
    assert response.headers["location"] == "/"
    home = await client.get("/", follow_redirects=True)
    assert home.status_code == 200
    assert str(home.url).endswith("/home")
    assert f"Welcome back, {user.display_name}" in home.text


async def test_admin_lands_on_admin_home(client: httpx.AsyncClient, session: Session) -> None:
    await login(client, make_admin(session))
    page = await client.get("/", follow_redirects=True)
    assert str(page.url).endswith("/admin")
    assert "Recent jobs" in page.text


async def test_session_cookie_is_httponly_and_samesite(
    client: httpx.AsyncClient, session: Session
) -> None:
    response = await login(client, make_user(session))
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in cookie
    assert "samesite=lax" in cookie


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    client: httpx.AsyncClient, session: Session
) -> None:
    user = make_user(session)
    token = await csrf_token(client)
    wrong = await client.post(
        "/login", data={"email": user.email, "password": "nope-nope", "csrf_token": token}
    )
    unknown = await client.post(
        "/login", data={"email": "ghost@example.test", "password": "nope-nope", "csrf_token": token}
    )
    assert wrong.status_code == unknown.status_code == 400
    assert "Wrong email or password." in wrong.text
    assert "Wrong email or password." in unknown.text
    # Nothing on the page tells the two apart, beyond the email typed back into the form.
    assert wrong.text.replace(user.email, "X") == unknown.text.replace("ghost@example.test", "X")
    assert (await client.get("/home")).status_code == 303  # still signed out


async def test_repeated_failures_are_rate_limited_even_with_the_right_password(
    client: httpx.AsyncClient, session: Session, settings: Settings
) -> None:
    user = make_user(session)
    token = await csrf_token(client)
    for _ in range(settings.login_max_failures):
        r = await client.post(
            "/login", data={"email": user.email, "password": "wrong-pass", "csrf_token": token}
        )
        assert r.status_code == 400
    blocked = await client.post(
        "/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token}
    )
    assert blocked.status_code == 429
    assert "Too many failed attempts" in blocked.text
    assert int(blocked.headers["retry-after"]) > 0
    failures = session.scalars(select(LoginAttempt).where(LoginAttempt.email == user.email)).all()
    assert len(failures) == settings.login_max_failures  # the blocked try checked nothing


async def test_deactivated_user_cannot_log_in(client: httpx.AsyncClient, session: Session) -> None:
    user = make_user(session)
    user.is_active = False
    session.flush()
    token = await csrf_token(client)
    r = await client.post(
        "/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token}
    )
    assert r.status_code == 400


async def test_login_without_csrf_token_is_refused(
    client: httpx.AsyncClient, session: Session
) -> None:
    user = make_user(session)
    await client.get("/login")
    r = await client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert r.status_code == 403
    assert "Form expired" in r.text
    bad = await client.post(
        "/login", data={"email": user.email, "password": PASSWORD, "csrf_token": "forged"}
    )
    assert bad.status_code == 403


async def test_htmx_request_needs_the_csrf_header(
    client: httpx.AsyncClient, session: Session
) -> None:
    await login(client, make_admin(session))
    token = await csrf_token(client, "/admin")
    without = await client.post("/admin/jobs/selfcheck", headers={"HX-Request": "true"})
    assert without.status_code == 403
    with_header = await client.post(
        "/admin/jobs/selfcheck", headers={"HX-Request": "true", "X-CSRF-Token": token}
    )
    assert with_header.status_code == 303


async def test_logout_ends_the_session(client: httpx.AsyncClient, session: Session) -> None:
    await login(client, make_user(session))
    token = await csrf_token(client, "/home")
    r = await client.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303
    assert (await client.get("/home")).status_code == 303


async def test_labeler_gets_403_on_admin_pages(client: httpx.AsyncClient, session: Session) -> None:
    await login(client, make_user(session))
    for path in ("/admin", "/admin/jobs"):
        r = await client.get(path)
        assert r.status_code == 403, path
        assert "for admins" in r.text


async def test_signed_out_visitor_is_sent_to_login_with_next(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/jobs")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/admin/jobs"
    htmx = await client.get("/admin/jobs", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["HX-Redirect"].startswith("/login")


async def test_next_cannot_point_to_another_site(
    client: httpx.AsyncClient, session: Session
) -> None:
    user = make_user(session)
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        token = await csrf_token(client)
        r = await client.post(
            "/login",
            data={"email": user.email, "password": PASSWORD, "csrf_token": token, "next": target},
        )
        assert r.headers["location"] == "/", target
        await client.post("/logout", data={"csrf_token": await csrf_token(client, "/home")})


def _session_cookie(settings: Settings, data: dict[str, object], age_seconds: int) -> str:
    class PastSigner(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age_seconds

    signer = PastSigner(settings.secret_key.get_secret_value())
    return signer.sign(b64encode(json.dumps(data).encode())).decode()


async def test_expired_cookie_is_refused(
    client: httpx.AsyncClient, session: Session, settings: Settings
) -> None:
    user = make_user(session)
    sid = start_session(session=session, user=user, ip="127.0.0.1", user_agent="test").id
    session.commit()
    fresh = _session_cookie(settings, {SESSION_ID_KEY: sid}, age_seconds=60)
    client.cookies.set(SESSION_COOKIE, fresh)
    assert (await client.get("/home")).status_code == 200

    expired = _session_cookie(
        settings, {SESSION_ID_KEY: sid}, age_seconds=settings.session_max_age_seconds + 5
    )
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, expired)
    r = await client.get("/home")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login")


async def test_session_older_than_its_lifetime_is_refused(
    client: httpx.AsyncClient, session: Session, settings: Settings
) -> None:
    user = make_user(session)
    row = start_session(session=session, user=user, ip="127.0.0.1", user_agent="test")
    row.created_at = utcnow() - SESSION_ABSOLUTE_LIFETIME - timedelta(minutes=1)
    session.commit()
    client.cookies.set(SESSION_COOKIE, _session_cookie(settings, {SESSION_ID_KEY: row.id}, 60))
    assert (await client.get("/home")).status_code == 303


async def test_a_cookie_replayed_after_logout_is_refused(
    client: httpx.AsyncClient, session: Session
) -> None:
    await login(client, make_user(session))
    stolen = client.cookies[SESSION_COOKIE]
    await client.post("/logout", data={"csrf_token": await csrf_token(client, "/home")})
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, stolen)
    assert (await client.get("/home")).status_code == 303


async def test_deactivating_a_user_ends_their_sessions(
    client: httpx.AsyncClient, session: Session
) -> None:
    user = make_user(session)
    await login(client, user)
    assert (await client.get("/home")).status_code == 200
    user.is_active = False
    session.commit()
    assert (await client.get("/home")).status_code == 303


async def test_a_forged_session_id_is_ignored(
    client: httpx.AsyncClient, session: Session, settings: Settings
) -> None:
    make_user(session)
    client.cookies.set(SESSION_COOKIE, _session_cookie(settings, {SESSION_ID_KEY: "guess"}, 60))
    assert (await client.get("/home")).status_code == 303


async def test_cookie_signed_with_another_key_is_ignored(
    client: httpx.AsyncClient, session: Session
) -> None:
    user = make_user(session)
    sid = start_session(session=session, user=user, ip="127.0.0.1", user_agent="test").id
    session.commit()
    forged = itsdangerous.TimestampSigner("some-other-key-0123456789").sign(
        b64encode(json.dumps({SESSION_ID_KEY: sid}).encode())
    )
    client.cookies.set(SESSION_COOKIE, forged.decode())
    assert (await client.get("/home")).status_code == 303


def _try(session: Session, settings: Settings, email: str, password: str, ip: str) -> LoginResult:
    return authenticate(
        session=session, email=email, password=password, ip=ip,
        max_failures=settings.login_max_failures,
        window=timedelta(seconds=settings.login_failure_window_seconds),
    )  # fmt: skip


async def test_guesses_from_many_addresses_never_lock_the_owner_out(
    session: Session, settings: Settings
) -> None:
    """20 failures from 20 addresses: the owner still signs in from a fresh address, while
    each guessing address that comes back waits, longer with every failure."""
    user = make_user(session)
    guesses = 4 * settings.login_max_failures
    for n in range(guesses):
        assert not _try(session, settings, user.email, "wrong", f"10.0.{n}.1").throttled
    again = _try(session, settings, user.email, "wrong", "10.0.0.1")
    assert again.throttled and again.retry_after_seconds >= 1  # a guesser waits
    owner = _try(session, settings, user.email, PASSWORD, "10.9.9.9")
    assert owner.user is not None and not owner.throttled
    # Each further failure doubles the wait of the guessing addresses.
    waits = []
    for n in range(3):
        session.add(
            LoginAttempt(email=normalize_email(user.email), ip=f"10.1.{n}.1", succeeded=False)
        )
        session.flush()
        waits.append(_try(session, settings, user.email, "wrong", "10.0.0.1").retry_after_seconds)
    assert waits[0] < waits[1] < waits[2] <= settings.login_failure_window_seconds, waits


async def test_failures_behind_one_address_do_not_shut_out_the_others(
    session: Session, settings: Settings
) -> None:
    """One NAT address: a colleague's typos slow down only that colleague's guesses there,
    and not the others' sign-ins."""
    nat = "198.51.100.7"
    mistyper, colleague = make_user(session), make_user(session)
    for _ in range(settings.login_max_failures):
        assert not _try(session, settings, mistyper.email, "typo", nat).throttled
    assert _try(session, settings, mistyper.email, PASSWORD, nat).throttled  # for a while
    assert _try(session, settings, colleague.email, PASSWORD, nat).user is not None
    assert _try(session, settings, mistyper.email, PASSWORD, "192.0.2.44").user is not None


def test_ipv6_clients_are_throttled_by_their_64_prefix() -> None:
    assert client_address("2001:db8:1:2::1") == client_address("2001:db8:1:2:ffff::9")
    assert client_address("2001:db8:1:2::1") != client_address("2001:db8:1:3::1")
    assert client_address("192.0.2.7") == "192.0.2.7"


def test_passwords_are_stored_as_argon2id(session: Session) -> None:
    user = make_user(session)
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert verify_password(user.password_hash, PASSWORD)
    assert not verify_password(user.password_hash, PASSWORD + "x")
    assert not verify_password(None, PASSWORD)
    assert hash_password(PASSWORD) != user.password_hash  # salted


async def test_an_over_long_login_is_an_ordinary_failure(
    client: httpx.AsyncClient, session: Session
) -> None:
    token = await csrf_token(client)
    r = await client.post(
        "/login",
        data={"email": "a" * 5000 + "@x.test", "password": "p" * 100_000, "csrf_token": token},
    )
    assert r.status_code == 400
    assert "Wrong email or password." in r.text
    assert "aaaaaaaaaa" not in r.text  # not echoed back


async def test_many_accounts_guessed_from_one_address_are_throttled(
    session: Session, settings: Settings
) -> None:
    """Credential stuffing from one address slows down every new email tried there, but not
    the people who signed in from there before."""
    regular = make_user(session)
    assert _try(session, settings, regular.email, PASSWORD, "203.0.113.5").user is not None
    for n in range(4 * settings.login_max_failures):
        _try(session, settings, f"guess{n}@example.test", "x", "203.0.113.5")
    newcomer = make_user(session)
    assert _try(session, settings, newcomer.email, PASSWORD, "203.0.113.5").throttled
    assert _try(session, settings, regular.email, PASSWORD, "203.0.113.5").user is not None
