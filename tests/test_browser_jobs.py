"""Job pages in a real browser (Debian's Chromium driven by Playwright), on the demo served by
`rlhf serve --with-worker`: an export job links to its export and files, a generation job's
bar moves batch by batch, and training jobs' curves and figures read as words.

Export and generation jobs run for real in the demo's worker. The PPO and reward-model jobs
are recorded instead of trained (training takes minutes on CI): `run_job` runs a script that
reports through the worker's own `JobContext` (`record_step`, `progress`), with the steps and
figures the real jobs log for a run of that size.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.db import make_engine, make_session_factory, session_scope
from app.jobs import kinds
from app.jobs.models import JobStatus
from app.jobs.service import create_job
from app.jobs.training import PPOOptions, TrainOptions
from tests.browser import BROWSER_MARKS, cli, log_in, shot
from tests.conftest import make_settings
from tests.processes import Server
from workers.runner import JobContext, run_job

pytestmark = BROWSER_MARKS

ADMIN = ("admin@demo.local", "demo-admin")


def recorded_job(
    server: Server, kind: str, params: dict[str, Any], script: Callable[[JobContext], None]
) -> int:
    """A finished job of ``kind`` in the server's database, its steps and figures reported by
    ``script`` through the worker's JobContext, as the real job reports them."""
    settings = make_settings(
        database_url=server.env["RLHF_DATABASE_URL"], data_dir=Path(server.env["RLHF_DATA_DIR"])
    )
    engine = make_engine(settings.database_url)
    try:
        factory = make_session_factory(engine, writes=True)
        with session_scope(factory) as session:
            job_id = create_job(session=session, kind=kind, params=params, project_id=1).id
        status = run_job(job_id=job_id, session_factory=factory, settings=settings,
                         impls={kind: script})  # fmt: skip
        assert status == JobStatus.succeeded
    finally:
        engine.dispose()
    return job_id


def ppo_run(ctx: JobContext) -> None:
    """What workers/ppo_job.py records for 20 steps with the defaults (held-out score every
    10 steps, samples every 5): its keys, its phases, its final figures."""
    steps = 20

    def held_out(step: int) -> dict[str, float]:
        return {"score": -0.4 + 0.05 * step, "kl": 0.02 * step, "response_length": 41.0 + step}

    ctx.progress(0.0, "snapshotting the prompts")
    ctx.progress(0.01, "loading the models")
    ctx.record_step(0, held_out(0), phase="eval")
    for step in range(1, steps + 1):
        wave = math.sin(step / 2)
        ctx.record_step(step, {
            "score": -0.5 + 0.04 * step + 0.05 * wave, "score_normalised": 0.1 * step - 1,
            "kl": 0.015 * step, "kl_k3": 0.012 * step, "kl_coef": 0.05,
            "reward": -0.5 + 0.035 * step, "response_length": 40.0 + step + 3 * wave,
            "eos_rate": min(1.0, 0.5 + 0.025 * step), "policy_loss": -0.01 * wave,
            "value_loss": 0.8 / step, "clip_fraction": 0.05 + 0.01 * wave,
            "value_clip_fraction": 0.1, "approx_kl": 0.002 * step, "entropy": 3.1 - 0.02 * step,
            "ratio": 1.0, "grad_norm": 1.5 + wave, "first_ratio_max_error": 0.0,
            "skipped_minibatches": 0.0, "minibatches": 16.0, "time_generation": 1.2,
            "time_scoring": 0.3, "time_update": 2.1,
        }, phase="train")  # fmt: skip
        if (step - 1) % 5 == 0:
            ctx.record_step(step, {"samples": [
                {"prompt": "How do I boil an egg?", "response": "Put it in boiling water.",
                 "score": round(0.1 * step, 4)},
            ]}, phase="samples")  # fmt: skip
        if step % 10 == 0 and step < steps:
            ctx.record_step(step, held_out(step), phase="eval")
        ctx.progress(0.02 + 0.93 * step / steps, f"step {step} / {steps}: score {0.04 * step:.3g}")
    ctx.record_step(steps, held_out(steps), phase="eval")
    ctx.progress(0.96, "saving the policy", **{
        "heldout_score": 0.6, "heldout_kl": 0.4, "heldout_response_length": 61.0,
        "steps": steps, "kl_coef": 0.05, "critic": "reward model", "train_prompts": 36,
        "heldout_prompts": 4, "max_prompt_length": 256, "left_out": 0, "left_out_reasons": {},
    })  # fmt: skip
    ctx.progress(1.0, "registered everyday-assistant-demo-ppo (model version 9)")


