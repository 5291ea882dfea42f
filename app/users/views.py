"""Admin pages for accounts: the users table, new user, deactivate/reactivate, reset password.

Row actions answer htmx with the row alone (swapped in place) and a plain form post with a
redirect back to the table, so every action works without JavaScript too.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.audit.service import record
from app.auth.models import Role, User
from app.auth.service import UserError, list_api_tokens, revoke_api_token
from app.deps import AdminUser, DbSession
from app.users.service import (
    UserFormError,
    account_errors,
    create_account,
    deactivate_user,
    get_user,
    reactivate_user,
    reset_password,
    user_rows,
)
from app.web.templating import is_htmx, render

# A page that shows a password once: no browser or proxy may keep a copy (Back, history).
SHOWN_ONCE = {"Cache-Control": "no-store"}

router = APIRouter(prefix="/admin/users", tags=["users"])

GENERATE, TYPE = "generate", "set"
TYPE_OR_GENERATE = "type a password, or choose to generate one"
# ?done=...&user=ID on the table after a plain form post says what just happened.
DONE_NOTES = {
    "deactivated": "{} was deactivated and signed out everywhere.",
    "reactivated": "{} can sign in again.",
}


def _users_page(
    request: Request,
    session: DbSession,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    note: str | None = None,
    status_code: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "rows": user_rows(session=session),
        "row_errors": {},
        "form": form or {"email": "", "display_name": "", "role": "labeler", "password_mode": ""},
        "errors": errors or {},
        "error": error,
        "note": note,
        "roles": [r.value for r in Role],
    }
    return render(request, "users/list.html", context, status_code=status_code)


def _row(request: Request, session: DbSession, user: User, error: str | None = None) -> Response:
    """One row of the table, for htmx to swap in place."""
    row = user_rows(session=session, users=[user])[0]
    context = {"row": row, "row_errors": {user.id: error} if error else {}}
    return render(request, "users/list.html", context, block="user_row")


@router.get("", name="users_list")
def users_list(
    request: Request, session: DbSession, user: AdminUser, done: str = "", user_id: int = 0
) -> Response:
    note = None
    if done in DONE_NOTES and user_id:
        target = session.get(User, user_id)
        note = DONE_NOTES[done].format(target.label) if target else None
    return _users_page(request, session, note=note)


@router.post("", name="users_create")
def users_create(
    request: Request,
    session: DbSession,
    user: AdminUser,
    email: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = Role.labeler.value,
    password_mode: Annotated[str, Form()] = GENERATE,
    password: Annotated[str, Form()] = "",
) -> Response:
    # Never echoed back: the password field comes back empty after an error.
    form = {"email": email, "display_name": display_name, "role": role}
    form["password_mode"] = password_mode
    typed = password if password_mode == TYPE else None
    if typed == "":
        # Every message at once: the other fields are checked too.
        errors = account_errors(session=session, email=email, role=role, display_name=display_name)
        errors["password"] = TYPE_OR_GENERATE
        return _users_page(request, session, form=form, errors=errors, status_code=422)
    try:
        new_user, generated = create_account(
            session=session, email=email, role=role, display_name=display_name, password=typed
        )
    except UserFormError as exc:
        return _users_page(request, session, form=form, errors=exc.errors, status_code=422)
    record(
        session=session,
        actor_id=user.id,
        action="user.create",
        target_type="user",
        target_id=new_user.id,
        details={"email": new_user.email, "role": new_user.role.value},
    )
    session.commit()
    return render(
        request, "users/created.html", {"new_user": new_user, "password": generated},
        headers=SHOWN_ONCE,
    )  # fmt: skip


@router.post("/{user_id}/deactivate", name="user_deactivate")
def user_deactivate(
    request: Request, session: DbSession, user: AdminUser, user_id: int
) -> Response:
    target = get_user(session=session, user_id=user_id)
    try:
        deactivate_user(session=session, user=target, actor=user)
    except UserError as exc:
        message = str(exc)
        if is_htmx(request):
            return _row(request, session, target, error=message)
        return _users_page(request, session, error=message, status_code=409)
    return _activation_done(request, session, user, target, "deactivate")


@router.post("/{user_id}/reactivate", name="user_reactivate")
def user_reactivate(
    request: Request, session: DbSession, user: AdminUser, user_id: int
) -> Response:
    target = get_user(session=session, user_id=user_id)
    reactivate_user(session=session, user=target)
    return _activation_done(request, session, user, target, "reactivate")


@router.get("/{user_id}/reset-password", name="user_reset_password_form")
def reset_password_form(
    request: Request, session: DbSession, user: AdminUser, user_id: int
) -> Response:
    target = get_user(session=session, user_id=user_id)
    context = {"target": target, "mode": GENERATE, "errors": {}, "done": False, "password": None}
    return render(request, "users/reset_password.html", context)


@router.post("/{user_id}/reset-password", name="user_reset_password")
def user_reset_password(
    request: Request,
    session: DbSession,
    user: AdminUser,
    user_id: int,
    password_mode: Annotated[str, Form()] = GENERATE,
    password: Annotated[str, Form()] = "",
) -> Response:
    target = get_user(session=session, user_id=user_id)
    typed = password if password_mode == TYPE else None
    try:
        if typed == "":
            raise UserFormError({"password": TYPE_OR_GENERATE})
        generated = reset_password(session=session, user=target, password=typed)
    except UserFormError as exc:
        context = {
            "target": target, "mode": password_mode, "errors": exc.errors, "done": False,
            "password": None,
        }  # fmt: skip
        return render(request, "users/reset_password.html", context, status_code=422)
    record(
        session=session,
        actor_id=user.id,
        action="user.reset_password",
        target_type="user",
        target_id=target.id,
        details={"email": target.email, "generated": generated is not None},
    )
    session.commit()
    context = {"target": target, "mode": password_mode, "errors": {}, "done": True}
    return render(
        request, "users/reset_password.html", {**context, "password": generated},
        headers=SHOWN_ONCE,
    )  # fmt: skip


def _activation_done(
    request: Request, session: DbSession, admin: User, target: User, action: str
) -> Response:
    """After (de)activating: audit, commit, then the row (htmx) or the page with a note."""
    record(
        session=session,
        actor_id=admin.id,
        action=f"user.{action}",
        target_type="user",
        target_id=target.id,
        details={"email": target.email},
    )
    session.commit()
    if is_htmx(request):
        return _row(request, session, target)
    return RedirectResponse(f"/admin/users?done={action}d&user_id={target.id}", status_code=303)


@router.get("/{user_id}/tokens", name="user_tokens")
def user_tokens(
    request: Request, session: DbSession, user: AdminUser, user_id: int, done: str = ""
) -> Response:
    target = get_user(session=session, user_id=user_id)
    notice = "The token is revoked: it no longer works." if done == "revoked" else None
    return render(
        request,
        "users/tokens.html",
        {
            "target": target,
            "tokens": list_api_tokens(session=session, user=target),
            "notice": notice,
        },
    )


@router.post("/{user_id}/tokens/{token_id}/revoke", name="user_token_revoke")
def user_token_revoke(
    request: Request, session: DbSession, user: AdminUser, user_id: int, token_id: int
) -> Response:
    target = get_user(session=session, user_id=user_id)
    revoke_api_token(session=session, user=target, token_id=token_id)
    record(
        session=session, actor_id=user.id, action="token.revoke", target_type="user",
        target_id=target.id, details={"token": token_id},
    )  # fmt: skip
    session.commit()
    return RedirectResponse(f"/admin/users/{target.id}/tokens?done=revoked", status_code=303)
