"""Agreement report: every project metric from Postgres, on a large synthetic project.

Makes a Postgres database of its own (afresh), a K=4, overlap=3 project with the default label
schema (Likert rating and 4 flags) and 3 labelers, then bulk-loads with COPY ``--prompts``
prompts x 4 answers and 3 rankings per prompt (300,000 comparisons at the default size).
Rankings are realistic: each prompt has a hidden true order of its answers, and each labeler
follows it with noise (adjacent answers swapped with probability 0.3, two adjacent answers
tied with probability 0.05); ratings follow the place with noise; flags are rare (about 2%).

Then it times:
- ``build_report`` (load every current comparison + compute every figure), 3 runs, with the
  time split into ``load_rank_table`` and ``compute_report``; aim: under 5 s at 100k prompts;
- ``project_agreement`` twice: the second call is a cache hit, what the dashboard waits for
  when nothing changed; aim: under 300 ms for the page, so the hit must be far below that;
- peak RSS of the process.
It prints a few headline figures so one can see they are sane, and drops the database at the
end unless ``--keep``.

Usage: python -m bench.agreement [--prompts 100000] [--keep]
Unknown arguments are ignored (``make bench`` passes the same argv to every benchmark).
Needs Postgres (RLHF_BENCH_ADMIN_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.agreement.service import (
    AgreementFilters,
    build_report,
    compute_report,
    load_rank_table,
    project_agreement,
)
from app.auth.models import Role
from app.auth.service import create_user
from app.cli import alembic_config
from app.db import make_engine, make_session_factory, utcnow
from app.projects.models import DEFAULT_FLAGS, Project
from app.projects.service import create_project
from bench.queue import fresh_database

DATABASE = "rlhf_bench_agreement"
K, OVERLAP, LABELERS = 4, 3, 3
SWAP_P, TIE_P, FLAG_P = 0.3, 0.05, 0.02
WEEKS = 10
AIM_BUILD_S, AIM_PAGE_MS = 5.0, 300
T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def setup(url: str) -> tuple[int, list[int]]:
    """Migrate, then make the project and its labelers (argon2 hashing: only a few)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    with make_session_factory(engine, writes=True)() as s:
        project = create_project(session=s, name="Agreement bench", k=K, overlap=OVERLAP)
        users = [
            create_user(
                session=s,
                email=f"agree{n}@example.test",
                password="bench-password",
                role=Role.labeler,
                display_name=f"Labeler {n}",
            )
            for n in range(LABELERS)
        ]
        s.commit()
        ids = (project.id, [u.id for u in users])
    engine.dispose()
    return ids


def next_ids(cur: Any, table: str, n: int) -> np.ndarray:
    """``n`` ids after the table's largest; ``bump_sequence`` moves its sequence past them."""
    cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")  # noqa: S608 - a constant name
    base = int(cur.fetchone()[0])
    return np.arange(base + 1, base + n + 1, dtype=np.int64)


def bump_sequence(cur: Any, table: str) -> None:
    cur.execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: S608
    )


def iso(seconds: np.ndarray) -> list[str]:
    """Epoch seconds -> timestamptz literals (UTC)."""
    micros = np.rint(seconds * 1e6).astype(np.int64).astype("datetime64[us]")
    stamps = np.datetime_as_string(micros, unit="us")
    return [f"{s}+00" for s in stamps.tolist()]


