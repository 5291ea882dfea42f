"""Latency of the two home pages on a large database.

Their project counts are grouped queries, so the page cost should grow with the number of
rows scanned by the database, not with Python loops per prompt. Builds a SQLite database of
PROJECTS x PROMPTS prompts with K=4 answers each, then requests /admin and /home in-process.
Usage: python -m bench.home_pages [--prompts N] [--projects N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import insert

from app.auth.models import Role
from app.auth.service import create_user
from app.cli import alembic_config
from app.config import Settings
from app.db import make_engine, make_session_factory, utcnow
from app.labeling.models import Completion, Prompt, PromptSource
from app.main import create_app
from app.projects.service import create_project

PASSWORD = "bench-password"


def build(url: str, projects: int, prompts: int) -> None:
    from alembic import command

    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    with make_session_factory(engine, writes=True)() as session:
        create_user(session=session, email="admin@bench.test", password=PASSWORD, role=Role.admin)
        create_user(session=session, email="lab@bench.test", password=PASSWORD)
        now = utcnow()
        for p in range(projects):
            project = create_project(session=session, name=f"Project {p}")
            session.execute(
                insert(Prompt),
                [
                    {"project_id": project.id, "text": f"prompt {p}-{i}", "source": PromptSource.import_,
                     "meta": {}, "created_at": now}
                    for i in range(prompts)
                ],
            )  # fmt: skip
        session.flush()
        ids = [
            row[0]
            for row in session.execute(Prompt.__table__.select().with_only_columns(Prompt.id))
        ]
        session.execute(
            insert(Completion),
            [
                {"prompt_id": pid, "text": f"answer {j}", "text_sha256": f"{pid:032x}{j:032x}",
                 "origin": "import:bench", "created_at": now}
                for pid in ids
                for j in range(4)
            ],
        )  # fmt: skip
        session.commit()
    engine.dispose()


async def measure(settings: Settings, requests: int) -> dict[str, list[float]]:
    app = create_app(settings)
    timings: dict[str, list[float]] = {"/admin": [], "/home": []}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        page = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        await client.post(
            "/login", data={"email": "admin@bench.test", "password": PASSWORD, "csrf_token": token}
        )
        for path in timings:
            await client.get(path)  # warm up
            for _ in range(requests):
                start = time.perf_counter()
                r = await client.get(path)
                timings[path].append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200, r.status_code
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=5000, help="per project")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        start = time.perf_counter()
        build(url, args.projects, args.prompts)
        rows = args.projects * args.prompts
        print(f"built {rows:,} prompts, {4 * rows:,} answers in {time.perf_counter() - start:.1f}s")
        settings = Settings(_env_file=None, database_url=url, secret_key="bench-secret-key-0123456789",  # type: ignore[call-arg]
                            data_dir=Path(tmp))  # fmt: skip
        for path, ms in asyncio.run(measure(settings, args.requests)).items():
            p95 = statistics.quantiles(ms, n=20)[-1]
            print(f"GET {path:<7} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms")


if __name__ == "__main__":
    main()
