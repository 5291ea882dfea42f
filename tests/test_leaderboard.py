"""The model leaderboard (design §14): Bradley-Terry ratings of answer origins from people's
rankings, on plain data (the math) and through the API and the project page (SQLite and
Postgres)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sqlalchemy.orm import Session

from app.agreement.leaderboard import (
    MEAN_RATING,
    SCALE,
    build_leaderboard,
    build_project_leaderboard,
    origin_pairs,
    pair_table,
    win_matrix,
)
from app.auth.service import create_api_token
from app.labeling.models import Comparison, GoldRanking, Prompt
from app.models_registry.models import ModelKind, ModelVersion
from app.projects.models import Project
from tests.helpers import answers, login, make_admin, make_project, make_prompt, make_user, rank

# --- The math, on plain data ---------------------------------------------------------------

# Four models' true ratings (mean 1000, the fit's anchoring): 100 points apart, so that
# neighbours win 64% of their pairs; hard enough that noise matters, easy enough for 150
# prompts to order them.
TRUE_RATINGS = {"model:1": 1150.0, "model:2": 1050.0, "model:3": 950.0, "model:4": 850.0}
SEEDS = range(10)
PROMPTS = 150


def simulated_rankings(
    seed: int, *, prompts: int = PROMPTS
) -> tuple[list[tuple[int, list[list[int]]]], dict[int, str]]:
    """One K=4 ranking per prompt of the four models' answers, drawn from the Plackett-Luce
    model of the true ratings (strength + Gumbel noise, sorted): its pairwise marginals are
    exactly Bradley-Terry's, so the fit should find the true ratings."""
    rng = np.random.default_rng(seed)
    origins = list(TRUE_RATINGS)
    strengths = np.array([TRUE_RATINGS[o] for o in origins]) / SCALE
    rankings, origin_of = [], {}
    for p in range(prompts):
        ids = [4 * p + i for i in range(4)]
        origin_of.update(zip(ids, origins, strict=True))
        order = np.argsort(-(strengths + rng.gumbel(size=4)))
        rankings.append((p, [[ids[i]] for i in order]))
    return rankings, origin_of


def test_the_fit_recovers_a_known_order_and_its_intervals_cover_the_true_ratings() -> None:
    """Over 10 seeds the ratings come out in the true order every time, and the 95% bootstrap
    intervals hold the true ratings in at least 34 of the 40 (model, seed) cases. At 95% one
    expects 38; 34 (85%) leaves room for a percentile bootstrap on 150 prompts running a
    little narrow (under independent 95% intervals, 33 or fewer happens about 1 time in 100),
    while intervals that ignored the noise would miss far more often."""
    orders, covered, seen = [], 0, []
    for seed in SEEDS:
        rankings, origin_of = simulated_rankings(seed)
        board = build_leaderboard(pair_table(rankings, origin_of), seed=seed)
        orders.append([s.origin for s in board.models])
        for s in board.models:
            low, high = s.ci
            assert low is not None and high is not None
            assert low <= s.rating <= high
            covered += low <= TRUE_RATINGS[s.origin] <= high
        assert np.mean([s.rating for s in board.models]) == pytest.approx(MEAN_RATING)
        assert board.n_rankings == PROMPTS and board.n_pairs == 6 * PROMPTS
        seen.append([round(s.rating) for s in board.models])
    assert all(order == list(TRUE_RATINGS) for order in orders), (orders, seen)
    assert covered >= 34, (covered, seen)


def test_ties_and_answers_of_one_origin_give_no_pair() -> None:
    origin_of = {1: "model:1", 2: "model:2", 3: "model:3", 4: "model:1"}
    assert origin_pairs([[1, 2], [3]], origin_of) == [
        ("model:1", "model:3"),
        ("model:2", "model:3"),
    ]
    assert origin_pairs([[1, 2, 3]], origin_of) == []  # one group: all tied
    assert origin_pairs([[1], [4], [2]], origin_of) == [("model:1", "model:2")] * 2
    table = pair_table([(0, [[1, 2, 3]]), (1, [[1], [4]]), (2, [[2], [3]])], origin_of)
    assert table.n_rankings == 1 and table.n_pairs == 1  # the others counted nowhere
    assert table.origins == ["model:2", "model:3"]


