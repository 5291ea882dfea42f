"""Users, logins and API tokens. Services flush; the caller commits."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, bindparam, func, select
from sqlalchemy.orm import Session, contains_eager

from app.auth.models import ApiToken, LoginAttempt, Role, User, UserSession
from app.auth.passwords import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    needs_rehash,
    verify_password,
)
from app.db import utcnow
from app.errors import NotFoundError

API_TOKEN_PREFIX = "rlhf_"  # noqa: S105 - a public prefix, not a secret
# A browser session ends after this long even if it is used every day.
SESSION_ABSOLUTE_LIFETIME = timedelta(days=30)
# How often an API token's last_used_at is written (not on every request).
TOKEN_TOUCH_INTERVAL = timedelta(minutes=5)


class UserError(ValueError):
    """A user could not be created or changed; the message is shown as it is."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def get_user_by_email(*, session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalize_email(email)))


def create_user(
    *,
    session: Session,
    email: str,
    password: str,
    role: Role = Role.labeler,
    display_name: str = "",
) -> User:
    email = normalize_email(email)
    if "@" not in email or len(email) > 320:
        raise UserError(f"not an email address: {email!r}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if get_user_by_email(session=session, email=email) is not None:
        raise UserError(f"a user with the email {email} already exists")
    user = User(
        email=email,
        password_hash=hash_password(password),
        role=role,
        display_name=display_name.strip(),
        is_active=True,
    )
    session.add(user)
    session.flush()
    return user


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    throttled: bool = False
    retry_after_seconds: int = 0


#: an address that signed in as this email this recently is the owner's: no account-wide delay
KNOWN_ADDRESS = timedelta(days=30)


@dataclass(frozen=True)
class _Failures:
    count: int
    last: datetime | None

    def wait(self, *, free: int, now: datetime, longest: timedelta) -> float:
        """Seconds still to wait: none for the first ``free`` failures, then a delay that
        doubles with each failure (1 s, 2 s, 4 s, ...) up to ``longest``, counted from the
        last failure. Never a lock-out: the wait ends by itself."""
        if self.count < free or self.last is None:
            return 0.0
        delay = min(longest.total_seconds(), 2.0 ** min(self.count - free, 40))
        return max(0.0, (self.last - now).total_seconds() + delay)


def _failures(session: Session, since: datetime, *where: ColumnElement[bool]) -> _Failures:
    count, last = session.execute(
        select(func.count(), func.max(LoginAttempt.created_at)).where(
            LoginAttempt.created_at >= since, LoginAttempt.succeeded.is_(False), *where
        )
    ).one()
    return _Failures(count=count or 0, last=last)


def _known_address(session: Session, *, email: str, ip: str, now: datetime) -> bool:
    signed_in = select(LoginAttempt.id).where(
        LoginAttempt.email == email,
        LoginAttempt.ip == ip,
        LoginAttempt.succeeded.is_(True),
        LoginAttempt.created_at >= now - KNOWN_ADDRESS,
    )
    return session.scalar(signed_in.limit(1)) is not None


def login_wait(
    *, session: Session, email: str, ip: str, max_failures: int, window: timedelta
) -> float:
    """Seconds this address must still wait before a login as ``email`` is checked (design
    §15: guessing stays slow, nobody is locked out).

    - This email from this address: ``max_failures`` free failures, then growing delays.
    - This email from anywhere (one account guessed from many addresses): ``4 x max_failures``
      free, then growing delays, but only for addresses that have failed as this email
      themselves and are not the owner's (no sign-in as it from there in 30 days). A fresh
      address, the owner's included, is never held up by others' failures.
    - This address for any email (many accounts tried from one address): the same, except
      for emails that signed in from there before, so one NAT address cannot shut out the
      colleagues behind it."""
    now = utcnow()
    since = now - window
    pair = _failures(session, since, LoginAttempt.email == email, LoginAttempt.ip == ip)
    waits = [pair.wait(free=max_failures, now=now, longest=window)]
    if not _known_address(session, email=email, ip=ip, now=now):
        if pair.count:
            account = _failures(session, since, LoginAttempt.email == email)
            waits.append(account.wait(free=4 * max_failures, now=now, longest=window))
        address = _failures(session, since, LoginAttempt.ip == ip)
        waits.append(address.wait(free=4 * max_failures, now=now, longest=window))
    return max(waits)


def client_address(ip: str) -> str:
    """The key an address is throttled by: IPv6 clients by their /64, which one user owns."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def authenticate(
    *,
    session: Session,
    email: str,
    password: str,
    ip: str,
    max_failures: int,
    window: timedelta,
) -> LoginResult:
    """Check a login. Unknown email and wrong password look the same to the caller. While
    ``login_wait`` says this address must wait, the login is refused without checking the
    password (``retry_after_seconds`` says how long)."""
    email = normalize_email(email)[:320]
    ip = client_address(ip)
    if session.get_bind().dialect.name == "postgresql":
        # Parallel guesses for one email queue here, so none slips past the count below.
        # (On SQLite the login's write transaction already runs alone.)
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(email))))
    wait = login_wait(session=session, email=email, ip=ip, max_failures=max_failures, window=window)
    if wait > 0:
        return LoginResult(user=None, throttled=True, retry_after_seconds=math.ceil(wait))

    user = get_user_by_email(session=session, email=email)
    ok = verify_password(user.password_hash if user else None, password)
    ok = ok and user is not None and user.is_active
    session.add(LoginAttempt(email=email, ip=ip, succeeded=ok))
    if not ok or user is None:
        session.flush()
        return LoginResult(user=None)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    session.flush()
    return LoginResult(user=user)


def hash_api_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(
    *, session: Session, user: User, name: str = "", expires_in: timedelta | None = None
) -> tuple[ApiToken, str]:
    """Returns the row and the token itself, which is shown once and never stored.
    ``expires_in``: the token stops working that long from now (None: until revoked)."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=name.strip()[:120],
        token_prefix=token[: len(API_TOKEN_PREFIX) + 6],
        token_hash=hash_api_token(token),
        expires_at=utcnow() + expires_in if expires_in is not None else None,
    )
    session.add(row)
    session.flush()
    return row, token


