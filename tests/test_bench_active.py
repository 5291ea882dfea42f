"""bench/active.py's core on a small synthetic set (not the shared data): every queue order
runs through the app on a fresh database and reports accuracies, the RM recovers a clear
latent preference, and the bench's bad options are refused with a message."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bench import active

WORDS = ["river", "stone", "lamp", "garden", "engine", "pepper", "violin", "harbor", "meadow"]


def synthetic_items(n: int, seed: int = 7) -> list[active.Item]:
    """Prompts with 4 answers that differ in what the latent weighs (length, lists, a
    refusal, a cut-off end, code) and in their words."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        answers = []
        for j in range(active.K):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.choice([8, 30, 90, 200, 320])))
            text = f"Answer {j} to question {i}. {words}."
            if rng.random() < 0.5:
                text += "\n" + "\n".join(f"- {rng.choice(WORDS)} point" for _ in range(rng.randint(2, 6)))  # fmt: skip
            if rng.random() < 0.2:
                text = "I'm sorry, as an AI I cannot be sure. " + text
            if rng.random() < 0.2:
                text += "\n```\nprint('hi')\n```\nDone."
            if rng.random() < 0.2:
                text += " and then the"  # cut off mid-sentence
            answers.append((f"model-{j}", text))
        items.append(active.Item(key=f"syn-{i}", prompt=f"Question {i}?", answers=tuple(answers)))
    return items


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[active.World, dict[str, active.Run], Path]:
    folder = tmp_path_factory.mktemp("active")
    world = active.World.build(synthetic_items(60), seed=0)
    template = active.template_database(folder / "template", labelers=4)
    done = {
        order: active.simulate(
            world,
            order=order,
            folder=folder / order,
            budget=40,
            retrain_every=20,
            overlap=2,
            labelers=4,
            template=template,
        )
        for order in active.QUEUE_ORDERS
    }
    return world, done, folder


def test_every_order_reports_accuracies_in_range(
    runs: tuple[active.World, dict[str, active.Run], Path],
) -> None:
    _, done, _ = runs
    for order, run in done.items():
        assert [labels for labels, _ in run.curve] == [20, 40], order
        assert all(0.0 <= accuracy <= 1.0 for _, accuracy in run.curve), (order, run.curve)
        assert not run.exhausted
        assert run.prompts_ranked >= 1
    # Overlap 2: oldest ranks each prompt twice, so 40 rankings cover 20 prompts.
    assert done["oldest"].prompts_ranked == 20
    lines = active.report({o: [r] for o, r in done.items()}, budget=40, seeds=1)
    assert any(line.startswith("uncertain reaches oldest's final accuracy") for line in lines)


def test_the_rm_recovers_the_latent_preference(
    runs: tuple[active.World, dict[str, active.Run], Path],
) -> None:
    """40 noisy rankings of 20 prompts order the held-out pairs far better than chance."""
    world, done, _ = runs
    # The labelers are noisy: two of them agree on 73% of the pairs, not all.
    pairs = world.pair_differences(world.pool)
    assert active.agreement(pairs, world.beta) == pytest.approx(active.TARGET_AGREEMENT, abs=1e-3)
    assert done["oldest"].curve[-1][1] > 0.75, done["oldest"].curve


def test_each_refit_is_stored_as_scores_the_queue_reads(
    runs: tuple[active.World, dict[str, active.Run], Path],
) -> None:
    world, _, folder = runs
    with sqlite3.connect(folder / "uncertain" / "active.db") as db:
        versions = db.execute("SELECT kind, name FROM model_versions ORDER BY id").fetchall()
        scores = db.execute("SELECT count(*) FROM completion_scores").fetchone()[0]
        gaps = db.execute("SELECT count(*) FROM prompts WHERE score_gap IS NOT NULL").fetchone()[0]
        order = db.execute("SELECT queue_order FROM projects").fetchone()[0]
    assert [kind for kind, _ in versions] == ["rm", "rm"]
    assert scores == 2 * active.K * len(world.pool)
    assert gaps == len(world.pool)
    assert order == "uncertain"


def test_fit_recovers_a_known_direction() -> None:
    rng = np.random.default_rng(3)
    truth = np.array([2.0, -1.0, 0.5, 0.0])
    x = rng.normal(size=(400, 4))
    wins = rng.random(400) < 1 / (1 + np.exp(-x @ truth))
    fitted = active.fit_bradley_terry(np.where(wins[:, None], x, -x))
    cosine = fitted @ truth / (np.linalg.norm(fitted) * np.linalg.norm(truth))
    assert cosine > 0.95, fitted


def test_noise_is_calibrated_to_the_target_agreement() -> None:
    differences = np.random.default_rng(4).normal(0.0, 2.0, 500)
    beta = active.calibrate_noise(differences, 0.73)
    assert active.agreement(differences, beta) == pytest.approx(0.73, abs=1e-3)


def test_missing_data_file_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert active.main(["--data", str(tmp_path / "absent.jsonl")]) == 0
    assert capsys.readouterr().out.startswith(f"skipped: {tmp_path / 'absent.jsonl'} is absent")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--orders", "oldest,newest"], "unknown queue order 'newest'"),
        (["--budget", "0"], "--overlap must be at least 1"),
        (["--overlap", "3", "--labelers", "4"], "--labelers must be at least overlap + 2"),
    ],
)
def test_bad_options_are_refused(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        active.main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
