from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.audit.models import AuditEvent


def record(
    *,
    session: Session,
    actor_id: int | None,
    action: str,
    target_type: str = "",
    target_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details or {},
    )
    session.add(event)
    session.flush()
    return event