@functools.cache
def _live_token_statement() -> Select[ApiToken]:
    """Built once: every API request runs it, and building it cost more than running it."""
    return (
        select(ApiToken)
        .join(ApiToken.user)
        .options(contains_eager(ApiToken.user))
        .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
    )


def api_token_for(*, session: Session, token: str) -> ApiToken | None:
    """The live token row for a presented token (not revoked, not expired, its user active),
    or None. Its user comes in the same query."""
    row = session.scalar(_live_token_statement(), {"token_hash": hash_api_token(token)})
    if row is None or not row.user.is_active or row.state != "live":
        return None
    return row


def list_api_tokens(*, session: Session, user: User) -> list[ApiToken]:
    """Every token of the user, newest first, revoked and expired ones included."""
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )


def revoke_api_token(*, session: Session, user: User, token_id: int) -> ApiToken:
    """Revokes one token of ``user`` (again is a no-op); NotFoundError for another's."""
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        raise NotFoundError(f"{user.email} has no API token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
    return token


def revoke_all_api_tokens(*, session: Session, user_id: int) -> int:
    """After a password reset or deactivation: no token of the user works again. How many."""
    now = utcnow()
    tokens = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    ).all()
    for token in tokens:
        token.revoked_at = now
    session.flush()
    return len(tokens)


def token_needs_touch(token: ApiToken) -> bool:
    return token.last_used_at is None or utcnow() - token.last_used_at > TOKEN_TOUCH_INTERVAL


def touch_api_token(*, session: Session, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is not None:
        token.last_used_at = utcnow()
        session.flush()


def start_session(*, session: Session, user: User, ip: str, user_agent: str) -> UserSession:
    row = UserSession(
        id=secrets.token_urlsafe(32), user_id=user.id, ip=ip[:64], user_agent=user_agent[:300]
    )
    session.add(row)
    session.flush()
    return row


def user_for_session(*, session: Session, session_id: str) -> User | None:
    row = session.get(UserSession, session_id)
    if row is None or row.revoked_at is not None:
        return None
    if utcnow() - row.created_at > SESSION_ABSOLUTE_LIFETIME:
        return None
    user = session.get(User, row.user_id)
    return user if user is not None and user.is_active else None


def end_session(*, session: Session, session_id: str) -> None:
    row = session.get(UserSession, session_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()


def end_all_sessions(*, session: Session, user_id: int) -> None:
    """After a password reset or deactivation: every browser of this user is signed out."""
    now = utcnow()
    rows = session.scalars(
        select(UserSession).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
    )
    for row in rows:
        row.revoked_at = now
    session.flush()
