"""The OpenAI-compatible backend against a real HTTP server started here on loopback, which
serves the tiny local model (its answers are sampled, not canned)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs import kinds
from app.jobs.models import JobStatus
from app.jobs.service import create_job
from app.labeling.models import Completion
from app.projects.generation import GenerationSettings, update_generation_settings
from tests.helpers import make_project, make_prompt
from tests.processes import free_port
from workers.runner import run_job

TEXTS = ["Rank the answers from best to worst.", "A tiny model says tiny things."] * 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.ml.sampling import SamplingParams, sample_answers
    from workers.ml.tiny import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("served") / "m", texts=TEXTS)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(
                {"path": self.path, "authorization": self.headers.get("Authorization"), **body}
            )
            prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
            params = SamplingParams(
                temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
                max_new_tokens=body.get("max_tokens", 16),
            )  # fmt: skip
            with lock:
                result = sample_answers(
                    model, tokenizer, [prompt], k=body.get("n", 1), params=params
                )
            texts = result.answers[0]
            if self.path == "/v1/chat/completions":
                choices = [
                    {"index": i, "message": {"role": "assistant", "content": t}}
                    for i, t in enumerate(texts)
                ]
            else:
                choices = [{"index": i, "text": t} for i, t in enumerate(texts)]
            payload = json.dumps(
                {"choices": choices, "usage": {"completion_tokens": result.new_tokens}}
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload.encode())

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


@pytest.mark.parametrize("chat", [False, True])
def test_generation_through_an_endpoint(
    session: Session, session_factory: sessionmaker[Session], settings: Settings,
    server: tuple[str, list[dict[str, Any]]], chat: bool,
) -> None:  # fmt: skip
    url, seen = server
    project = make_project(session, k=4)
    prompt = make_prompt(session, project, text="What do tiny models say?", answers=0)
    params = {
        "endpoint": {"url": url, "model": "tiny", "chat": chat},
        "sampling": {"max_new_tokens": 12},
    }
    job = create_job(session=session, kind=kinds.GENERATE, project_id=project.id, params=params)
    session.commit()
    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    assert status == JobStatus.succeeded, job.error
    stored = session.scalars(select(Completion).where(Completion.prompt_id == prompt.id)).all()
    assert 1 <= len(stored) <= 4  # a tiny random model repeats itself; duplicates are dropped
    assert {c.origin for c in stored} == {f"endpoint:{url}#tiny"}
    request = seen[-1]
    assert request["path"] == ("/v1/chat/completions" if chat else "/v1/completions")
    assert request["n"] == 4 and request["model"] == "tiny" and request["max_tokens"] == 12
    if chat:
        assert request["messages"] == [{"role": "user", "content": "What do tiny models say?"}]
    else:
        assert request["prompt"] == "User: What do tiny models say?\nAssistant: "


def test_an_unreachable_endpoint_fails_the_job_clearly(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    project = make_project(session, k=4)
    prompt = make_prompt(session, project, answers=0)
    url = f"http://127.0.0.1:{free_port()}"
    job = create_job(
        session=session, kind=kinds.GENERATE, project_id=project.id,
        params={"endpoint": {"url": url, "model": "x"}},
    )  # fmt: skip
    session.commit()
    assert (
        run_job(job_id=job.id, session_factory=session_factory, settings=settings)
        == JobStatus.failed
    )
    session.refresh(job)
    assert "Cannot reach" in (job.error or "")
    assert session.scalars(select(Completion).where(Completion.prompt_id == prompt.id)).all() == []


def test_a_bad_endpoint_setting_is_refused(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    project = make_project(session, k=4)
    job = create_job(
        session=session, kind=kinds.GENERATE, project_id=project.id,
        params={"endpoint": {"url": "ftp://nope", "model": "x"}},
    )  # fmt: skip
    session.commit()
    assert (
        run_job(job_id=job.id, session_factory=session_factory, settings=settings)
        == JobStatus.failed
    )
    session.refresh(job)
    assert "must start with http://" in (job.error or "")


def test_the_projects_stored_server_is_used_with_the_key_from_the_environment(
    session: Session, session_factory: sessionmaker[Session], settings: Settings,
    server: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """What the generation settings page stores is what the job reads; the API key comes
    from the worker's environment, never from the database."""
    url, seen = server
    monkeypatch.setenv("RLHF_ENDPOINT_API_KEY", "sk-local-test")
    project = make_project(session, k=3)
    update_generation_settings(
        session=session,
        project=project,
        settings=GenerationSettings(
            use_endpoint=True, endpoint_url=url, endpoint_model="tiny", max_new_tokens=10,
            temperature=0.8,
        ),
    )  # fmt: skip
    prompt = make_prompt(session, project, text="Say something.", answers=0)
    job = create_job(session=session, kind=kinds.GENERATE, project_id=project.id)
    session.commit()
    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    assert status == JobStatus.succeeded, job.error
    request = seen[-1]
    assert request["authorization"] == "Bearer sk-local-test"
    assert (request["n"], request["max_tokens"], request["temperature"]) == (3, 10, 0.8)
    stored = session.scalars(select(Completion).where(Completion.prompt_id == prompt.id)).all()
    assert stored and {c.origin for c in stored} == {f"endpoint:{url}#tiny"}
    assert "sk-local-test" not in json.dumps(project.sampling_params)
