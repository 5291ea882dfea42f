from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.auth.models import Role
from app.deps import ApiUser

router = APIRouter(tags=["auth"])


class MeOut(BaseModel):
    id: int
    email: str
    role: Role


@router.get("/me", response_model=MeOut)
def api_me(user: ApiUser) -> MeOut:
    return MeOut(id=user.id, email=user.email, role=user.role)
