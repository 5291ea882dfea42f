"""Users, logins and API tokens. Services flush; the caller commits."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import ApiToken, LoginAttempt, Role, User
from app.auth.passwords import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    needs_rehash,
    verify_password,
)
from app.db import utcnow

API_TOKEN_PREFIX = "rlhf_"  # noqa: S105 - a public prefix, not a secret


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


def _recent_failures(
    *, session: Session, email: str, ip: str, window: timedelta
) -> tuple[int, int]:
    since = utcnow() - window
    base = (
        select(func.count())
        .select_from(LoginAttempt)
        .where(LoginAttempt.created_at >= since, LoginAttempt.succeeded.is_(False))
    )
    per_account = session.scalar(base.where(LoginAttempt.email == email, LoginAttempt.ip == ip))
    per_address = session.scalar(base.where(LoginAttempt.ip == ip))
    return per_account or 0, per_address or 0


def authenticate(
    *,
    session: Session,
    email: str,
    password: str,
    ip: str,
    max_failures: int,
    window: timedelta,
) -> LoginResult:
    """Check a login. Unknown email and wrong password look the same to the caller; after
    ``max_failures`` failures for this email from this address (or 4x that from the address
    across emails) within ``window``, logins are refused without checking the password."""
    email = normalize_email(email)[:320]
    per_account, per_address = _recent_failures(session=session, email=email, ip=ip, window=window)
    if per_account >= max_failures or per_address >= 4 * max_failures:
        return LoginResult(
            user=None, throttled=True, retry_after_seconds=int(window.total_seconds())
        )

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


def create_api_token(*, session: Session, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Returns the row and the token itself, which is shown once and never stored."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_prefix=token[: len(API_TOKEN_PREFIX) + 6],
        token_hash=hash_api_token(token),
    )
    session.add(row)
    session.flush()
    return row, token


def user_for_api_token(*, session: Session, token: str) -> User | None:
    row = session.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == hash_api_token(token), ApiToken.revoked_at.is_(None)
        )
    )
    if row is None or not row.user.is_active:
        return None
    row.last_used_at = utcnow()
    return row.user