def test_a_ranking_counts_once_whatever_its_k() -> None:
    """A K=4 ranking's six pairs weigh 1/6 each, a K=2 ranking's one pair weighs 1: here the
    short ranking's B > A outweighs the long one's A > B six to one."""
    origin_of = {1: "A", 2: "B", 3: "C", 4: "D", 5: "A", 6: "B"}
    table = pair_table([(0, [[1], [2], [3], [4]]), (1, [[6], [5]])], origin_of)
    assert table.n_rankings == 2 and table.n_pairs == 7
    assert np.bincount(table.prompt, weights=table.weight).tolist() == pytest.approx([1, 1])
    wins = win_matrix(table)
    assert wins.sum() == pytest.approx(2)
    a, b = table.origins.index("A"), table.origins.index("B")
    assert wins[a, b] == pytest.approx(1 / 6) and wins[b, a] == pytest.approx(1)
    board = build_leaderboard(table)
    by_origin = {s.origin: s for s in board.models}
    assert by_origin["A"].against["B"] == (pytest.approx(1 / 7), 2)
    assert by_origin["B"].rating > by_origin["A"].rating


def test_an_origin_that_never_loses_has_a_finite_rating() -> None:
    origin_of = {1: "A", 2: "B"}
    board = build_leaderboard(pair_table([(p, [[1], [2]]) for p in range(5)], origin_of))
    best, worst = board.models
    assert best.origin == "A" and best.win_rate == 1 and worst.win_rate == 0
    assert MEAN_RATING < best.rating < MEAN_RATING + 1000  # the prior holds it
    assert best.rating + worst.rating == pytest.approx(2 * MEAN_RATING)


def test_the_bootstrap_is_seeded() -> None:
    rankings, origin_of = simulated_rankings(3, prompts=30)
    table = pair_table(rankings, origin_of)
    first = build_leaderboard(table, resamples=50, seed=7).as_dict()
    assert build_leaderboard(table, resamples=50, seed=7).as_dict() == first
    assert build_leaderboard(table, resamples=50, seed=8).as_dict() != first


def test_no_rankings_give_an_empty_leaderboard() -> None:
    board = build_leaderboard(pair_table([], {}))
    assert board.as_dict()["models"] == [] and board.n_rankings == board.n_pairs == 0


# --- A project: the API and the page ---------------------------------------------------------


def ranked_project(session: Session) -> tuple[Project, int]:
    """Three origins on 12 prompts, each ranked by two labelers: policy-v2 over policy-v1
    over the imported gpt-x, except that one labeler puts v1 first on every third prompt.
    What the leaderboard must leave out puts gpt-x first: a gold prompt's rankings, an
    imported preference, and a "not rankable" ranking. Returns the project and the number of
    rankings that count."""
    project = make_project(session, k=3)
    v1 = ModelVersion(name="policy-v1", kind=ModelKind.policy, path="/models/v1")
    v2 = ModelVersion(name="<b>policy-v2</b>", kind=ModelKind.policy, path="/models/v2")
    session.add_all([v1, v2])
    session.flush()
    ann, bob, admin = make_user(session), make_user(session), make_admin(session)

    def prompt(i: int) -> Prompt:
        row = make_prompt(session, project, text=f"Question {i}?", answers=3)
        for completion, origin in zip(
            row.completions, [f"model:{v1.id}", f"model:{v2.id}", "import:gpt-x"], strict=True
        ):
            completion.origin = origin
        return row

    for i in range(12):
        row = prompt(i)
        rank(session, row, ann, [1, 0, 2])  # places of v1, v2, gpt-x
        rank(session, row, bob, [0, 1, 2] if i % 3 == 0 else [1, 0, 2])
    gold = prompt(100)
    ids = answers(gold)
    session.add(GoldRanking(prompt_id=gold.id, ranking=[[ids[2]], [ids[1]], [ids[0]]]))
    for labeler in (ann, bob, admin):
        rank(session, gold, labeler, [2, 1, 0])
    imported = prompt(101)
    ids = answers(imported)
    session.add(
        Comparison(
            prompt_id=imported.id, labeler_external="import:prefs.jsonl",
            displayed_completion_ids=ids, ranking=[[ids[2]], [ids[1]], [ids[0]]],
        )
    )  # fmt: skip
    rank(session, prompt(102), ann, [], not_rankable=True)
    session.flush()
    return project, 24


