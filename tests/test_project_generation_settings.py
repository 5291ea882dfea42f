"""The project's generation settings page: sampling parameters and the answers' source
(current policy or an OpenAI-compatible server), with each rule shown next to its field."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.projects.generation import (
    GenerationSettings,
    check_generation_settings,
    update_generation_settings,
)
from tests.helpers import csrf_token, field_error, login, make_admin, make_project, make_user

ENDPOINT_FORM = {
    "backend": "endpoint",
    "endpoint_url": " http://gpu-box:8000/ ",
    "endpoint_model": " llama-3-8b ",
    "endpoint_chat": "true",
    "temperature": "0.7",
    "top_p": "0.9",
    "top_k": "0",
    "max_new_tokens": "128",
}


async def test_admin_points_a_project_at_a_server(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    await login(client, make_admin(session))
    path = f"/admin/projects/{project.id}/generation"
    token = await csrf_token(client, path)
    r = await client.post(path, data={**ENDPOINT_FORM, "csrf_token": token})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/admin/projects/{project.id}?saved=generation"
    session.refresh(project)
    assert project.sampling_params == {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "max_new_tokens": 128,
        "endpoint": {"url": "http://gpu-box:8000", "model": "llama-3-8b", "chat": True},
    }
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "project.generation")
    ).one()
    assert event.details["temperature"] == [1.0, 0.7]
    page = (await client.get(r.headers["location"])).text
    assert "Generation settings saved" in page
    assert "http://gpu-box:8000 · llama-3-8b (chat)" in page
    # The form shows what is stored.
    form = (await client.get(path)).text
    assert 'value="http://gpu-box:8000"' in form and 'value="0.7"' in form
    assert re.search(r'value="endpoint" checked', form)


async def test_switching_back_to_the_policy_keeps_the_typed_server(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    await login(client, make_admin(session))
    path = f"/admin/projects/{project.id}/generation"
    token = await csrf_token(client, path)
    await client.post(path, data={**ENDPOINT_FORM, "csrf_token": token})
    r = await client.post(path, data={**ENDPOINT_FORM, "backend": "policy", "csrf_token": token})
    assert r.status_code == 303
    session.refresh(project)
    assert "endpoint" not in project.sampling_params  # the job samples from the policy
    assert GenerationSettings.of(project).endpoint_url == "http://gpu-box:8000"
    page = (await client.get(f"/admin/projects/{project.id}")).text
    assert "The current policy" in page


async def test_each_rule_is_shown_next_to_its_field_and_nothing_is_saved(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    before = dict(project.sampling_params)
    await login(client, make_admin(session))
    path = f"/admin/projects/{project.id}/generation"
    token = await csrf_token(client, path)
    bad = {
        **ENDPOINT_FORM,
        "endpoint_url": "gpu-box:8000",
        "endpoint_model": "  ",
        "temperature": "0",
        "top_p": "1.5",
        "top_k": "-1",
        "max_new_tokens": "lots",
        "csrf_token": token,
    }
    r = await client.post(path, data=bad)
    assert r.status_code == 422
    assert "must start with http://" in field_error(r.text, "endpoint_url")
    assert "name the model" in field_error(r.text, "endpoint_model").lower()
    assert "above 0" in field_error(r.text, "temperature")
    assert "at most 1" in field_error(r.text, "top_p")
    assert "0 (off)" in field_error(r.text, "top_k")
    assert "whole number" in field_error(r.text, "max_new_tokens")
    assert 'value="lots"' in r.text  # the input is kept as typed
    session.refresh(project)
    assert project.sampling_params == before


def test_a_password_in_the_address_is_refused() -> None:
    _, errors = check_generation_settings(
        GenerationSettings(
            use_endpoint=True, endpoint_url="http://me:secret@box", endpoint_model="m"
        )
    )
    assert "RLHF_ENDPOINT_API_KEY" in errors["endpoint_url"]


def test_server_fields_are_only_checked_when_the_server_is_chosen(session: Session) -> None:
    project = make_project(session)
    project.sampling_params = {**project.sampling_params, "seed": 7}
    changes = update_generation_settings(
        session=session,
        project=project,
        settings=GenerationSettings(temperature=0.5, endpoint_url="not a url"),
    )
    assert changes == {
        "saved_endpoint": [None, {"url": "not a url", "model": "", "chat": False}],
        "temperature": [1.0, 0.5],
    }
    assert project.sampling_params["seed"] == 7  # keys set elsewhere are kept
    assert "endpoint" not in project.sampling_params


async def test_labelers_cannot_see_or_change_generation_settings(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    before = dict(project.sampling_params)
    await login(client, make_user(session))
    token = await csrf_token(client, "/home")
    path = f"/admin/projects/{project.id}/generation"
    assert (await client.get(path)).status_code == 403
    r = await client.post(path, data={**ENDPOINT_FORM, "csrf_token": token})
    assert r.status_code == 403
    session.refresh(project)
    assert project.sampling_params == before
