"""`rlhf users`: user accounts."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from app.cli.common import db_session, fail, print_json

users_app = typer.Typer(help="User accounts.", no_args_is_help=True)


class RoleOption(StrEnum):
    admin = "admin"
    labeler = "labeler"


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        fail("no terminal to ask for a password; pass it with --password-stdin")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="Login email")],
    role: Annotated[RoleOption, typer.Option(help="admin or labeler")] = RoleOption.labeler,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    token: Annotated[
        bool, typer.Option("--token", help="Also create and print an API token")
    ] = False,
    name: Annotated[str, typer.Option(help="Display name")] = "",
) -> None:
    """Create a user. Prints the new id, and with --token the API token (shown only once)."""
    from app.auth.models import Role
    from app.auth.service import create_api_token, create_user

    password = _read_password(password_stdin)
    with db_session() as session:
        user = create_user(
            session=session,
            email=email,
            password=password,
            role=Role(role.value),
            display_name=name,
        )
        secret = create_api_token(session=session, user=user, name="cli")[1] if token else None
        user_id = user.id
    typer.echo(f"created user {user_id} ({email}, {role.value})")
    if secret:
        typer.echo(secret)


@users_app.command("list")
def users_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List users."""
    from sqlalchemy import select

    from app.auth.models import User

    with db_session() as session:
        users = session.scalars(select(User).order_by(User.id)).all()
        rows = [
            {"id": u.id, "email": u.email, "role": u.role.value, "active": u.is_active}
            for u in users
        ]
    if json_out:
        print_json(rows)
        return
    for row in rows:
        state = "" if row["active"] else "  (deactivated)"
        typer.echo(f"{row['id']:>5}  {row['role']:<8} {row['email']}{state}")


@users_app.command("deactivate")
def users_deactivate(email: Annotated[str, typer.Argument(help="Login email")]) -> None:
    """Deactivate a user: they cannot sign in, their sessions end and their API tokens stop
    working. Their rankings and demonstrations are kept."""
    from app.audit.service import record
    from app.users.service import deactivate_user, find_user

    with db_session() as session:
        user = find_user(session=session, email=email)
        deactivate_user(session=session, user=user)
        record(
            session=session, actor_id=None, action="user.deactivate", target_type="user",
            target_id=user.id, details={"email": user.email, "via": "cli"},
        )  # fmt: skip
        user_email = user.email
    typer.echo(f"deactivated {user_email} (signed out everywhere, API tokens revoked)")


@users_app.command("reset-password")
def users_reset_password(
    email: Annotated[str, typer.Argument(help="Login email")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the new password from standard input")
    ] = False,
) -> None:
    """Set a new password and sign the user out everywhere. Without --password-stdin a
    password is generated and printed (shown only once)."""
    from app.audit.service import record
    from app.users.service import find_user, reset_password

    typed = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    with db_session() as session:
        user = find_user(session=session, email=email)
        generated = reset_password(session=session, user=user, password=typed)
        record(
            session=session, actor_id=None, action="user.reset_password", target_type="user",
            target_id=user.id, details={"email": user.email, "via": "cli",
                                        "generated": generated is not None},
        )  # fmt: skip
        user_email = user.email
    typer.echo(f"password reset for {user_email} (signed out everywhere)")
    if generated:
        typer.echo(generated)


@users_app.command("tokens")
def users_tokens(
    email: Annotated[str, typer.Argument(help="Login email")],
    revoke: Annotated[
        int | None, typer.Option("--revoke", metavar="ID", help="Revoke this token")
    ] = None,
    create: Annotated[
        str | None, typer.Option("--create", metavar="NAME", help="Make a token with this name")
    ] = None,
    expires_days: Annotated[
        int | None,
        typer.Option("--expires-days", min=1, help="With --create: the token expires then"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List a user's API tokens (name, created, last used, expiry, state); --revoke ID
    revokes one, --create NAME makes one and prints it (shown only once)."""
    from datetime import timedelta

    from app.audit.service import record
    from app.auth.service import create_api_token, list_api_tokens, revoke_api_token
    from app.users.service import find_user

    if expires_days is not None and create is None:
        fail("--expires-days goes with --create NAME")
    secret = None
    with db_session() as session:
        user = find_user(session=session, email=email)
        if revoke is not None:
            token = revoke_api_token(session=session, user=user, token_id=revoke)
            record(
                session=session, actor_id=None, action="token.revoke", target_type="user",
                target_id=user.id, details={"token": token.id, "via": "cli"},
            )  # fmt: skip
        if create is not None:
            expires = timedelta(days=expires_days) if expires_days else None
            secret = create_api_token(session=session, user=user, name=create, expires_in=expires)[
                1
            ]
        rows: list[dict[str, Any]] = [
            {
                "id": t.id, "name": t.name, "prefix": t.token_prefix, "state": t.state,
                "created_at": t.created_at.isoformat(),
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            }
            for t in list_api_tokens(session=session, user=user)
        ]  # fmt: skip
    if json_out:
        print_json(rows)
    else:
        for row in rows:
            used = (row["last_used_at"] or "never")[:16]
            until = (row["expires_at"] or "never")[:16]
            typer.echo(
                f"{row['id']:>5}  {row['state']:<8} {row['prefix']}…  {row['name'] or '-':<20} "
                f"created {row['created_at'][:16]}  last used {used}  expires {until}"
            )
        if not rows:
            typer.echo(f"{email} has no API tokens")
    if secret:
        typer.echo(secret)