async def test_the_api_ranks_the_origins_from_people_s_rankings(
    client: httpx.AsyncClient, session: Session
) -> None:
    project, n_rankings = ranked_project(session)
    _, token = create_api_token(session=session, user=make_admin(session), name="t")
    session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    r = await client.get(f"/api/v1/projects/{project.id}/leaderboard", headers=headers)
    assert r.status_code == 200, r.text
    data = r.json()
    assert [m["name"] for m in data["models"]] == ["<b>policy-v2</b>", "policy-v1", "gpt-x"]
    assert data["models"][2]["origin"] == "import:gpt-x"
    assert data["rankings"] == n_rankings and data["pairs"] == 3 * n_rankings
    best, middle, last = data["models"]
    assert best["win_rate"] == pytest.approx((20 / 24 + 1) / 2, abs=1e-4)
    assert last["win_rate"] == 0 and best["n_pairs"] == 2 * n_rankings
    assert best["against"][middle["origin"]] == {"win_rate": pytest.approx(20 / 24, abs=1e-4),
                                                 "n_pairs": n_rankings}  # fmt: skip
    for m in data["models"]:
        low, high = m["ci"]
        assert low <= m["rating"] <= high
    assert sum(m["rating"] for m in data["models"]) == pytest.approx(3 * MEAN_RATING, abs=0.2)
    expected = build_project_leaderboard(session=session, project=project).as_dict()
    assert data == expected
    # a ranking added changes the figures (the cache sees the new comparison)
    row = make_prompt(session, project, text="One more?", answers=3)
    for completion, origin in zip(row.completions, [m["origin"] for m in data["models"]],
                                  strict=True):  # fmt: skip
        completion.origin = origin
    rank(session, row, make_user(session), [2, 1, 0])  # the worst first, for once
    session.commit()
    again = (await client.get(f"/api/v1/projects/{project.id}/leaderboard", headers=headers)).json()
    assert again["rankings"] == n_rankings + 1 and again["models"][2]["win_rate"] > 0


async def test_the_api_is_for_admins_and_knows_its_projects(
    client: httpx.AsyncClient, session: Session
) -> None:
    project, _ = ranked_project(session)
    empty = make_project(session)
    _, labeler_token = create_api_token(session=session, user=make_user(session), name="t")
    _, admin_token = create_api_token(session=session, user=make_admin(session), name="t")
    session.commit()
    path = f"/api/v1/projects/{project.id}/leaderboard"
    refused = await client.get(path, headers={"Authorization": f"Bearer {labeler_token}"})
    assert refused.status_code == 403 and "detail" in refused.json()
    admin = {"Authorization": f"Bearer {admin_token}"}
    missing = await client.get("/api/v1/projects/999999/leaderboard", headers=admin)
    assert missing.status_code == 404 and "detail" in missing.json()
    nothing = await client.get(f"/api/v1/projects/{empty.id}/leaderboard", headers=admin)
    assert nothing.status_code == 200
    assert nothing.json()["models"] == [] and nothing.json()["rankings"] == 0
    assert (await client.get(path)).status_code == 401
    spec = (await client.get("/api/v1/openapi.json")).json()
    operation = spec["paths"]["/api/v1/projects/{project_id}/leaderboard"]["get"]
    assert {"403", "404"} <= set(operation["responses"])


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
async def test_the_project_page_shows_the_leaderboard(
    client: httpx.AsyncClient, session: Session, htmx: bool
) -> None:
    project, _ = ranked_project(session)
    empty = make_project(session)
    admin = make_admin(session)
    session.commit()
    await login(client, admin)
    headers = {"HX-Request": "true"} if htmx else {}
    page = await client.get(f"/admin/projects/{project.id}", headers=headers)
    assert page.status_code == 200
    html = page.text
    section = html[html.index('id="leaderboard"') :]
    section = section[: section.index("</section>")]
    board = build_project_leaderboard(session=session, project=project)
    table = section[section.index('<table class="table table-leaderboard">') :]
    rows = table[: table.index("</table>")].split("<tr>")[2:]
    assert len(rows) == 3
    for row, standing in zip(rows, board.models, strict=True):
        low, high = standing.ci
        assert low is not None and high is not None
        assert f"{standing.rating:,.0f}" in row
        assert f"{low:,.0f} to {high:,.0f}" in row
        assert f"{standing.win_rate * 100:.1f}%" in row and f">{standing.n_pairs}<" in row
    assert "&lt;b&gt;policy-v2&lt;/b&gt;" in rows[0] and "<b>policy-v2" not in html
    assert "policy-v1" in rows[1] and "gpt-x" in rows[2]
    chart = section[section.index("<svg") : section.index("</svg>")]
    assert chart.count('class="chart-interval"') == 3
    assert "&lt;b&gt;policy-v2&lt;/b&gt;" in chart
    none_yet = await client.get(f"/admin/projects/{empty.id}", headers=headers)
    assert none_yet.status_code == 200 and "No model ratings yet" in none_yet.text
