"""Labeling throughput: N simulated labelers leasing and submitting over the real JSON API.

Starts `rlhf serve` on Postgres (a database of its own, made afresh), seeds a K=4 project,
then for each N runs N asynchronous HTTP clients on loopback, one connection each, that each
loop `POST /tasks/next` -> `POST /tasks/{id}/submit` a fixed number of times. Prints
submissions/s, p50/p95/p99 latency of lease and submit, the retries and errors (a transport
error is retried once, then counted: the run goes on), and the CPU seconds of this load
generator and of the server beside the wall time. After each level it checks the invariants
in the database: every submission stored exactly once, no prompt over its overlap except rows
marked surplus. Before the first level a few labelers do a few rounds that the table leaves
out (their submissions are checked with the rest): a server's first requests in each worker
pay once for connections, caches and lazy imports, which a server that runs for days does not.

The tasks are the real AlpacaEval prompts with their 4 answers each (bench.active's
``../shared/data/alpaca_eval_k4_dev.jsonl``, repeated as often as needed) when that file is
there, else synthetic ones. The load generator knows a server only through a ``Backend`` (how
to lease a task and submit a ranking), so that bench.label_studio drives Label Studio with it.

Usage: python -m bench.queue [--levels 1,10,50] [--per-labeler 40] [--workers 2]
Needs Postgres (RLHF_BENCH_ADMIN_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from app.auth.service import create_api_token, create_user
from app.cli import alembic_config
from app.db import make_engine, make_session_factory, utcnow
from app.labeling.models import Comparison, Completion, Prompt, PromptSource, text_sha256
from app.projects.service import create_project
from bench._http import Client, Response, TransportError
from bench._server import Server, serving
from bench.active import DATA, load_items

ROOT = Path(__file__).resolve().parents[1]
K, OVERLAP = 4, 3
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def fresh_database(admin_url: str, name: str) -> str:
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@dataclass(frozen=True)
class BenchTask:
    """A prompt and its K answers, the same for every server benchmarked."""

    prompt: str
    answers: tuple[str, ...]


def bench_tasks(count: int) -> tuple[str, list[BenchTask]]:
    """``count`` tasks and where they come from: the real prompts of the shared data file with
    their K answers, cycled (a repeat's prompt ends in " (copy N)", so that no two are alike),
    or synthetic ones when the file is absent (it is not part of a clone)."""
    if DATA.is_file():
        items = load_items(DATA)
        tasks = []
        for i in range(count):
            item, copy = items[i % len(items)], i // len(items) + 1
            tasks.append(BenchTask(
                prompt=item.prompt + (f" (copy {copy})" if copy > 1 else ""),
                answers=tuple(answer for _, answer in item.answers),
            ))  # fmt: skip
        return f"{len(items)} real prompts of {DATA.name}, cycled", tasks
    synthetic = [
        BenchTask(f"Question {i}: explain something.",
                  tuple(f"Answer {j} " + "lorem ipsum " * 40 for j in range(K)))
        for i in range(count)
    ]  # fmt: skip
    return "synthetic prompts", synthetic


def seed(url: str, tasks: list[BenchTask], labelers: int) -> tuple[int, list[str]]:
    from alembic import command

    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    tokens = []
    with make_session_factory(engine, writes=True)() as s:
        project = create_project(session=s, name="Bench", k=K, overlap=OVERLAP)
        now = utcnow()
        ids = s.scalars(
            insert(Prompt).returning(Prompt.id, sort_by_parameter_order=True),
            [{"project_id": project.id, "text": task.prompt, "source": PromptSource.import_,
              "meta": {}, "created_at": now} for task in tasks],
        ).all()  # fmt: skip
        s.execute(
            insert(Completion),
            [{"prompt_id": pid, "text": answer, "text_sha256": text_sha256(answer),
              "origin": "import:bench", "created_at": now}
             for pid, task in zip(ids, tasks, strict=True) for answer in task.answers],
        )  # fmt: skip
        for n in range(labelers):
            user = create_user(session=s, email=f"bench{n}@example.test", password="bench-password")
            tokens.append(create_api_token(session=s, user=user)[1])
        s.commit()
        project_id = project.id
    engine.dispose()
    return project_id, tokens


@dataclass
class Tally:
    """One level's bookkeeping, shared by its labelers (one event loop, so no lock)."""

    leases: list[float] = field(default_factory=list)
    submits: list[float] = field(default_factory=list)
    accepted: int = 0
    unsure: int = 0  # submits whose tries failed: stored or not, we cannot tell
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Lease:
    """A task a labeler holds, with the ids of the answers to rank."""

    task_id: int
    answer_ids: list[Any]


class Backend(Protocol):
    """A labeling server's API as one labeler's client drives it."""

    name: str
    nothing_left: int  # the status of a lease that finds no task left for this labeler
    submit_repeatable: bool  # a submit sent again after a transport error is stored once

    def headers(self, token: str) -> dict[str, str]: ...

    async def lease(self, client: Client, project_id: int) -> Response: ...

    def leased(self, response: Response) -> Lease: ...

    async def submit(self, client: Client, lease: Lease, ranking: list[Any]) -> Response: ...


class RlhfStudio:
    """Ours: both posts are safe to repeat (a lease gives back the task the labeler holds, and
    a submit of the same ranking answers 200 with the stored one)."""

    name = "RLHF Studio"
    nothing_left = 204
    submit_repeatable = True

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def lease(self, client: Client, project_id: int) -> Response:
        return await client.post(f"/api/v1/projects/{project_id}/tasks/next", json={"kind": "rank"})

    def leased(self, response: Response) -> Lease:
        task = response.json()
        return Lease(task["task_id"], [c["id"] for c in task["completions"]])

    async def submit(self, client: Client, lease: Lease, ranking: list[Any]) -> Response:
        body = {"ranking": [[i] for i in ranking]}
        return await client.post(f"/api/v1/tasks/{lease.task_id}/submit", json=body)


RLHF_STUDIO = RlhfStudio()


async def send_twice(
    send: Callable[[], Awaitable[Response]], what: str, tally: Tally, *, repeat: bool = True
) -> Response | None:
    """Send, and once more after a transport error when the request is safe to repeat; None
    (an error counted) when that fails too."""
    try:
        return await send()
    except TransportError as error:
        if not repeat:
            tally.errors[f"{what}: {error.kind}"] += 1
            return None
        tally.retries += 1
    try:
        return await send()
    except TransportError as error:
        tally.errors[f"{what}: {error.kind}"] += 1
        return None


async def labeler(
    client: Client, project_id: int, count: int, tally: Tally,
    backend: Backend = RLHF_STUDIO,
) -> None:  # fmt: skip
    for _ in range(count):
        start = time.perf_counter()
        r = await send_twice(functools.partial(backend.lease, client, project_id), "lease", tally)
        tally.leases.append(time.perf_counter() - start)
        if r is None:
            continue
        if r.status_code == backend.nothing_left:
            break
        if not r.is_success:
            tally.errors[f"lease: HTTP {r.status_code}"] += 1
            continue
        lease = backend.leased(r)
        ranking = random.sample(lease.answer_ids, len(lease.answer_ids))
        start = time.perf_counter()
        r = await send_twice(
            functools.partial(backend.submit, client, lease, ranking), "submit", tally,
            repeat=backend.submit_repeatable,
        )  # fmt: skip
        tally.submits.append(time.perf_counter() - start)
        if r is None:
            tally.unsure += 1  # if it was not stored, the next lease resumes the task
        elif r.is_success:  # for us, 200: a retry found the first try stored
            tally.accepted += 1
        else:
            tally.errors[f"submit: HTTP {r.status_code}"] += 1


def pct(values: list[float], q: float) -> float:
    if not values:  # every try of this kind failed
        return math.nan
    return (
        statistics.quantiles(values, n=100)[int(q) - 1] * 1000
        if len(values) > 1
        else values[0] * 1000
    )


async def run_level(
    server: Server, project_id: int, tokens: list[str], per_labeler: int,
    backend: Backend = RLHF_STUDIO,
) -> tuple[dict[str, float], Tally]:  # fmt: skip
    """Each labeler with a client (and so a connection) of its own, as N separate people's
    tools would be: one shared pool of N connections cost the bench more CPU than the server."""
    tally = Tally()
    clients = [Client(server.url, headers=backend.headers(token)) for token in tokens]
    try:
        server_cpu, bench_cpu = server.cpu_seconds(), time.process_time()
        start = time.perf_counter()
        await asyncio.gather(
            *(labeler(c, project_id, per_labeler, tally, backend) for c in clients)
        )
        elapsed = time.perf_counter() - start
        bench_cpu, server_cpu = time.process_time() - bench_cpu, server.cpu_seconds() - server_cpu
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {
        "n": len(tokens), "per_s": tally.accepted / elapsed, "wall_s": elapsed,
        "bench_cpu_s": bench_cpu, "server_cpu_s": server_cpu,
        "lease_p50": pct(tally.leases, 50), "lease_p95": pct(tally.leases, 95),
        "lease_p99": pct(tally.leases, 99), "submit_p50": pct(tally.submits, 50),
        "submit_p95": pct(tally.submits, 95), "submit_p99": pct(tally.submits, 99),
    }, tally  # fmt: skip


WARMUP_LABELERS = 4  # enough that each web worker process gets some
WARMUP_ROUNDS = 10


def labelers_needed(levels: list[int]) -> int:
    """Labelers to seed: each level's own, and the warm-up's."""
    return WARMUP_LABELERS + sum(levels)


def run_levels(
    server: Server, project_id: int, tokens: list[str], *, levels: list[int], per_labeler: int,
    check: Callable[..., str], backend: Backend = RLHF_STUDIO,
) -> list[dict[str, float]]:  # fmt: skip
    """Each level in turn with labelers of its own (the tokens taken in order): a row of the
    table, then ``check(accepted=, unsure=)``'s report of the invariants (it raises when one
    does not hold), after a warm-up left out of the table. The rows, for comparisons."""
    warm, tally = asyncio.run(
        run_level(server, project_id, tokens[:WARMUP_LABELERS], WARMUP_ROUNDS, backend)
    )
    print(f"warm-up, not in the table: {WARMUP_LABELERS} labelers x {WARMUP_ROUNDS} rounds in "
          f"{warm['wall_s']:.1f} s, {tally.accepted} accepted, {tally.errors.total()} errors")  # fmt: skip
    rows, offset, accepted, unsure = [], WARMUP_LABELERS, tally.accepted, tally.unsure
    print(f"{'N':>3} {'subm/s':>7} {'lease p50/p95/p99 ms':>24} {'submit p50/p95/p99 ms':>24}"
          f" {'retries':>7} {'errors':>6} {'wall s':>6} {'CPU s bench':>11} {'server':>6}")  # fmt: skip
    for n in levels:
        r, tally = asyncio.run(
            run_level(server, project_id, tokens[offset : offset + n], per_labeler, backend)
        )
        offset += n
        accepted, unsure = accepted + tally.accepted, unsure + tally.unsure
        print(f"{n:>3} {r['per_s']:>7.0f} "
              f"{r['lease_p50']:>8.1f}{r['lease_p95']:>8.1f}{r['lease_p99']:>8.1f} "
              f"{r['submit_p50']:>8.1f}{r['submit_p95']:>8.1f}{r['submit_p99']:>8.1f} "
              f"{tally.retries:>7} {tally.errors.total():>6} {r['wall_s']:>6.1f} "
              f"{r['bench_cpu_s']:>11.1f} {r['server_cpu_s']:>6.1f}", flush=True)  # fmt: skip
        if tally.errors:
            print("    errors: " + ", ".join(f"{what} x{k}" for what, k in tally.errors.items()))
        print("    " + check(accepted=accepted, unsure=unsure), flush=True)
        rows.append(r)
    return rows


def check_invariants(url: str, *, accepted: int, unsure: int) -> str:
    """Every accepted submission stored exactly once (and an unsure one at most once), no
    prompt over its overlap except rows marked surplus; raises when one does not hold."""
    engine = make_engine(url)
    with engine.connect() as conn:
        stored = conn.scalar(select(func.count()).select_from(Comparison)) or 0
        per_prompt = (
            select(Comparison.prompt_id, func.count().label("n"))
            .where(Comparison.is_surplus.is_(False))
            .group_by(Comparison.prompt_id)
            .subquery()
        )
        over = conn.scalar(
            select(func.count()).select_from(per_prompt).where(per_prompt.c.n > OVERLAP)
        )
        doubled = conn.scalar(
            select(func.count()).select_from(
                select(Comparison.prompt_id, Comparison.labeler_id)
                .group_by(Comparison.prompt_id, Comparison.labeler_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
        surplus = conn.scalar(select(func.count()).where(Comparison.is_surplus.is_(True)))
    engine.dispose()
    report = (f"invariants: {stored} stored for {accepted} accepted submissions"
              f"{f' (+ {unsure} unsure)' if unsure else ''}; prompts over overlap: {over}; "
              f"labeler ranked a prompt twice: {doubled}; surplus rows: {surplus}")  # fmt: skip
    assert accepted <= stored <= accepted + unsure and over == 0 and doubled == 0, report
    return report


def task_count(levels: list[int], per_labeler: int) -> int:
    """Enough tasks that no level runs out: every submission's share of a task, and a margin."""
    return (sum(levels) * per_labeler + WARMUP_LABELERS * WARMUP_ROUNDS) // OVERLAP + 500


def bench_rlhf_studio(
    admin_url: str, tasks: list[BenchTask], *, levels: list[int], per_labeler: int, workers: int
) -> list[dict[str, float]]:
    """Our table: `rlhf serve` with ``workers`` web workers on a fresh database."""
    url = fresh_database(admin_url, "rlhf_bench")
    project_id, tokens = seed(url, tasks, labelers=labelers_needed(levels))
    print(f"RLHF Studio: rlhf serve, {workers} web workers; {len(tasks)} prompts x {K} answers, "
          f"overlap {OVERLAP}, {labelers_needed(levels)} labelers")  # fmt: skip
    print("CPU s: this load generator's, and rlhf serve's with its web workers' (not Postgres')")
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(Path(tmp), database_url=url, workers=workers) as server,
    ):
        return run_levels(
            server, project_id, tokens, levels=levels, per_labeler=per_labeler,
            check=functools.partial(check_invariants, url),
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--levels", default="1,10,50")
    parser.add_argument("--per-labeler", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="web worker processes")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    source, tasks = bench_tasks(task_count(levels, args.per_labeler))
    print(f"tasks: {source}")
    bench_rlhf_studio(
        os.environ.get("RLHF_BENCH_ADMIN_URL", ADMIN_URL), tasks, levels=levels,
        per_labeler=args.per_labeler, workers=args.workers,
    )  # fmt: skip


if __name__ == "__main__":
    main()