def one_epoch_rm_run(ctx: JobContext) -> None:
    """What workers/train.py records for the demo's one-epoch reward model: 33 rankings in
    batches of 8 are 5 steps, each logged (a run that short logs every step), and the epoch's
    one validation."""
    ctx.progress(0.0, "snapshotting the dataset")
    ctx.progress(0.05, "training on 33 rankings", left_out=0, left_out_reasons={})
    for step in range(1, 6):
        ctx.record_step(step, {
            "loss": 0.75 + 0.03 * step, "grad_norm": 3.0 + step / 2,
            "learning_rate": 5e-5 * (1 - (step - 1) / 5), "epoch": step / 5,
            "accuracy": 0.5 - 0.05 * step,
        }, phase="train")  # fmt: skip
        ctx.progress(0.05 + 0.9 * step / 5, f"step {step} / 5")
    ctx.record_step(5, {"accuracy": 0.222, "margin": -0.845, "loss": 1.289, "epoch": 1.0},
                    phase="eval")  # fmt: skip
    ctx.progress(0.96, "saving the model", **{
        "validation_accuracy": 0.222, "validation_margin": -0.845, "validation_loss": 1.289,
        "validation_pairs": 18, "reward_mean": -0.458, "reward_std": 0.796, "k": 4,
        "rankings_by_k": {"4": 33}, "train_rankings": 33, "validation_rankings": 3,
        "train_seconds": 15.87,
    })  # fmt: skip
    ctx.progress(1.0, "registered everyday-assistant-demo-rm (model version 8)")


def chart_titles(page: Any) -> list[str]:
    """The charts' titles as they read on the screen (CSS text-transform included)."""
    return [t.strip() for t in page.locator(".metric-chart .metric-name").all_inner_texts()]


def chart(page: Any, title: str) -> Any:
    """The svg of the chart called ``title``."""
    name = page.locator(".metric-name", has_text=re.compile(f"^{re.escape(title)}$", re.I))
    return page.locator("figure.metric-chart", has=name).locator("svg")


def curves_note(page: Any) -> str:
    return str(page.locator("h2:has-text('Training curves') + p").inner_text())


def metric_names(page: Any) -> list[str]:
    """The names in the Metrics list, as they read."""
    return [t.strip() for t in page.locator("h2:has-text('Metrics') + dl dt").all_inner_texts()]


