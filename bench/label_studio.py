"""Labeling throughput side by side: RLHF Studio against Label Studio 1.23.2, one after the other.

The same tasks (bench.queue's: K=4 answers to rank, overlap 3), the same Postgres server
(each on a fresh database of its own), the same number of web processes (``--workers``) and
the same load generator (bench.queue's: N labelers with a client each, a transport error
retried once when the request is safe to repeat, then counted) at each N. First bench.queue's
table for RLHF Studio, then the same table for Label Studio, then the ratios per N.

Label Studio runs as its Docker image runs it: uWSGI (``core.wsgi``, ``--workers`` processes
of 1 thread behind uWSGI's HTTP router, DEBUG off) on Postgres; the project has a Ranker over
a List of the 4 answers (its LLM-ranker template without the buckets), ``maximum_annotations``
= 3 and Sequential sampling, and its tasks come in through its import API. Its labelers are
members of one organization with legacy API tokens (made through its ORM, with no password),
and each round is ``GET /api/projects/{id}/next`` then ``POST /api/tasks/{id}/annotations/``
with the ranking as Label Studio's Ranker saves it, header ``Authorization: Token <key>``.
Two differences in the client, both Label Studio's: its annotation post is not safe to repeat
(a repeat stores a second annotation), so a lost one is counted, not retried; and it asks for
``Connection: close``, since uWSGI's router closes each connection after one response
without announcing it. Its invariants after each level, read in its database: every accepted
annotation stored exactly once, no task over ``maximum_annotations``, no labeler annotating a
task twice. Its server CPU column is uWSGI's master, HTTP router and workers together.

Label Studio lives in a virtualenv of its own, ``bench/.venv-label-studio``, made on first use
with its own pip from PyPI (``label-studio[uwsgi]==1.23.2``; about 1.5 minutes and 1 GB here);
where uWSGI cannot be installed it falls back to gunicorn with sync workers (the output says
which server ran). Migrating Label Studio's database takes about half a minute a run.

Usage: python -m bench.label_studio [--levels 1,10,50] [--per-labeler 40] [--workers 2]
Needs Postgres (RLHF_BENCH_ADMIN_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres);
prints "skipped: ..." and exits 0 when it is unreachable.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app.db import make_engine
from bench._http import Client, Response
from bench._server import Server
from bench.queue import (
    ADMIN_URL,
    OVERLAP,
    BenchTask,
    K,
    Lease,
    bench_rlhf_studio,
    bench_tasks,
    fresh_database,
    labelers_needed,
    run_levels,
    task_count,
)

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-label-studio"
VERSION = "1.23.2"
GUNICORN = "gunicorn==27.0.1"
DATABASE = "ls_bench"
# A Ranker over a List, as in Label Studio's own LLM-ranker template (less its buckets).
LABEL_CONFIG = """<View>
  <Text name="prompt" value="$prompt"/>
  <List name="answers" value="$items" title="Answers"/>
  <Ranker name="rank" toName="answers"/>
