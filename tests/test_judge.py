"""The judge job (`rlhf judge`) in-process, against real HTTP servers on loopback: the tiny
local model served through the OpenAI-compatible API (the generation tests' server), a judge
that ranks by a rule it reads from the prompt, one that needs the reminder, one that answers
garbage and ones that fail; and against reward models (stored scores reused, a tiny one
built here). Bad input is refused before queueing, in-process and by the real `rlhf`."""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs import kinds
from app.jobs.judging import JudgeError, judge_params
from app.jobs.models import Job, JobStatus
from app.labeling.models import Comparison, CompletionScore, Prompt, TaskKind
from app.labeling.queue import lease_next_task
from app.labeling.scores import served_answer_ids, store_scores
from app.models_registry.models import ModelKind
from app.projects.models import Project
from tests.helpers import build_tiny_reward_model, make_project, make_prompt, make_user
from tests.processes import free_port, rlhf, rlhf_env
from tests.test_openai_backend import server  # noqa: F401 - the tiny model's server (a fixture)
from tests.test_score_job import TEXTS, register, run, stored
from workers.judge import FAILED, UNPARSABLE

Seen = list[dict[str, Any]]
#: a reply: (HTTP status, the reply's text or, for a status other than 200, the body)
Reply = Callable[[dict[str, Any], int], tuple[int, str]]
SHOWN = re.compile(r"^\[([A-Z])\]\nAnswer (\d+) to ", re.M)


@contextmanager
def fake_judge(reply: Reply, *, raw: bool = False) -> Iterator[tuple[str, Seen]]:
    """An OpenAI-compatible server on loopback whose replies ``reply(body, n)`` writes (n:
    the request's number, from 1), in the API's JSON (``raw``: sent as they are); yields its
    URL and the requests it received."""
    seen: Seen = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen.append({"path": self.path, **body})
                status, text = reply(body, len(seen))
            if status == 200 and not raw:
                if self.path == "/v1/chat/completions":
                    choice: dict[str, Any] = {"message": {"role": "assistant", "content": text}}
                else:
                    choice = {"text": text}
                text = json.dumps({"choices": [{"index": 0, **choice}]})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()


def asked(body: dict[str, Any]) -> str:
    """The judge prompt of a request (the first user turn of a retry)."""
    if "messages" in body:
        return str(body["messages"][0]["content"])
    return str(body["prompt"])


def shown_numbers(body: dict[str, Any]) -> list[tuple[str, int]]:
    """(label, i) of each "Answer i to ..." the request shows, in the order shown."""
    return [(label, int(i)) for label, i in SHOWN.findall(asked(body))]


#: the rule judge's preference: Answer 0 best, Answers 1 and 2 as good, then 3, then 4
PLACE = {0: 0, 1: 1, 2: 1, 3: 2, 4: 3}


def by_rule(body: dict[str, Any], n: int) -> tuple[int, str]:
    places: dict[int, list[str]] = {}
    for label, i in shown_numbers(body):
        places.setdefault(PLACE[i], []).append(label)
    line = " > ".join(" = ".join(places[p]) for p in sorted(places))
    return 200, f"Answer quality varies.\nRanking: {line}"


def answer_number(session: Session, completion_id: int) -> int:
    from app.labeling.models import Completion

    text = session.get_one(Completion, completion_id).text
    return int(text.split()[1])


def judged(session: Session, project: Project, labeler: str) -> list[Comparison]:
    return list(
        session.scalars(
            select(Comparison)
            .join(Prompt, Prompt.id == Comparison.prompt_id)
            .where(Prompt.project_id == project.id, Comparison.labeler_external == labeler)
            .order_by(Comparison.prompt_id)
        )
    )


def ranked_project(session: Session, *, k: int = 4) -> tuple[Project, list[Prompt]]:
    """Prompts with K answers, one with K + 1 (K of them served), and one with K - 1 (not
    judged)."""
    project = make_project(session, k=k)
    prompts = [make_prompt(session, project, text=f"Question {j}?", answers=k) for j in range(3)]
    prompts.append(make_prompt(session, project, text="Question 3?", answers=k + 1))
    make_prompt(session, project, text="Question 4?", answers=k - 1)
    return project, prompts