def test_an_export_jobs_page_links_to_its_export_and_files(
    page, demo_server: Server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """An export of six imported preferences runs in the demo's worker; its job page says
    what it wrote: the export's page, the row counts as a table, and each file to download."""
    path = tmp_path / "preferences.jsonl"
    path.write_text("".join(
        json.dumps({"prompt": f"Question {i}?", "submitter": f"person-{i % 3}",
                    "chosen": f"A clear answer to question {i}.", "rejected": f"No idea {i}."})
        + "\n" for i in range(6)
    ))  # fmt: skip
    project = cli(demo_server, "projects", "create", "Preferences to export", "--k", "2").strip()
    cli(demo_server, "import", project, str(path))
    job_id = cli(demo_server, "export", project, "--kind", "pairwise",
                 "--validation-ratio", "0.34").split()[1]  # fmt: skip
    log_in(page, demo_server, *ADMIN)
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/jobs/{job_id}")
    status = page.locator("#job-status")
    status.get_by_text("succeeded", exact=True).wait_for(timeout=120_000)

    table = page.locator("table.export-counts")
    rows = dict(
        tuple(cell.strip() for cell in row.split("\t"))
        for row in table.locator("tbody tr, tfoot tr").all_inner_texts()
    )
    assert set(rows) == {"Train", "Validation", "Total"}, rows
    counts = {name: int(value.replace(",", "")) for name, value in rows.items()}
    assert counts["Total"] == counts["Train"] + counts["Validation"] == 6, counts
    assert counts["Train"] and counts["Validation"], counts  # split by submitter
    text = status.inner_text()
    assert "{'" not in text and "export_id" not in text, text  # no Python dict, no raw keys
    files = page.locator(".export-files a").all_inner_texts()
    assert {"manifest.json", "README.md", "train.jsonl", "validation.jsonl"} <= set(files)
    assert page.locator("h1").inner_text().startswith(f"Job #{job_id}: Export")
    shot(page, "job-export")

    with page.expect_download() as download:
        page.locator(".export-files a", has_text="train.jsonl").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == counts["Train"]
    with page.expect_download() as download:
        page.locator(".export-files a", has_text="manifest.json").click()
    manifest = json.loads(Path(download.value.path()).read_text())
    assert manifest["counts"]["train"] == counts["Train"]

    page.locator(".export-written a", has_text="export #").click()
    page.wait_for_url("**/admin/exports/*")
    assert page.locator("h1").first.inner_text().startswith("Export #")
    assert page.get_by_role("link", name=f"job {job_id}").is_visible()


def test_a_generation_jobs_bar_moves_after_each_batch(
    page, demo_server: Server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Four prompts without answers (as the demo has), the demo's policy, and the admin
    presses "Generate answers": the bar stops between 0% and 100% as each batch of prompts is
    stored, instead of jumping from 0% to 100%; the job's figures read as words."""
    path = tmp_path / "open-prompts.jsonl"
    questions = ["How do I boil an egg?", "Why is the sky blue?", "Name three fruits.",
                 "What is a leap year?"]  # fmt: skip
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    project = cli(demo_server, "projects", "create", "Answers to come", "--k", "2").strip()
    cli(demo_server, "import", project, str(path))
    cli(demo_server, "models", "promote", "demo-tiny-gpt2", project)

    log_in(page, demo_server, *ADMIN)
    page.wait_for_url("**/admin")
    page.goto(f"{demo_server.url}/admin/projects/{project}/generation")
    page.get_by_label("Answer length (new tokens)").fill("64")  # short answers: a quick test
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_url(re.compile(rf"/admin/projects/{project}\?saved=generation$"))
    page.get_by_role("button", name="Generate answers").click()
    page.wait_for_url("**/admin/jobs/*")
    # The status fragment the page swaps in every 2 s, read every 0.1 s: on a fast machine a
    # batch of short answers takes less than the page's own poll.
    fragment, seen = page.url, []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        html = page.request.get(fragment, headers={"HX-Request": "true"}).text()
        bar = re.search(r'<progress class="progress[^"]*" value="([0-9.]+)"', html)
        assert bar is not None, html
        seen.append(float(bar.group(1)))
        if "hx-trigger" not in html:  # finished: the fragment stops polling
            break
        time.sleep(0.1)
    page.locator("#job-status").get_by_text("succeeded", exact=True).wait_for(timeout=10_000)
    assert any(0 < value < 1 for value in seen), seen
    assert seen[-1] == 1.0
    assert page.locator(".job-status-line").inner_text() == "4 / 4 prompts"
    names = metric_names(page)
    assert names[:3] == ["Prompts to answer", "Prompts answered", "New tokens"], names
    assert not any("_" in name for name in names), names
    shot(page, "job-generation")


@pytest.fixture(scope="module")
def ppo_job(demo_server: Server) -> int:
    """A finished PPO job of 20 steps with the default settings, recorded once."""
    params = PPOOptions(policy="1", reward="2").as_dict()
    return recorded_job(demo_server, kinds.TRAIN_PPO, params, ppo_run)


@pytest.fixture(scope="module")
def rm_job(demo_server: Server) -> int:
    """The demo's one-epoch reward-model job, recorded once."""
    params = TrainOptions(kind="rm", base="1", epochs=1.0).as_dict()
    return recorded_job(demo_server, kinds.TRAIN_RM, params, one_epoch_rm_run)


def open_job(page: Any, server: Server, job_id: int) -> None:
    log_in(page, server, *ADMIN)
    page.wait_for_url("**/admin")
    page.goto(f"{server.url}/admin/jobs/{job_id}")


def test_chart_titles_read_as_words(page, demo_server: Server, ppo_job: int) -> None:  # type: ignore[no-untyped-def]
    """A PPO job's charts are called what they show ("KL (k3)", "EOS rate"), not their keys
    capitalised ("Kl K3", "Eos Rate")."""
    open_job(page, demo_server, ppo_job)
    titles = chart_titles(page)
    for title in ("Reward model score", "KL", "KL (k3)", "EOS rate", "Answer length (tokens)",
                  "Approximate KL", "KL coefficient", "Gradient norm", "Policy loss"):  # fmt: skip
        assert title in titles, titles
    assert not any("_" in t or t in ("Kl K3", "Eos Rate") for t in titles), titles
    assert page.locator("h1").inner_text() == f"Job #{ppo_job}: PPO training"
    shot(page, "job-ppo")


def test_a_ppo_jobs_page_says_when_it_validates(page, demo_server: Server, ppo_job: int) -> None:  # type: ignore[no-untyped-def]
    """PPO has no epochs: the note under its curves says that every step is logged and when
    the held-out prompts are scored (before the first step, every 10 steps, after the last)."""
    open_job(page, demo_server, ppo_job)
    note = curves_note(page)
    assert "epoch" not in note.lower(), note
    assert note == (
        "Logged after every step. Validation: answers to held-out prompts, sampled and scored "
        "before the first step, every 10 steps and after the last."
    )
    # The note is true of the chart: held-out points at steps 0, 10 and 20.
    score = chart(page, "Reward model score")
    assert score.locator("circle.chart-dot-validation").count() == 3


def test_metric_names_are_words(page, demo_server: Server, ppo_job: int, rm_job: int) -> None:  # type: ignore[no-untyped-def]
    """The Metrics lists of PPO and reward-model jobs name each figure in words."""
    open_job(page, demo_server, ppo_job)
    names = metric_names(page)
    for name in ("Held-out score", "Held-out KL", "Training prompts", "Held-out prompts",
                 "Max prompt length (tokens)", "Critic started from", "Steps"):  # fmt: skip
        assert name in names, names
    assert not any("_" in name for name in names), names
    page.goto(f"{demo_server.url}/admin/jobs/{rm_job}")
    names = metric_names(page)
    for name in ("Validation accuracy", "Validation pairs", "Rankings by K",
                 "K (answers per ranking)", "Reward standard deviation"):  # fmt: skip
        assert name in names, names
    assert not any("_" in name for name in names), names


def test_a_one_epoch_reward_models_curves_are_drawn(page, demo_server: Server, rm_job: int) -> None:  # type: ignore[no-untyped-def]
    """The demo's one-epoch RM job: the train line is drawn through its logged steps, the
    epoch's single validation point stands out as a dot, and a chart with one point stands
    it in the middle of the plot, not on the y axis."""
    open_job(page, demo_server, rm_job)

    assert chart_titles(page)[:3] == ["Loss", "Accuracy", "Margin"]
    loss = chart(page, "Loss")
    train = loss.locator("path.chart-series-train")
    assert len(re.findall(r"[ML]", train.get_attribute("d") or "")) == 5
    assert train.bounding_box()["width"] > 100  # type: ignore[index]
    assert loss.locator("circle.chart-dot-validation").count() == 1

    # Margin is measured on validation only: one point, in the middle of the plot.
    margin = chart(page, "Margin")
    dot = margin.locator("circle.chart-dot-validation")
    grid = margin.locator("line.chart-grid").first
    middle = (float(grid.get_attribute("x1") or 0) + float(grid.get_attribute("x2") or 0)) / 2
    assert abs(float(dot.get_attribute("cx") or 0) - middle) < 1, middle
    assert dot.bounding_box()["width"] >= 8  # type: ignore[index]  # a dot, not a speck

    assert curves_note(page) == "Logged every few steps. Validation is measured after the epoch."
    shot(page, "job-rm-one-epoch")
