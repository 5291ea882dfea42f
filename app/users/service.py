"""Managing accounts as an admin: create, deactivate, reactivate, reset a password.
Services flush; the caller commits and records the audit event."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import Role, User
from app.auth.passwords import MIN_PASSWORD_LENGTH, hash_password
from app.auth.service import (
    UserError,
    create_user,
    end_all_sessions,
    get_user_by_email,
    normalize_email,
    revoke_all_api_tokens,
)
from app.errors import NotFoundError
from app.labeling.models import Comparison, Demonstration

MAX_DISPLAY_NAME = 120
MAX_PASSWORD_LENGTH = 1024  # the login form refuses longer ones


class UserFormError(UserError):
    """One message per wrong field (``email``, ``display_name``, ``role``, ``password``)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def generate_password() -> str:
    """16 URL-safe characters (96 random bits): easy to copy, shown once."""
    return secrets.token_urlsafe(12)


def password_error(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must have at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"the password must have at most {MAX_PASSWORD_LENGTH} characters"
    return None


def get_user(*, session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user {user_id}")
    return user


def find_user(*, session: Session, email: str) -> User:
    """A user by email, as the CLI names them."""
    user = get_user_by_email(session=session, email=email)
    if user is None:
        raise NotFoundError(f"no user with the email {normalize_email(email)}")
    return user


def account_errors(
    *,
    session: Session,
    email: str,
    role: str,
    display_name: str = "",
    password: str | None = None,
) -> dict[str, str]:
    """A message per field that would stop ``create_account`` (empty when all is well)."""
    errors: dict[str, str] = {}
    email = normalize_email(email)
    if not email:
        errors["email"] = "an email address is needed"
    elif "@" not in email.strip("@") or len(email) > 320 or any(c.isspace() for c in email):
        errors["email"] = f"not an email address: {email!r}"
    elif get_user_by_email(session=session, email=email) is not None:
        errors["email"] = f"a user with the email {email} already exists"
    if len(display_name.strip()) > MAX_DISPLAY_NAME:
        errors["display_name"] = f"a display name has at most {MAX_DISPLAY_NAME} characters"
    if role not in {r.value for r in Role}:
        errors["role"] = "the role is admin or labeler"
    if password is not None and (message := password_error(password)):
        errors["password"] = message
    return errors


def create_account(
    *,
    session: Session,
    email: str,
    role: str,
    display_name: str = "",
    password: str | None = None,
) -> tuple[User, str | None]:
    """A new active user. Without ``password`` one is generated; it is returned (to be shown
    once) and stored nowhere but as its hash. Raises ``UserFormError``."""
    errors = account_errors(
        session=session, email=email, role=role, display_name=display_name, password=password
    )
    if errors:
        raise UserFormError(errors)
    generated = generate_password() if password is None else None
    user = create_user(
        session=session,
        email=email,
        password=password if password is not None else str(generated),
        role=Role(role),
        display_name=display_name,
    )
    return user, generated


def deactivate_user(*, session: Session, user: User, actor: User | None = None) -> None:
    """The user can no longer sign in; every browser session of theirs ends now and every API
    token is revoked (a reactivated user gets new ones). ``actor``: the admin doing it."""
    if actor is not None and actor.id == user.id:
        raise UserError("you cannot deactivate your own account; ask another admin")
    user.is_active = False
    end_all_sessions(session=session, user_id=user.id)
    revoke_all_api_tokens(session=session, user_id=user.id)


def reactivate_user(*, session: Session, user: User) -> None:
    user.is_active = True
    session.flush()


def reset_password(*, session: Session, user: User, password: str | None = None) -> str | None:
    """Sets ``password``, or a generated one, which is returned (shown once). Every session
    of the user ends and every API token is revoked, so whoever knew the old password is
    signed out and holds no token made with it. Raises
    ``UserFormError`` for a password that is too short or too long."""
    if password is not None and (message := password_error(password)):
        raise UserFormError({"password": message})
    generated = generate_password() if password is None else None
    user.password_hash = hash_password(password if password is not None else str(generated))
    end_all_sessions(session=session, user_id=user.id)
    revoke_all_api_tokens(session=session, user_id=user.id)
    return generated


@dataclass(frozen=True)
class UserRow:
    """A user with what they did, for the users table."""

    user: User
    rankings: int = 0
    demonstrations: int = 0


def user_rows(*, session: Session, users: Sequence[User] | None = None) -> list[UserRow]:
    """Every user (or the given ones) with their counts, in two grouped queries."""
    if users is None:
        users = session.scalars(select(User).order_by(User.created_at, User.id)).all()
    ids = [u.id for u in users]
    if not ids:
        return []
    rankings = {
        uid: int(n or 0)
        for uid, n in session.execute(
            select(Comparison.labeler_id, func.count())
            .where(Comparison.labeler_id.in_(ids), Comparison.is_latest.is_(True))
            .group_by(Comparison.labeler_id)
        ).all()
    }
    demonstrations = {
        uid: int(n or 0)
        for uid, n in session.execute(
            select(Demonstration.author_id, func.count())
            .where(Demonstration.author_id.in_(ids))
            .group_by(Demonstration.author_id)
        ).all()
    }
    return [
        UserRow(
            user=u,
            rankings=rankings.get(u.id, 0),
            demonstrations=demonstrations.get(u.id, 0),
        )
        for u in users
    ]