def endpoint_job(
    session: Session, session_factory: sessionmaker[Session], settings: Settings,
    project: Project, url: str, **params: Any,
) -> Job:  # fmt: skip
    params = {"endpoint_url": url, "endpoint_model": "judge-model/v1", **params}
    return run(session, session_factory, settings, kinds.JUDGE, project, **params)


@pytest.mark.parametrize("chat", [False, True])
def test_an_endpoint_judge_stores_rankings_by_ai_name_in_the_order_it_was_shown(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, chat: bool
) -> None:
    project, prompts = ranked_project(session)
    with fake_judge(by_rule) as (url, seen):
        job = endpoint_job(session, session_factory, settings, project, url, chat=chat)
        assert job.status == JobStatus.succeeded, job.error
        rows = judged(session, project, "ai:judge-model/v1")
        assert [c.prompt_id for c in rows] == [p.id for p in prompts]  # not the one with K - 1
        assert len(seen) == 4 and {r["path"] for r in seen} == {
            "/v1/chat/completions" if chat else "/v1/completions"
        }
        for comparison, prompt, request in zip(rows, prompts, seen, strict=True):
            assert (comparison.labeler_id, comparison.assignment_id) == (None, None)
            served = served_answer_ids(prompt.id, [c.id for c in prompt.completions], 4)
            assert sorted(comparison.displayed_completion_ids) == sorted(served)
            # what the judge was shown, [A] [B] ... in order, is the order recorded
            shown = [answer_number(session, i) for i in comparison.displayed_completion_ids]
            assert [i for _, i in shown_numbers(request)] == shown
            assert [label for label, _ in shown_numbers(request)] == ["A", "B", "C", "D"]
            assert f"Question:\n{prompt.text}" in asked(request)
            # the ranking names the answers the judge preferred, whatever order they were in
            places = [{PLACE[answer_number(session, i)] for i in g} for g in comparison.ranking]
            assert all(len(p) == 1 for p in places) and [p.pop() for p in places] == sorted(
                {PLACE[i] for i in shown}
            )
            assert sorted(i for g in comparison.ranking for i in g) == sorted(served)
            if chat:
                assert request["messages"] == [{"role": "user", "content": asked(request)}]
            else:
                assert request["prompt"].startswith("User: You are rating answers")
            assert request["temperature"] == 0 and request["max_tokens"] == 256
        orders = {c.prompt_id: c.displayed_completion_ids for c in rows}
        assert any(order != sorted(order) for order in orders.values())  # shuffled
        metrics = job.metrics
        assert (metrics["prompts_judged"], metrics["prompts_skipped"], metrics["left_out"]) == (
            4, 0, 0
        )  # fmt: skip
        assert metrics["judge"] == "ai:judge-model/v1" and metrics["requests"] == 4

        again = endpoint_job(session, session_factory, settings, project, url, chat=chat)
        assert again.status == JobStatus.succeeded, again.error
        assert (again.metrics["prompts_judged"], again.metrics["prompts_skipped"]) == (0, 4)
        assert len(seen) == 4 and len(judged(session, project, "ai:judge-model/v1")) == 4
        assert "nothing new to judge" in again.log

        other = endpoint_job(session, session_factory, settings, project, url, name="second")
        assert other.status == JobStatus.succeeded, other.error
        theirs = {
            c.prompt_id: c.displayed_completion_ids for c in judged(session, project, "ai:second")
        }
        assert theirs.keys() == orders.keys() and theirs != orders  # each judge its own order