def load(engine: Engine, project_id: int, labeler_ids: list[int], n_prompts: int) -> int:
    """Bulk-load prompts, answers and rankings with COPY; returns the comparisons written."""
    rng = np.random.default_rng(20240601)
    now = utcnow().timestamp()
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection  # the psycopg connection, for COPY
        assert conn is not None
        with conn.cursor() as cur:
            # Prompts: all full (each has its 3 rankings).
            prompt_ids = next_ids(cur, "prompts", n_prompts)
            prompt_created = iso(now - WEEKS * 7 * 86400 - rng.uniform(0, 86400, n_prompts))
            with cur.copy(
                "COPY prompts (id, project_id, text, source, metadata, rank_full, created_at) "
                "FROM STDIN"
            ) as copy:
                for pid, at in zip(prompt_ids.tolist(), prompt_created, strict=True):
                    copy.write_row(
                        (pid, project_id, f"Question {pid}: explain something.", "import",
                         "{}", True, at)
                    )  # fmt: skip
            bump_sequence(cur, "prompts")

            # Answers: K per prompt, of varied length (the length-bias figure reads them).
            answer_ids = next_ids(cur, "completions", n_prompts * K).reshape(n_prompts, K)
            words = rng.integers(5, 60, size=(n_prompts, K)).tolist()
            with cur.copy(
                "COPY completions (id, prompt_id, text, text_sha256, origin, created_at) FROM STDIN"
            ) as copy:
                for p, pid in enumerate(prompt_ids.tolist()):
                    at = prompt_created[p]
                    for j in range(K):
                        body = f"Answer {j} to {pid}: " + "lorem ipsum " * words[p][j]
                        sha = hashlib.sha256(body.encode()).hexdigest()
                        copy.write_row((int(answer_ids[p, j]), pid, body, sha, "import:bench", at))
            bump_sequence(cur, "completions")

            # Rankings: row r is labeler r % 3 on prompt r // 3.
            n = n_prompts * LABELERS
            prompt_of = np.repeat(np.arange(n_prompts), LABELERS)
            true_order = np.argsort(rng.random((n_prompts, K)), axis=1)  # columns, best first
            order = true_order[prompt_of].copy()
            for i in range(K - 1):  # noise: swap adjacent places
                swap = rng.random(n) < SWAP_P
                left = order[swap, i].copy()
                order[swap, i] = order[swap, i + 1]
                order[swap, i + 1] = left
            tie_at = np.where(rng.random(n) < TIE_P, rng.integers(0, K - 1, n), -1)
            position = np.arange(K)[None, :]
            place = position - ((tie_at[:, None] >= 0) & (position > tie_at[:, None]))
            ranked_ids = answer_ids[prompt_of[:, None], order]  # (n, K) best first
            shown = answer_ids[prompt_of[:, None], np.argsort(rng.random((n, K)), axis=1)]
            rating = np.clip(np.rint(6.5 - 1.6 * place + rng.normal(0, 0.9, (n, K))), 1, 7)
            # Flags: an answer is truly bad with probability FLAG_P; labelers mostly see it.
            bad = rng.random((n_prompts, K)) < FLAG_P
            bad_kind = rng.integers(0, len(DEFAULT_FLAGS), (n_prompts, K))
            seen = np.where(bad[prompt_of], rng.random((n, K)) < 0.7, rng.random((n, K)) < 0.002)
            flag_kind = np.where(
                bad[prompt_of], bad_kind[prompt_of], rng.integers(0, len(DEFAULT_FLAGS), (n, K))
            )
            flag_kind = np.take_along_axis(flag_kind, order, axis=1)  # by place, like the ids
            seen = np.take_along_axis(seen, order, axis=1)
            seconds = np.round(rng.lognormal(np.log(45), 0.6, n), 1)
            created = iso(now - rng.uniform(0, WEEKS * 7 * 86400, n))
            comparison_ids = next_ids(cur, "comparisons", n)

            ids_l, shown_l = ranked_ids.tolist(), shown.tolist()
            ratings_l, seen_l = rating.astype(int).tolist(), seen.tolist()
            kind_l, ties_l = flag_kind.tolist(), tie_at.tolist()
            prompts_l, seconds_l = prompt_ids[prompt_of].tolist(), seconds.tolist()
            with cur.copy(
                "COPY comparisons (id, prompt_id, labeler_id, revision, is_latest, "
                "displayed_completion_ids, ranking, ratings, flags, not_rankable, is_surplus, "
                "seconds_spent, created_at) FROM STDIN"
            ) as copy:
                for r in range(n):
                    ids, t = ids_l[r], ties_l[r]
                    groups = [[a] for a in ids]
                    if t >= 0:
                        groups[t : t + 2] = [[ids[t], ids[t + 1]]]
                    ranking = (
                        "[" + ",".join("[" + ",".join(map(str, g)) + "]" for g in groups) + "]"
                    )
                    ratings = "{" + ",".join(
                        f'"{a}":{v}' for a, v in zip(ids, ratings_l[r], strict=True)
                    ) + "}"  # fmt: skip
                    flagged = [
                        f'"{a}":["{DEFAULT_FLAGS[k]}"]'
                        for a, s, k in zip(ids, seen_l[r], kind_l[r], strict=True)
                        if s
                    ]
                    copy.write_row(
                        (int(comparison_ids[r]), prompts_l[r], labeler_ids[r % LABELERS], 1, True,
                         "[" + ",".join(map(str, shown_l[r])) + "]", ranking, ratings,
                         "{" + ",".join(flagged) + "}" if flagged else None, False, False,
                         seconds_l[r], created[r])
                    )  # fmt: skip
            bump_sequence(cur, "comparisons")
        conn.commit()
    finally:
        raw.close()
    return n


