"""Labeling throughput: N simulated labelers leasing and submitting over the real JSON API.

Starts `rlhf serve` on Postgres (a database of its own, made afresh), seeds a K=4 project,
then for each N runs N asynchronous HTTP clients on loopback that each loop
`POST /tasks/next` -> `POST /tasks/{id}/submit` a fixed number of times. Prints submissions/s
and p50/p95/p99 latency of lease and submit, then checks the invariants in the database:
every submission stored exactly once, no prompt over its overlap except rows marked surplus.

Usage: python -m bench.queue [--levels 1,10,50] [--per-labeler 40] [--workers 2]
Needs Postgres (RLHF_BENCH_ADMIN_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from app.auth.service import create_api_token, create_user
from app.cli import alembic_config
from app.db import make_engine, make_session_factory, utcnow
from app.labeling.models import Comparison, Completion, Prompt, PromptSource
from app.projects.service import create_project
from bench._server import serving

ROOT = Path(__file__).resolve().parents[1]
K, OVERLAP = 4, 3


def fresh_database(admin_url: str, name: str) -> str:
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def seed(url: str, prompts: int, labelers: int) -> tuple[int, list[str]]:
    from alembic import command

    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    tokens = []
    with make_session_factory(engine, writes=True)() as s:
        project = create_project(session=s, name="Bench", k=K, overlap=OVERLAP)
        now = utcnow()
        s.execute(
            insert(Prompt),
            [{"project_id": project.id, "text": f"Question {i}: explain something.",
              "source": PromptSource.import_, "meta": {}, "created_at": now} for i in range(prompts)],
        )  # fmt: skip
        ids = s.scalars(select(Prompt.id).where(Prompt.project_id == project.id)).all()
        s.execute(
            insert(Completion),
            [{"prompt_id": pid, "text": f"Answer {j} " + "lorem ipsum " * 40,
              "text_sha256": f"{pid:032x}{j:032x}", "origin": "import:bench", "created_at": now}
             for pid in ids for j in range(K)],
        )  # fmt: skip
        for n in range(labelers):
            user = create_user(session=s, email=f"bench{n}@example.test", password="bench-password")
            tokens.append(create_api_token(session=s, user=user)[1])
        s.commit()
        project_id = project.id
    engine.dispose()
    return project_id, tokens


async def labeler(
    client: httpx.AsyncClient,
    project_id: int,
    token: str,
    count: int,
    leases: list[float],
    submits: list[float],
) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    done = 0
    for _ in range(count):
        start = time.perf_counter()
        r = await client.post(
            f"/api/v1/projects/{project_id}/tasks/next", json={"kind": "rank"}, headers=headers
        )
        leases.append(time.perf_counter() - start)
        if r.status_code == 204:
            break
        r.raise_for_status()
        task = r.json()
        ids = [c["id"] for c in task["completions"]]
        random.shuffle(ids)
        start = time.perf_counter()
        r = await client.post(
            f"/api/v1/tasks/{task['task_id']}/submit",
            json={"ranking": [[i] for i in ids]},
            headers=headers,
        )
        submits.append(time.perf_counter() - start)
        assert r.status_code == 201, r.text
        done += 1
    return done


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100)[int(q) - 1] * 1000
        if len(values) > 1
        else values[0] * 1000
    )


async def run_level(
    base: str, project_id: int, tokens: list[str], per_labeler: int
) -> dict[str, float]:
    leases: list[float] = []
    submits: list[float] = []
    limits = httpx.Limits(max_connections=len(tokens) + 5)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        done = await asyncio.gather(
            *(labeler(client, project_id, t, per_labeler, leases, submits) for t in tokens)
        )
        elapsed = time.perf_counter() - start
    return {
        "n": len(tokens), "submissions": sum(done), "per_s": sum(done) / elapsed,
        "lease_p50": pct(leases, 50), "lease_p95": pct(leases, 95), "lease_p99": pct(leases, 99),
        "submit_p50": pct(submits, 50), "submit_p95": pct(submits, 95), "submit_p99": pct(submits, 99),
    }  # fmt: skip


def check_invariants(url: str, expected: int) -> None:
    engine = make_engine(url)
    with engine.connect() as conn:
        stored = conn.scalar(select(func.count()).select_from(Comparison))
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
    print(f"invariants: {stored} stored for {expected} accepted submissions; prompts over overlap: "
          f"{over}; labeler ranked a prompt twice: {doubled}; surplus rows: {surplus}")  # fmt: skip
    assert stored == expected and over == 0 and doubled == 0, "an invariant does not hold"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,10,50")
    parser.add_argument("--per-labeler", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="web worker processes")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    admin_url = os.environ.get(
        "RLHF_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    url = fresh_database(admin_url, "rlhf_bench")
    prompts = sum(levels) * args.per_labeler // OVERLAP + 500
    project_id, tokens = seed(url, prompts=prompts, labelers=sum(levels))
    print(f"seeded {prompts} prompts x {K} answers, overlap {OVERLAP}, {sum(levels)} labelers")

    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(Path(tmp), database_url=url, workers=args.workers) as server,
    ):
        offset, total = 0, 0
        print(f"{'N':>3} {'subm/s':>8} {'lease p50/p95/p99 ms':>24} {'submit p50/p95/p99 ms':>25}")
        for n in levels:
            result = asyncio.run(
                run_level(
                    server.url,
                    project_id,
                    tokens[offset : offset + n],
                    args.per_labeler,
                )
            )
            offset += n
            total += int(result["submissions"])
            print(f"{n:>3} {result['per_s']:>8.0f} "
                  f"{result['lease_p50']:>8.1f}{result['lease_p95']:>8.1f}{result['lease_p99']:>8.1f} "
                  f"{result['submit_p50']:>8.1f}{result['submit_p95']:>8.1f}{result['submit_p99']:>8.1f}")  # fmt: skip
    check_invariants(url, total)


if __name__ == "__main__":
    main()