def test_a_reply_without_a_ranking_is_asked_again_once_with_a_reminder(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    def late(body: dict[str, Any], n: int) -> tuple[int, str]:
        if "messages" in body and len(body["messages"]) == 3:
            return by_rule({"messages": body["messages"][:1]}, n)
        return 200, "They are all quite good, really."

    project, _ = ranked_project(session)
    with fake_judge(late) as (url, seen):
        job = endpoint_job(session, session_factory, settings, project, url, chat=True)
    assert job.status == JobStatus.succeeded, job.error
    assert len(judged(session, project, "ai:judge-model/v1")) == 4
    assert len(seen) == 8 and job.metrics["requests"] == 8 and job.metrics["retries"] == 4
    retry = seen[1]["messages"]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert retry[1]["content"] == "They are all quite good, really."
    assert "Reply with one line only" in retry[2]["content"]
    assert "each of A, B, C, D exactly once" in retry[2]["content"]


def test_a_garbage_judge_leaves_every_prompt_out_after_one_retry_each(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    garbage = 'Ranking: A > A > Z\n<script>alert("x")</script>'
    project, _ = ranked_project(session)
    with fake_judge(lambda body, n: (200, garbage)) as (url, seen):
        job = endpoint_job(session, session_factory, settings, project, url)
    assert job.status == JobStatus.failed
    assert len(seen) == 8  # one retry per prompt, no more
    assert job.error is not None
    assert job.error.startswith(f"None of the 4 prompts got a ranking: 4 {UNPARSABLE}.")
    assert "'Ranking: B > A = C'" in job.error and "job log quotes some of them" in job.error
    assert job.metrics["left_out"] == 4 and job.metrics["left_out_reasons"] == {UNPARSABLE: 4}
    assert job.metrics["prompts_judged"] == 0
    assert judged(session, project, "ai:judge-model/v1") == []
    quoted = [line for line in job.log.splitlines() if "no readable ranking in the replies" in line]
    assert len(quoted) == 3  # a few examples, not all
    assert repr(garbage) in quoted[0]  # escaped: one line per reply, newlines as \n


def test_the_served_tiny_model_as_a_judge(
    session: Session, session_factory: sessionmaker[Session], settings: Settings,
    server: tuple[str, Seen],  # noqa: F811 - the fixture imported above
) -> None:  # fmt: skip
    """A real (tiny, random) model behind the API: its replies are read strictly, each
    unreadable one asked again once; whatever it ranks is stored as it was shown."""
    url, seen = server
    before = len(seen)
    project, _ = ranked_project(session, k=2)
    job = endpoint_job(session, session_factory, settings, project, url, max_tokens=12,
                       name="tiny")  # fmt: skip
    metrics = job.metrics
    requests = seen[before:]
    assert metrics["requests"] == len(requests)
    assert metrics["prompts_judged"] + metrics["left_out"] == 4
    assert len(requests) == 4 + metrics["retries"] and metrics["retries"] <= 4
    assert all(r["max_tokens"] == 12 and r["model"] == "judge-model/v1" for r in requests)
    assert all("[A]\nAnswer " in r["prompt"] and "[B]\nAnswer " in r["prompt"] for r in requests)
    rows = judged(session, project, "ai:tiny")
    assert len(rows) == metrics["prompts_judged"]
    for row in rows:
        assert sorted(i for g in row.ranking for i in g) == sorted(row.displayed_completion_ids)
    if rows:
        assert job.status == JobStatus.succeeded, job.error
    else:  # the likely case: noise never ends with a ranking line
        assert job.status == JobStatus.failed and "None of the 4 prompts got a ranking" in (
            job.error or ""
        )


def test_an_endpoint_that_cannot_be_reached_fails_the_job_at_once(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    project, _ = ranked_project(session)
    url = f"http://127.0.0.1:{free_port()}"
    job = endpoint_job(session, session_factory, settings, project, url)
    assert job.status == JobStatus.failed
    assert job.error is not None
    assert job.error.startswith(
        f"The judge endpoint did not answer: Cannot reach {url}/v1/completions"
    )
    assert "Check --endpoint (is the server up?) and --endpoint-model" in job.error
    assert judged(session, project, "ai:judge-model/v1") == []


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (404, '{"error": "The model judge-model/v1 does not exist"}', "answered 404: "),
        (200, "<html>not json</html>", "answered something that is not an OpenAI-style reply"),
    ],
)
def test_an_endpoint_that_answers_wrong_fails_the_job_at_once(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, status: int,
    body: str, said: str,
) -> None:  # fmt: skip
    project, _ = ranked_project(session)
    with fake_judge(lambda request, n: (status, body), raw=True) as (url, seen):
        job = endpoint_job(session, session_factory, settings, project, url)
    assert job.status == JobStatus.failed and len(seen) == 1
    assert job.error is not None and job.error.startswith("The judge endpoint did not answer:")
    assert said in job.error and "nothing was judged" in job.error
    assert judged(session, project, "ai:judge-model/v1") == []


def test_a_failed_request_later_leaves_its_prompt_out_and_a_rerun_judges_it(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    project, prompts = ranked_project(session)

    def flaky(body: dict[str, Any], n: int) -> tuple[int, str]:
        return (500, '{"error": "overloaded"}') if n == 2 else by_rule(body, n)

    with fake_judge(flaky) as (url, _):
        job = endpoint_job(session, session_factory, settings, project, url)
        assert job.status == JobStatus.succeeded, job.error
        assert job.metrics["prompts_judged"] == 3 and job.metrics["left_out"] == 1
        assert job.metrics["left_out_reasons"] == {FAILED: 1}
        assert f"prompt {prompts[1].id} left out: " in job.log and "answered 500" in job.log
        assert [c.prompt_id for c in judged(session, project, "ai:judge-model/v1")] == [
            prompts[0].id, prompts[2].id, prompts[3].id
        ]  # fmt: skip
        again = endpoint_job(session, session_factory, settings, project, url)
    assert again.status == JobStatus.succeeded, again.error
    assert (again.metrics["prompts_judged"], again.metrics["prompts_skipped"]) == (1, 3)
    assert len(judged(session, project, "ai:judge-model/v1")) == 4


def test_an_endpoint_that_stops_answering_stops_the_job_keeping_what_it_judged(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    project = make_project(session, k=2)
    for j in range(8):
        make_prompt(session, project, text=f"Question {j}?", answers=2)

    def dies(body: dict[str, Any], n: int) -> tuple[int, str]:
        return by_rule(body, n) if n <= 2 else (503, "{}")

    with fake_judge(dies) as (url, seen):
        job = endpoint_job(session, session_factory, settings, project, url)
    assert job.status == JobStatus.failed
    assert job.error is not None and "failed 5 prompts in a row" in job.error
    assert "The 2 rankings stored are kept" in job.error and len(seen) == 7
    assert len(judged(session, project, "ai:judge-model/v1")) == 2


# --- the reward-model judge -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("judge"), texts=TEXTS)


def test_a_reward_model_judge_ranks_by_stored_scores_with_ties_within_the_tolerance(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    """Every score is stored already: the model (a folder that does not even exist) is
    never loaded; adjacent scores within the tolerance tie, a chain of them is one group."""
    project = make_project(session, k=3, overlap=1)
    close = make_prompt(session, project, text="Question 1?", answers=3)
    chain = make_prompt(session, project, text="Question 2?", answers=3)
    version = register(session, tmp_path / "never-loaded")
    a, b, c = (x.id for x in close.completions)
    d, e, f = (x.id for x in chain.completions)
    store_scores(session=session, model_version_id=version.id,
                 scores={a: 1.0, b: 1.05, c: 2.0, d: 1.0, e: 1.08, f: 1.16})  # fmt: skip
    job = run(session, session_factory, settings, kinds.JUDGE, project, reward=str(version.id),
              name="rm")  # fmt: skip
    assert job.status == JobStatus.succeeded, job.error
    assert job.metrics["scores_reused"] == 6 and job.metrics["prompts_judged"] == 2
    rankings = [[sorted(g) for g in row.ranking] for row in judged(session, project, "ai:rm")]
    assert rankings == [[[c], sorted([a, b])], [sorted([d, e, f])]]
    strict = run(session, session_factory, settings, kinds.JUDGE, project, reward=str(version.id),
                 name="rm-strict", tie_tolerance=0)  # fmt: skip
    assert strict.status == JobStatus.succeeded, strict.error
    rankings = [row.ranking for row in judged(session, project, "ai:rm-strict")]
    assert rankings == [[[c], [b], [a]], [[f], [e], [d]]]
    rerun = run(session, session_factory, settings, kinds.JUDGE, project, reward=str(version.id),
                name="rm")  # fmt: skip
    assert (rerun.metrics["prompts_judged"], rerun.metrics["prompts_skipped"]) == (0, 2)
    # an AI's ranking takes no labeler's slot: with overlap 1, both prompts are still open
    served = set()
    for _ in range(2):
        task = lease_next_task(session=session, project=project, labeler=make_user(session),
                               kind=TaskKind.rank, lease_for=timedelta(minutes=30))  # fmt: skip
        assert task is not None
        served.add(task.prompt.id)
    assert served == {close.id, chain.id}


def test_a_tiny_reward_model_judge_scores_the_served_answers_and_ranks_by_them(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, tiny_rm: Path
) -> None:
    project, prompts = ranked_project(session, k=3)
    version = register(session, tiny_rm)
    job = run(session, session_factory, settings, kinds.JUDGE, project, reward=version.name,
              tie_tolerance=0.05)  # fmt: skip
    assert job.status == JobStatus.succeeded, job.error
    labeler = f"ai:{version.name}"  # named after the reward model
    assert job.metrics["judge"] == labeler and job.metrics["prompts_judged"] == 4
    scores = stored(session, version)
    served = {p.id: served_answer_ids(p.id, [c.id for c in p.completions], 3) for p in prompts}
    # only the served answers were scored (the fourth answer of the last prompt was not)
    assert sorted(scores) == sorted(i for ids in served.values() for i in ids)
    for row in judged(session, project, labeler):
        ids = sorted(served[row.prompt_id])
        assert sorted(row.displayed_completion_ids) == ids
        ordered = sorted(ids, key=lambda i: -scores[i])
        assert [i for g in row.ranking for i in sorted(g, key=lambda i: -scores[i])] == ordered
        for better, worse in itertools.pairwise(row.ranking):
            assert min(scores[i] for i in better) - max(scores[i] for i in worse) > 0.05
        for group in row.ranking:
            values = sorted((scores[i] for i in group), reverse=True)
            assert all(x - y <= 0.05 for x, y in itertools.pairwise(values))
    for prompt in prompts:
        session.refresh(prompt)
        assert prompt.score_gap is not None  # the scores it stored set the gaps, as rlhf score
    rerun = run(session, session_factory, settings, kinds.JUDGE, project, reward=version.name)
    assert (rerun.metrics["prompts_judged"], rerun.metrics["prompts_skipped"]) == (0, 4)
    count = session.query(CompletionScore).filter_by(model_version_id=version.id).count()
    assert count == len(scores)


def test_a_project_without_k_answers_has_nothing_to_judge(
    session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    project = make_project(session, k=4)
    make_prompt(session, project, answers=3)
    with fake_judge(by_rule) as (url, seen):
        job = endpoint_job(session, session_factory, settings, project, url)
    assert job.status == JobStatus.failed and seen == []
    assert job.error == (
        "No prompt of the project has K=4 answers to judge: generate or import answers first "
        "(rlhf generate)."
    )


BAD_JUDGES = [
    ({}, "give a judge: --endpoint URL --endpoint-model NAME (an OpenAI-compatible server) or "
         "--reward VERSION (a registered reward model)"),
    ({"endpoint_url": "http://h:1", "endpoint_model": "m", "reward": "{rm}"},
     "give --endpoint or --reward, not both: one judge per job"),
    ({"reward": "{rm}", "chat": True}, "--chat applies only with --endpoint"),
    ({"reward": "{rm}", "endpoint_model": "m"}, "--endpoint-model applies only with --endpoint"),
    ({"endpoint_url": "http://h:1"},
     "--endpoint needs --endpoint-model (the model name the server serves)"),
    ({"endpoint_url": "ftp://h", "endpoint_model": "m"},
     "--endpoint must be a URL like http://host:8000, not 'ftp://h'"),
    ({"endpoint_url": "http://", "endpoint_model": "m"},
     "--endpoint must be a URL like http://host:8000, not 'http://'"),
    ({"endpoint_url": "http://h:port", "endpoint_model": "m"},
     "--endpoint must be a URL like http://host:8000, not 'http://h:port'"),
    ({"endpoint_url": "http://h:1", "endpoint_model": "m", "tie_tolerance": 0.2},
     "--tie-tolerance applies only with --reward"),
    ({"endpoint_url": "http://h:1", "endpoint_model": "m", "name": "has space"},
     "--name may hold letters, digits and . _ : / @ + - (at most 197 characters), not "
     "'has space'"),
    ({"reward": "{rm}", "tie_tolerance": -1}, "tie_tolerance must be between 0 and 1000, not -1"),
    ({"reward": "nope"}, "no model version 'nope'; see rlhf models list"),
    ({"reward": "{policy}"},
     "model version '{policy}' is a policy model, not a reward model; see rlhf models list"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "message"), BAD_JUDGES)
def test_bad_judge_requests_are_refused_with_a_clear_message(
    session: Session, raw: dict[str, Any], message: str
) -> None:
    names = {
        "rm": register(session, "/x").name,
        "policy": register(session, "/x", ModelKind.policy).name,
    }
    raw = {k: v.format(**names) if isinstance(v, str) else v for k, v in raw.items()}
    with pytest.raises(JudgeError) as caught:
        judge_params(session=session, raw=raw)
    assert str(caught.value) == message.format(**names)


def test_a_judge_request_is_named_after_its_model(session: Session) -> None:
    rm = register(session, "/x")
    rm.name = "team rm (v2)"
    params = judge_params(session=session, raw={"reward": rm.name})
    assert (params["name"], params["reward"], params["tie_tolerance"]) == (
        "team-rm-v2",
        str(rm.id),
        0.1,
    )
    params = judge_params(
        session=session,
        raw={
            "endpoint_url": "http://gpu:8000/v1",
            "endpoint_model": "Qwen/Qwen2.5 7B",
            "chat": True,
        },
    )
    assert (params["name"], params["chat"], params["endpoint_model"]) == (
        "Qwen/Qwen2.5-7B", True, "Qwen/Qwen2.5 7B"
    )  # fmt: skip
    long = judge_params(
        session=session, raw={"endpoint_url": "http://h", "endpoint_model": "m" * 300}
    )
    assert len("ai:" + long["name"]) == 200


@pytest.mark.slow  # a dozen `rlhf` processes
def test_rlhf_score_and_judge_refuse_bad_input_and_queue_nothing(
    tmp_path: Path, tiny_rm: Path
) -> None:
    env = rlhf_env(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    assert rlhf(env, "projects", "create", "p").returncode == 0
    base = rlhf(env, "models", "register", str(tiny_rm.parent / "base"), "--kind", "base",
                "--name", "tiny-base")  # fmt: skip
    assert base.returncode == 0, base.stderr
    cases = [
        (["score", "nope", "--reward", "x"], "error: no project 'nope'"),
        (["score", "p", "--reward", "nope"], "error: no model version 'nope'; see rlhf models list"),
        (["score", "p", "--reward", "tiny-base"],
         "error: model version 'tiny-base' is a base model, not a reward model; see rlhf models list"),
        (["judge", "p"], "error: give a judge: --endpoint URL --endpoint-model NAME (an "
         "OpenAI-compatible server) or --reward VERSION (a registered reward model)"),
        (["judge", "p", "--endpoint", "http://h:1", "--endpoint-model", "m", "--reward", "x"],
         "error: give --endpoint or --reward, not both: one judge per job"),
        (["judge", "p", "--reward", "tiny-base", "--chat"],
         "error: model version 'tiny-base' is a base model, not a reward model; see rlhf models list"),
        (["judge", "p", "--endpoint", "localhost:8000", "--endpoint-model", "m"],
         "error: --endpoint must be a URL like http://host:8000, not 'localhost:8000'"),
        (["judge", "p", "--endpoint", "http://h:1", "--endpoint-model", "m", "--chat",
          "--queue", "gpu"], "error: a judge job runs on the 'train' queue or a training "
         "machine's own (train-NAME), not 'gpu'"),
    ]  # fmt: skip
    for args, said in cases:
        result = rlhf(env, *args)
        assert (result.returncode, result.stderr.strip()) == (2, said), args
    assert json.loads(rlhf(env, "jobs", "list", "--json").stdout) == []  # nothing was queued
    registered = rlhf(env, "models", "register", str(tiny_rm), "--kind", "rm", "--name", "the rm")
    assert registered.returncode == 0, registered.stderr
    queued = rlhf(env, "judge", "p", "--reward", "the rm", "--tie-tolerance", "0.5")
    assert queued.returncode == 0 and queued.stdout.startswith("job 1 queued"), queued.stderr
    both = rlhf(env, "judge", "p", "--reward", "the rm", "--chat")
    assert (both.returncode, both.stderr.strip()) == (
        2, "error: --chat applies only with --endpoint"
    )  # fmt: skip
    job = json.loads(rlhf(env, "jobs", "show", "1", "--json").stdout)
    models = {m["name"]: m["id"] for m in json.loads(rlhf(env, "models", "list", "--json").stdout)}
    assert job["kind"] == "judge" and job["params"]["reward"] == str(models["the rm"])
    assert (job["params"]["name"], job["params"]["tie_tolerance"]) == ("the-rm", 0.5)
    assert "endpoint_url" not in job["params"]  # a reward-model judge's settings only


@pytest.mark.slow
def test_rlhf_score_and_judge_through_a_real_worker(tmp_path: Path, tiny_rm: Path) -> None:
    """`rlhf score --wait`, then `rlhf judge --wait` with the reward model and with an
    endpoint, as a user runs them against `rlhf serve --with-worker`; a garbage judge's
    `--wait` exits 1 with the reason."""
    from tests.processes import serve_with_worker

    env = rlhf_env(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "var", RLHF_DEMO_MODE="1")
    assert rlhf(env, "db", "upgrade").returncode == 0
    assert rlhf(env, "projects", "create", "p", "--k", "2").returncode == 0
    rows = [
        {"prompt": f"Question {j}?", "completions": [{"text": f"Answer {i} to Question {j}?"}
                                                     for i in range(2 + j % 2)]}
        for j in range(3)
    ]  # fmt: skip
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert rlhf(env, "import", "p", str(tmp_path / "rows.jsonl")).returncode == 0
    assert (
        rlhf(env, "models", "register", str(tiny_rm), "--kind", "rm", "--name", "the-rm").returncode
        == 0
    )
    with (
        serve_with_worker(env),
        fake_judge(by_rule) as (url, seen),
        fake_judge(lambda body, n: (200, "no idea")) as (garbage, _),
    ):
        scored = rlhf(env, "score", "p", "--reward", "the-rm", "--wait")
        assert scored.returncode == 0, scored.stdout + scored.stderr
        assert "scored 7 answers, skipped 0 already scored, left out 0" in scored.stdout
        again = rlhf(env, "score", "p", "--reward", "the-rm", "--wait")
        assert "scored 0 answers, skipped 7 already scored, left out 0" in again.stdout
        by_rm = rlhf(env, "judge", "p", "--reward", "the-rm", "--wait")
        assert by_rm.returncode == 0, by_rm.stdout + by_rm.stderr
        assert "judged 3 prompts as ai:the-rm, skipped 0 already judged, left out 0" in by_rm.stdout
        by_llm = rlhf(env, "judge", "p", "--endpoint", url, "--endpoint-model", "m", "--chat",
                      "--wait")  # fmt: skip
        assert by_llm.returncode == 0, by_llm.stdout + by_llm.stderr
        assert "judged 3 prompts as ai:m, skipped 0 already judged, left out 0" in by_llm.stdout
        assert len(seen) == 3
        bad = rlhf(env, "judge", "p", "--endpoint", garbage, "--endpoint-model", "m",
                   "--name", "garbage", "--wait")  # fmt: skip
        assert bad.returncode == 1
        assert "None of the 3 prompts got a ranking" in bad.stdout
        assert "judged 0 prompts as ai:garbage, skipped 0 already judged, left out 3" in bad.stdout