</View>"""


def label_studio_python() -> tuple[Path, str]:
    """The virtualenv's Python and its web server ("uwsgi" or "gunicorn"), made on first use;
    raises CalledProcessError with pip's output when Label Studio cannot be installed."""
    python, ready = VENV / "bin" / "python", VENV / ".ready"
    if ready.is_file():
        return python, ready.read_text().strip()
    print(f"making {VENV.name} (Label Studio {VERSION} from PyPI; about 1.5 minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    server = "uwsgi"
    try:
        subprocess.run([*pip, f"label-studio[uwsgi]=={VERSION}"], check=True,
                       capture_output=True, text=True)  # fmt: skip
    except subprocess.CalledProcessError:
        server = "gunicorn"
        subprocess.run([*pip, f"label-studio=={VERSION}", GUNICORN], check=True,
                       capture_output=True, text=True)  # fmt: skip
    ready.write_text(server)
    return python, server


def package_dir(python: Path) -> str:
    """Label Studio's package folder: its Django apps import each other from there."""
    done = subprocess.run(
        [str(python), "-c", "import label_studio; print(label_studio.__path__[0])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def label_studio_env(admin_url: str, data_dir: Path) -> dict[str, str]:
    """Label Studio's settings: our Postgres server, its data in ``data_dir``, DEBUG off,
    quiet logs, and no calls home (Sentry, the PyPI version check, analytics)."""
    url = make_url(admin_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLHF_", "LABEL_STUDIO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="core.settings.label_studio", DJANGO_DB="default",
        POSTGRE_NAME=DATABASE, POSTGRE_USER=url.username or "postgres",
        POSTGRE_PASSWORD=url.password or "", POSTGRE_HOST=url.host or "127.0.0.1",
        POSTGRE_PORT=str(url.port or 5432), LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        SECRET_KEY="bench-label-studio-secret-0123456789abcdef", DEBUG="false",
        LOG_LEVEL="WARNING", SENTRY_DSN="", FRONTEND_SENTRY_DSN="",
        LATEST_VERSION_CHECK="false", COLLECT_ANALYTICS="false",
    )  # fmt: skip
    return env


def seed_labelers(python: Path, env: dict[str, str], labelers: int, work: Path) -> list[str]:
    """Migrate Label Studio's database and make the labelers; their legacy API tokens."""
    out = work / "tokens.json"
    done = subprocess.run(
        [str(python), "-m", "bench._label_studio_seed", str(labelers), str(out)],
        env=env, cwd=HERE.parent, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        sys.exit(f"seeding Label Studio failed:\n{done.stderr[-4000:]}")
    tokens: list[str] = json.loads(out.read_text())
    return tokens


@contextmanager
def serving(
    python: Path, server: str, env: dict[str, str], *, workers: int, log: Path
) -> Iterator[Server]:
    """Label Studio's web server on a free port until /health/ answers; stopped afterwards.
    uWSGI with the options of Label Studio's own deploy/uwsgi.ini that shape how it serves
    (less ``cheaper``, which would start with one worker: all ``workers`` serve from the
    start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = package_dir(python)
    if server == "uwsgi":
        command = [
            str(python.parent / "uwsgi"), "--master", "--http", f"127.0.0.1:{port}",
            "--module", "core.wsgi:application", "--chdir", where, "--pythonpath", where,
            "--processes", str(workers), "--threads", "1", "--single-interpreter",
            "--enable-threads", "--thunder-lock", "--lazy-apps", "--need-app", "--die-on-term",
            "--vacuum", "--buffer-size", "65535", "--post-buffering", "4096", "--harakiri", "120",
            "--disable-logging", "--log-5xx", "--ignore-sigpipe", "--ignore-write-errors",
            "--disable-write-exception",
        ]  # fmt: skip
    else:
        command = [
            str(python.parent / "gunicorn"), "core.wsgi:application", "--chdir", where,
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning",
        ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=1)
                break
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.25)
        else:
            raise RuntimeError("Label Studio did not answer /health/ within a minute")
        if process.poll() is not None:
            sys.exit(f"Label Studio's {server} exited:\n{log.read_text()[-4000:]}")
        yield Server(port=port, pid=process.pid, env=env)  # its CPU: the process and children
    finally:
        process.terminate()
        process.wait(timeout=30)


def make_project(url: str, token: str, tasks: list[BenchTask]) -> int:
    """The project and its tasks, through Label Studio's API as a user would make them."""
    with httpx.Client(base_url=url, timeout=600, headers={"Authorization": f"Token {token}"}) as c:
        project = c.post("/api/projects/", json={
            "title": "Bench", "label_config": LABEL_CONFIG, "maximum_annotations": OVERLAP,
            "sampling": "Sequential sampling",
        })  # fmt: skip
        project.raise_for_status()
        project_id: int = project.json()["id"]
        rows = [
            {"prompt": task.prompt,
             "items": [{"id": f"a{j}", "title": f"Answer {j + 1}", "body": answer}
                       for j, answer in enumerate(task.answers)]}
            for task in tasks
        ]  # fmt: skip
        c.post(f"/api/projects/{project_id}/import", json=rows).raise_for_status()
    return project_id


class LabelStudio:
    """Label Studio's API: a lease (``next``) gives back the task the labeler holds locked;
    an annotation posted twice is stored twice."""

    name = "Label Studio"
    nothing_left = 404
    submit_repeatable = False

    def headers(self, token: str) -> dict[str, str]:
        # uWSGI's HTTP router, set up as Label Studio's image sets it (no http-keepalive),
        # closes every connection after its response without saying so: a client that sent
        # the next request on it would lose it now and then, so ours asks for the close.
        return {"Authorization": f"Token {token}", "Connection": "close"}

    async def lease(self, client: Client, project_id: int) -> Response:
        return await client.get(f"/api/projects/{project_id}/next")

    def leased(self, response: Response) -> Lease:
        task = response.json()
        return Lease(task["id"], [item["id"] for item in task["data"]["items"]])

    async def submit(self, client: Client, lease: Lease, ranking: list[Any]) -> Response:
        result = {"from_name": "rank", "to_name": "answers", "type": "ranker",
                  "origin": "manual", "value": {"ranker": {"rank": ranking}}}  # fmt: skip
        body = {"result": [result]}
        return await client.post(f"/api/tasks/{lease.task_id}/annotations/", json=body)


def check_invariants(url: str, *, accepted: int, unsure: int) -> str:
    """Label Studio's side of bench.queue's check: every accepted annotation stored exactly
    once (an unsure one at most once), no task over ``maximum_annotations``, no labeler
    annotating a task twice; raises when one does not hold."""
    engine = make_engine(url)
    with engine.connect() as conn:
        stored = conn.scalar(text("SELECT count(*) FROM task_completion"))
        over = conn.scalar(text(
            "SELECT count(*) FROM (SELECT task_id FROM task_completion WHERE NOT was_cancelled"
            " GROUP BY task_id HAVING count(*) > :overlap) AS over"
        ), {"overlap": OVERLAP})  # fmt: skip
        doubled = conn.scalar(text(
            "SELECT count(*) FROM (SELECT task_id FROM task_completion"
            " GROUP BY task_id, completed_by_id HAVING count(*) > 1) AS doubled"
        ))  # fmt: skip
    engine.dispose()
    report = (f"invariants: {stored} stored for {accepted} accepted annotations"
              f"{f' (+ {unsure} unsure)' if unsure else ''}; tasks over maximum_annotations: "
              f"{over}; labeler annotated a task twice: {doubled}")  # fmt: skip
    assert accepted <= (stored or 0) <= accepted + unsure and over == 0 and doubled == 0, (
        f"Label Studio broke an invariant: {report}"
    )
    return report


def bench_label_studio(
    admin_url: str, tasks: list[BenchTask], *, levels: list[int], per_labeler: int, workers: int,
    python: Path, server: str,
) -> list[dict[str, float]]:  # fmt: skip
    url = fresh_database(admin_url, DATABASE)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = label_studio_env(admin_url, work / "data")
        tokens = seed_labelers(python, env, labelers_needed(levels), work)
        with serving(python, server, env, workers=workers, log=work / "server.log") as running:
            project_id = make_project(running.url, tokens[0], tasks)
            how = (f"uWSGI, {workers} processes of 1 thread behind its HTTP router"
                   if server == "uwsgi" else f"gunicorn, {workers} sync workers")  # fmt: skip
            print(f"Label Studio {VERSION}: {how}; {len(tasks)} tasks x {K} answers, "
                  f"maximum_annotations {OVERLAP}, {labelers_needed(levels)} labelers")  # fmt: skip
            print(f"CPU s: this load generator's, and {server}'s with all its processes' "
                  "(not Postgres')")  # fmt: skip
            return run_levels(
                running, project_id, tokens, levels=levels, per_labeler=per_labeler,
                check=functools.partial(check_invariants, url), backend=LabelStudio(),
            )  # fmt: skip


def print_ratios(ours: list[dict[str, float]], theirs: list[dict[str, float]]) -> None:
    print("RLHF Studio / Label Studio")
    print(f"{'N':>3} {'subm/s ours':>11} {'LS':>6} {'ratio':>6}"
          f" {'lease p95 ms ours':>18} {'LS':>7} {'submit p95 ms ours':>19} {'LS':>7}")  # fmt: skip
    for a, b in zip(ours, theirs, strict=True):
        print(f"{a['n']:>3.0f} {a['per_s']:>11.1f} {b['per_s']:>6.1f} "
              f"{a['per_s'] / b['per_s']:>5.1f}x {a['lease_p95']:>18.1f} {b['lease_p95']:>7.1f} "
              f"{a['submit_p95']:>19.1f} {b['submit_p95']:>7.1f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--levels", default="1,10,50")
    parser.add_argument("--per-labeler", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="web processes of each server")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    admin_url = os.environ.get("RLHF_BENCH_ADMIN_URL", ADMIN_URL)
    admin = make_engine(admin_url)
    try:
        admin.connect().close()
    except OperationalError as error:
        reason = str(error.orig).splitlines()[0]
        print(f"skipped: Postgres is unreachable at {make_url(admin_url).host} ({reason})")
        return 0
    finally:
        admin.dispose()
    try:
        python, server = label_studio_python()
    except subprocess.CalledProcessError as error:
        pip_said = (error.stderr or "")[-2000:]
        print(f"skipped: Label Studio {VERSION} could not be installed:\n{pip_said}")
        return 0
    source, tasks = bench_tasks(task_count(levels, args.per_labeler))
    print(f"tasks: {source}; {args.per_labeler} rounds per labeler", flush=True)
    sizes = {"levels": levels, "per_labeler": args.per_labeler, "workers": args.workers}
    ours = bench_rlhf_studio(admin_url, tasks, **sizes)
    print()
    theirs = bench_label_studio(admin_url, tasks, **sizes, python=python, server=server)
    print()
    print_ratios(ours, theirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
