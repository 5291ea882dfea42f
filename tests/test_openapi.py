"""The OpenAPI description says what the API sends (design §15): every error is
{"detail": str}, documented on every operation; an empty submission is invalid in the schema
as on the server."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.orm import Session

from app.auth.service import create_api_token
from tests.helpers import make_user


async def test_every_operation_documents_its_errors_in_one_shape(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/v1/openapi.json")).json()
    error = {"$ref": "#/components/schemas/ErrorOut"}
    assert spec["components"]["schemas"]["ErrorOut"]["required"] == ["detail"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # one 422 shape
    operations = [
        (path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()
    ]
    assert len(operations) >= 6
    for path, method, op in operations:
        for status in ("400", "401", "413", "422", "503") + (("404",) if "{" in path else ()):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == error, (method, path, status)
    submit = spec["paths"]["/api/v1/tasks/{task_id}/submit"]["post"]
    assert submit["responses"]["409"]["content"]["application/json"]["schema"] == error


async def test_an_empty_submission_is_invalid_in_the_schema_and_on_the_server(
    client: httpx.AsyncClient, session: Session
) -> None:
    spec = (await client.get("/api/v1/openapi.json")).json()
    submit_in = spec["components"]["schemas"]["SubmitIn"]
    assert {"required": ["ranking"]} in submit_in["anyOf"]
    _, token = create_api_token(session=session, user=make_user(session))
    auth = {"Authorization": f"Bearer {token}"}
    r = await client.post("/api/v1/tasks/1/submit", json={}, headers=auth)
    assert r.status_code == 422
    assert r.json() == {
        "detail": "body: Value error, give a `ranking`, `not_rankable: true` or a `text`"
    }
    r = await client.post("/api/v1/tasks/1/submit", json={"ranking": "no"}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"].startswith("body.ranking: ")


async def test_what_each_role_gets_is_documented(
    client: httpx.AsyncClient, session: Session
) -> None:
    """Every operation, called by an admin and by a labeler (ids 1, a small valid body), answers
    with a status its description lists: a labeler's 403 on the admin-only routes included
    (schemathesis found it undocumented)."""
    spec = (await client.get("/api/v1/openapi.json")).json()
    tokens = {}
    for role in ("admin", "labeler"):
        user = make_user(session, email=f"{role}@x.org", role=role)
        tokens[role] = create_api_token(session=session, user=user, name="t")[1]
    session.commit()
    seen = set()
    for path, ops in spec["paths"].items():
        url = re.sub(r"\{[a-z_]+_id\}", "1", path)
        assert "{" not in url, path
        for method, op in ops.items():
            for role, token in tokens.items():
                r = await client.request(
                    method, url, headers={"Authorization": f"Bearer {token}"},
                    json={"not_rankable": True} if method == "post" else None,
                )  # fmt: skip
                assert str(r.status_code) in op["responses"], (role, method, path, r.text)
                seen.add((role, r.status_code))
    assert ("labeler", 403) in seen and ("admin", 200) in seen


async def test_a_wrong_method_names_every_method_the_path_takes(
    client: httpx.AsyncClient, session: Session
) -> None:
    """A 405 lists every method of the path, where GET and PATCH are two routes (schemathesis
    found `Allow: GET` on `/projects/{id}`, which PATCH also takes)."""
    spec = (await client.get("/api/v1/openapi.json")).json()
    _, token = create_api_token(session=session, user=make_user(session, role="admin"))
    auth = {"Authorization": f"Bearer {token}"}
    checked = 0
    for path, ops in spec["paths"].items():
        documented = {method.upper() for method in ops}
        url = re.sub(r"\{[^}]+\}", "1", path)
        r = await client.request("OPTIONS", url, headers=auth)
        assert r.status_code == 405, (path, r.status_code)
        assert set(r.headers["allow"].split(", ")) == documented, path
        checked += len(ops) > 1
    assert checked >= 1  # a path with two routes was among them
