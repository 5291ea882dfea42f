"""Pairwise JSONL export at scale: pairs/s and peak RSS, streaming versus the obvious way.

Makes a Postgres database of its own, bulk-loads (COPY, the loader of bench/agreement.py)
rankings of K=4 answers by 3 labelers, and exports them as pairwise JSONL twice:
- at about 1M pairs (166,668 comparisons): the streaming export (the product's code) and the
  obvious approach (every comparison, prompt and answer loaded through the ORM into memory,
  all rows built in a list, then written), each in a fresh process, side by side;
- at about 6M pairs (1,000,002 comparisons): the streaming export again, to show its RSS does
  not grow with the row count.
Each export runs in a child process so its peak RSS is its own. Aim: at least 50,000
pairs/s and under 500 MB RSS.

Usage: python -m bench.export [--small 55556] [--large 333334] [--keep]   (prompts; x3 rankings)
Needs Postgres (RLHF_BENCH_ADMIN_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from app.db import make_engine, make_session_factory
from bench.agreement import load, setup
from bench.queue import fresh_database

DATABASE = "rlhf_bench_export"
AIM_PAIRS_PER_S, AIM_RSS_MB = 50_000, 500


def streaming(session: Any, project: Any, out: Path) -> int:
    from app.exports.options import ExportOptions
    from app.exports.service import write_export

    options = ExportOptions.from_dict({"kind": "pairwise", "format": "jsonl"})
    result = write_export(session=session, project=project, options=options, folder=out)
    return sum(result.counts.values())


def naive(session: Any, project: Any, out: Path) -> int:
    """The obvious way: everything through the ORM into memory, then written."""
    from app.exports.writers import json_line
    from app.labeling.models import Comparison, Completion, Prompt
    from app.labeling.ranking import ordered_pairs

    prompts = {
        p.id: p for p in session.scalars(select(Prompt).where(Prompt.project_id == project.id))
    }
    answers = {
        c.id: c
        for c in session.scalars(
            select(Completion).join(Prompt).where(Prompt.project_id == project.id)
        )
    }
    comparisons = session.scalars(
        select(Comparison)
        .join(Prompt)
        .where(Prompt.project_id == project.id, Comparison.is_latest.is_(True))
        .order_by(Comparison.prompt_id, Comparison.id)
    ).all()
    rows = []
    for c in comparisons:
        for winner, loser, margin in ordered_pairs(c.ranking):
            rows.append(
                {
                    "prompt": prompts[c.prompt_id].text,
                    "chosen": answers[winner].text,
                    "rejected": answers[loser].text,
                    "prompt_id": c.prompt_id,
                    "chosen_id": winner,
                    "rejected_id": loser,
                    "labeler": f"user:{c.labeler_id}",
                    "margin": margin,
                    "comparison_id": c.id,
                }
            )
    out.mkdir(parents=True)
    with (out / "train.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json_line(row) for row in rows)
    return len(rows)


def child(way: str, url: str, project_id: int, out: Path) -> None:
    """Run one export in this (fresh) process and print its figures as JSON."""
    from app.projects.models import Project

    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        project = session.get_one(Project, project_id)
        start = time.perf_counter()
        rows = (streaming if way == "streaming" else naive)(session, project, out)
        seconds = time.perf_counter() - start
    engine.dispose()
    print(json.dumps({"rows": rows, "seconds": seconds, "rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a
    child would report the parent's size at fork (here, the bulk loader's arrays)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(way: str, url: str, project_id: int, out: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.export", "--child", way, "--url", url,
               "--project", str(project_id), "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{way} export failed:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def report(label: str, figures: dict[str, float]) -> float:
    rate = figures["rows"] / figures["seconds"]
    print(
        f"{label:<34} {int(figures['rows']):>10,} pairs in {figures['seconds']:6.1f} s = "
        f"{rate:>9,.0f} pairs/s, peak RSS {figures['rss_mb']:5.0f} MB"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--small", type=int, default=55_556, help="prompts for ~1M pairs")
    parser.add_argument("--large", type=int, default=333_334, help="prompts for ~6M pairs")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", choices=["streaming", "naive"])
    parser.add_argument("--url")
    parser.add_argument("--project", type=int)
    parser.add_argument("--out", type=Path)
    args, _unknown = parser.parse_known_args()
    if args.child:
        child(args.child, args.url, args.project, args.out)
        return

    admin_url = os.environ.get(
        "RLHF_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    url = fresh_database(admin_url, DATABASE)
    project_id, labeler_ids = setup(url)
    engine = make_engine(url)
    print(f"aim: at least {AIM_PAIRS_PER_S:,} pairs/s and under {AIM_RSS_MB} MB RSS")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            n = load(engine, project_id, labeler_ids, args.small)
            print(f"loaded {n:,} comparisons in {time.perf_counter() - start:.1f} s")
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
            fast = report("streaming export (product)", run_child("streaming", url, project_id, Path(tmp) / "s1"))  # fmt: skip
            slow = report("obvious: all through the ORM", run_child("naive", url, project_id, Path(tmp) / "n1"))  # fmt: skip
            print(f"streaming is {fast / slow:.1f}x the obvious approach")

            start = time.perf_counter()
            more = load(engine, project_id, labeler_ids, args.large - args.small)
            print(f"loaded {more:,} more comparisons in {time.perf_counter() - start:.1f} s")
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
            report("streaming export (product), 6x", run_child("streaming", url, project_id, Path(tmp) / "s6"))  # fmt: skip
    finally:
        engine.dispose()
        if not args.keep:
            admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