def best_of(label: str, runs: list[float], aim: str) -> None:
    each = ", ".join(f"{t:.2f}" for t in runs)
    print(f"{label}: {each} s; best {min(runs):.2f} s   ({aim})")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def measure(session: Session, project: Project) -> None:
    builds = []
    report = None
    for _ in range(3):
        session.expire_all()
        report, took = timed(lambda: build_report(session=session, project=project))
        builds.append(took)
    assert report is not None
    best_of(
        "build_report (all project metrics from Postgres)", builds, f"aim: under {AIM_BUILD_S:g} s"
    )

    loads, computes = [], []
    for _ in range(3):
        table, took = timed(lambda: load_rank_table(session=session, project=project))
        loads.append(took)
        start = time.perf_counter()
        compute_report(table, project=project, filters=AgreementFilters(), names={}, skips={})
        computes.append(time.perf_counter() - start)
    best_of("  of which load_rank_table", loads, "Postgres -> arrays")
    best_of("  of which compute_report ", computes, "numpy, bootstrap included")

    likert = report.labels[0] if report.labels else None
    print(
        f"figures: n_comparisons {report.n_comparisons}, prompts {report.n_prompts}, "
        f"labelers {report.n_labelers}\n"
        f"  pairwise agreement (micro) {fmt(report.micro.value)} "
        f"[{fmt(report.micro.low)}, {fmt(report.micro.high)}] on {report.micro.n} pairs; "
        f"macro {fmt(report.macro.value)}\n"
        f"  Kendall's W {fmt(report.kendall_w.value)}; mean tau-b {fmt(report.tau_b.value)}; "
        f"{likert.name if likert else 'Likert'} alpha "
        f"{fmt(likert.alpha.value if likert else None)}; "
        f"weeks {len(report.weekly)}"
    )

    session.expire_all()
    _, first = timed(lambda: project_agreement(session=session, project=project))
    _, hit = timed(lambda: project_agreement(session=session, project=project))
    print(
        f"project_agreement: first (miss) {first:.2f} s, second (cache hit) {hit * 1000:.1f} ms"
        f"   (aim: the dashboard renders in under {AIM_PAGE_MS} ms from cached figures)"
    )


ADMIN_EMAIL, ADMIN_PASSWORD = "admin@bench.test", "bench-admin-password"


async def page_timings(url: str, project_id: int, requests: int = 20) -> list[float]:
    """GET the dashboard as a logged-in admin through the real app (ASGI, no network):
    milliseconds per request once the figures are cached."""
    import tempfile
    from pathlib import Path

    from app.config import Settings
    from app.main import create_app

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, database_url=url, data_dir=Path(tmp),
                            secret_key="bench-secret-key-0123456789")  # fmt: skip
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            page = await client.get("/login")
            match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert match is not None
            data = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": match[1]}
            await client.post("/login", data=data)
            path = f"/admin/projects/{project_id}/agreement"
            first = await client.get(path)  # computes, or finds the figures cached
            assert first.status_code == 200, first.status_code
            timings = []
            for _ in range(requests):
                start = time.perf_counter()
                r = await client.get(path)
                timings.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200 and "Pairwise agreement" in r.text
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    args, _unknown = parser.parse_known_args()
    admin_url = os.environ.get(
        "RLHF_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    url = fresh_database(admin_url, DATABASE)
    project_id, labeler_ids = setup(url)
    engine = make_engine(url)
    try:
        n, took = timed(lambda: load(engine, project_id, labeler_ids, args.prompts))
        print(
            f"loaded {args.prompts} prompts x {K} answers, {n} comparisons "
            f"({LABELERS} labelers, overlap {OVERLAP}) in {took:.1f} s"
        )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            _, took = timed(lambda: conn.execute(text("ANALYZE")))
        print(f"ANALYZE {took:.1f} s")
        with make_session_factory(engine)() as session:
            project = session.get(Project, project_id)
            assert project is not None
            measure(session, project)
            create_user(session=session, email=ADMIN_EMAIL, password=ADMIN_PASSWORD,
                        role=Role.admin, display_name="Bench admin")  # fmt: skip
            session.commit()
        ms = asyncio.run(page_timings(url, project_id))
        print(
            f"GET /admin/projects/{project_id}/agreement (cached figures): median "
            f"{statistics.median(ms):.0f} ms, max {max(ms):.0f} ms over {len(ms)} requests"
            f"   (aim: under {AIM_PAGE_MS} ms)"
        )
    finally:
        engine.dispose()
        if not args.keep:
            admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
            admin.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB" + (f"; database {DATABASE} kept" if args.keep else ""))


if __name__ == "__main__":
    main()
