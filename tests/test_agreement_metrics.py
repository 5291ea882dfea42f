"""Agreement metrics as plain functions: the published vectors, hand-worked cases, the
libraries (krippendorff, scipy, statsmodels) on random data, and "not enough data"."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.agreement import metrics as m

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "agreement" / "vectors_public.json"


def _vectors() -> list[dict[str, Any]]:
    if not VECTORS.exists():
        return []
    return json.loads(VECTORS.read_text())


def _compute(vector: dict[str, Any]) -> float | None:
    data = vector["data"]
    metric = vector["metric"]
    if metric == "krippendorff_alpha":
        return m.krippendorff_alpha(data, vector["level_of_measurement"])
    if metric == "fleiss_kappa":
        return m.fleiss_kappa(data)
    if metric == "cohen_kappa":
        return m.cohen_kappa(data)
    if metric == "kendall_tau_b":
        x, y = data.values()
        return m.kendall_tau_b(x, y)
    if metric == "kendall_w":
        assert vector["tie_correction"] is True
        return m.kendall_w([list(judge) for judge in zip(*data, strict=True)])  # objects x judges
    if metric == "pairwise_preference_agreement":
        (prompt,) = data.values()
        result = m.pairwise_agreement(prompt)
        assert result.n == vector["n_comparisons"]
        return result.value
    raise AssertionError(f"a vector for a metric we do not know: {metric}")


@pytest.mark.skipif(not VECTORS.exists(), reason="../shared/agreement is not beside the checkout")
@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
def test_public_vector(vector: dict[str, Any]) -> None:
    got = _compute(vector)
    assert got is not None
    assert got == pytest.approx(vector["expected"], abs=vector["tolerance"])
    if "expected_published" in vector:
        tolerance = vector.get("published_tolerance", vector["tolerance"])
        assert got == pytest.approx(vector["expected_published"], abs=tolerance)


# --- Hand-worked ---------------------------------------------------------------------------


def test_pairwise_agreement_leaves_out_pairs_tied_by_either_labeler() -> None:
    # L1: a > b = c > d; L2: b > a > d > c. Pairs: ab (L1 a>b, L2 b>a: disagree), ac (agree),
    # ad (agree), bc (tied by L1: out), bd (agree), cd (L1 c>d, L2 d>c: disagree).
    ranks = np.array([[0, 1, 1, 2], [1, 0, 3, 2]], dtype=float)
    prompt = np.zeros(2, dtype=np.int64)
    a, b = m.same_prompt_pairs(prompt)
    result = m.pairwise_agreement_of(m.pair_signs(ranks), a, b, prompt, 1, None)
    micro = result["micro"]
    assert isinstance(micro, m.Metric)
    assert (micro.value, micro.n, result["n_tied_pairs_left_out"]) == (3 / 5, 5, 1)


def test_micro_pools_pairs_and_macro_averages_prompts() -> None:
    # Prompt 0: 3 labelers agree fully (3 labeler pairs x 1 answer pair); prompt 1: 2 disagree.
    ranks = np.array([[0, 1], [0, 1], [0, 1], [0, 1], [1, 0]], dtype=float)
    prompt = np.array([0, 0, 0, 1, 1], dtype=np.int64)
    a, b = m.same_prompt_pairs(prompt)
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2), (3, 4)]
    result = m.pairwise_agreement_of(m.pair_signs(ranks), a, b, prompt, 2, None)
    micro, macro = result["micro"], result["macro"]
    assert isinstance(micro, m.Metric) and isinstance(macro, m.Metric)
    assert micro.value == pytest.approx(3 / 4) and micro.n == 4
    assert macro.value == pytest.approx(1 / 2) and macro.n == 2


def test_answers_not_shown_to_both_labelers_are_not_compared() -> None:
    # L2 saw only a, b, c (d is NaN): the pairs with d do not count.
    ranks = np.array([[0, 1, 2, 3], [0, 2, 1, np.nan]], dtype=float)
    prompt = np.zeros(2, dtype=np.int64)
    a, b = m.same_prompt_pairs(prompt)
    result = m.pairwise_agreement_of(m.pair_signs(ranks), a, b, prompt, 1, None)
    micro = result["micro"]
    assert isinstance(micro, m.Metric)
    assert (micro.value, micro.n) == (pytest.approx(2 / 3), 3)


def test_pairwise_agreement_is_one_plus_tau_over_two_without_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        x, y = rng.permutation(5).tolist(), rng.permutation(5).tolist()
        agreement = m.pairwise_agreement({"L1": dict(enumerate(x)), "L2": dict(enumerate(y))})
        tau = m.kendall_tau_b(x, y)
        assert agreement.value is not None and tau is not None
        assert agreement.value == pytest.approx((1 + tau) / 2)


def test_kendall_w_tie_correction_by_hand() -> None:
    # 2 judges, 3 objects; judge 2 ties objects 2 and 3 (midranks 2.5, 2.5).
    # Rank sums 2, 4.5, 5.5 (mean 4): S = 4 + 0.25 + 2.25 = 6.5.
    # Tie term: 2^3 - 2 = 6. W = 12 * 6.5 / (4 * 24 - 2 * 6) = 78 / 84.
    assert m.kendall_w([[1, 2, 3], [1, 2.5, 2.5]]) == pytest.approx(78 / 84)
    # Without the correction it would be 78 / 96: the tie matters.
    assert m.kendall_w([[1, 2, 3], [1, 2, 3]]) == pytest.approx(1.0)
    assert m.kendall_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)


def test_midranks_share_the_places_of_a_tie() -> None:
    mid, tie_term = m.midranks(np.array([[0, 1, 1, 2, np.nan]], dtype=float))
    assert mid[0, :4].tolist() == [1, 2.5, 2.5, 4] and math.isnan(mid[0, 4])
    assert tie_term.tolist() == [6]  # one tie of 2: 2^3 - 2


def test_leave_one_out_compares_each_labeler_with_the_rest() -> None:
    # Three labelers on one prompt: L1 and L2 say a > b > c, L3 says c > b > a.
    ranks = np.array([[0, 1, 2], [0, 1, 2], [2, 1, 0]], dtype=float)
    agreed, counted = m.leave_one_out_agreement(ranks, np.zeros(3, dtype=np.int64), 1)
    # L1 vs mean(L2, L3) = b, b, b: everything tied -> nothing counted.
    # L3 vs mean(L1, L2) = a > b > c: all 3 pairs disagree.
    assert counted.tolist() == [0, 0, 3]
    assert agreed.tolist() == [0, 0, 0]


def test_borda_consensus_is_the_mean_place() -> None:
    ranks = np.array([[0, 1, 2], [1, 0, 2], [0, 2, 1]], dtype=float)
    scores = m.borda_scores(ranks, np.zeros(3, dtype=np.int64), 1)
    # Places 0, .5, 1 per ranking: a = (0+.5+0)/3, b = (.5+0+1)/3, c = (1+1+.5)/3.
    assert scores[0].tolist() == pytest.approx([1 / 6, 1 / 2, 5 / 6])


def test_position_and_length_bias() -> None:
    ranks = np.array([[0, 1, 2], [1, 0, 0]], dtype=float)
    first_best, chance = m.position_bias(ranks, np.array([0, 0]))
    assert first_best.tolist() == [True, False]
    assert chance.tolist() == pytest.approx([1 / 3, 2 / 3])  # the best group's share
    lengths = np.array([[30, 20, 10], [30, 20, 10]], dtype=float)
    longer_won, counted = m.length_bias(ranks, lengths)
    assert counted.tolist() == [3, 2]  # row 2: the tie (b, c) is left out
    assert longer_won.tolist() == [3, 0]


# --- Against the libraries, on random data -------------------------------------------------


def test_tau_b_matches_scipy_with_ties() -> None:
    from scipy.stats import kendalltau

    rng = np.random.default_rng(1)
    for _ in range(50):
        x, y = rng.integers(0, 4, 7).tolist(), rng.integers(0, 4, 7).tolist()
        expected = kendalltau(x, y).statistic
        got = m.kendall_tau_b(x, y)
        if math.isnan(expected):
            assert got is None
        else:
            assert got == pytest.approx(expected)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_matches_the_krippendorff_package(level: m.Level) -> None:
    import krippendorff

    rng = np.random.default_rng(7)
    data = rng.integers(1, 8, size=(4, 60)).astype(float)
    data[rng.random(data.shape) < 0.3] = np.nan
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    rows = [[None if np.isnan(v) else float(v) for v in row] for row in data]
    assert m.krippendorff_alpha(rows, level) == pytest.approx(expected, abs=1e-12)


def test_fleiss_matches_statsmodels() -> None:
    from statsmodels.stats.inter_rater import fleiss_kappa

    rng = np.random.default_rng(5)
    table = rng.multinomial(5, [0.5, 0.3, 0.2], size=40)
    assert m.fleiss_kappa(table.tolist()) == pytest.approx(fleiss_kappa(table), abs=1e-12)


def test_cohen_matches_statsmodels() -> None:
    from statsmodels.stats.inter_rater import cohens_kappa

    table = [[12, 3, 1], [2, 9, 4], [0, 5, 14]]
    assert m.cohen_kappa(table) == pytest.approx(cohens_kappa(np.array(table)).kappa)


# --- Not enough data: None and a reason, never NaN or a fake 1.0 ----------------------------


def _all_metrics(ranks: np.ndarray, prompt: np.ndarray) -> dict[str, m.Metric]:
    n = int(prompt.max()) + 1 if len(prompt) else 0
    signs = m.pair_signs(ranks)
    a, b = m.same_prompt_pairs(prompt)
    weights = m.bootstrap_weights(n)
    result = m.pairwise_agreement_of(signs, a, b, prompt, n, weights)
    micro = result["micro"]
    assert isinstance(micro, m.Metric)
    return {
        "pairwise": micro,
        "tau_b": m.mean_tau_b(signs, a, b, prompt, n, weights),
        "kendall_w": m.mean_kendall_w(ranks, prompt, n, weights),
    }


@pytest.mark.parametrize(
    ("case", "ranks", "prompt"),
    [
        ("nothing yet", np.zeros((0, 4)), np.zeros(0, dtype=np.int64)),
        ("one labeler per prompt", np.array([[0, 1, 2, 3], [3, 2, 1, 0]], float), np.array([0, 1])),
        ("all ties", np.array([[0, 0, 0, 0], [0, 0, 0, 0]], float), np.array([0, 0])),
    ],
)
def test_not_enough_data_has_a_reason(case: str, ranks: np.ndarray, prompt: np.ndarray) -> None:
    for name, metric in _all_metrics(ranks, prompt).items():
        assert metric.value is None, (case, name)
        assert metric.reason, (case, name)
        assert metric.low is None and metric.high is None


def test_one_category_only_is_not_agreement() -> None:
    # Every labeler rated every answer 5: alpha and kappa are undefined, not 1.0.
    counts = np.zeros((3, 4, 7))
    counts[:, :, 4] = 3
    alpha = m.krippendorff_alpha_of(counts, np.arange(1.0, 8.0), "ordinal", None)
    assert alpha.value is None and alpha.reason and "same value" in alpha.reason
    fleiss = m.fleiss_kappa_of(counts.reshape(12, 7), np.repeat(np.arange(3), 4), 3, None)
    assert fleiss.value is None and fleiss.reason
    single = m.krippendorff_alpha_of(
        np.ones((1, 3, 2)) * [[[1, 0]]], np.array([0.0, 1]), "nominal", None
    )
    assert single.value is None and "two or more labelers" in (single.reason or "")


def test_fleiss_uses_the_common_number_of_raters_and_says_what_it_left_out() -> None:
    table = np.array([[3, 0], [0, 3], [2, 1], [1, 1]], dtype=float)  # the last has 2 raters
    result = m.fleiss_kappa_of(table, np.arange(4), 4, None)
    assert result.n == 3 and result.extra["n_answers_left_out"] == 1
    assert result.value == pytest.approx(m.fleiss_kappa(table[:3].tolist()))


# --- The interval --------------------------------------------------------------------------


def test_bootstrap_interval_brackets_the_value_and_is_repeatable() -> None:
    rng = np.random.default_rng(11)
    n_prompts = 300
    prompt = np.repeat(np.arange(n_prompts), 3)
    truth = np.tile(np.arange(4.0), (n_prompts * 3, 1))
    noisy = np.where(rng.random(truth.shape) < 0.3, rng.permuted(truth, axis=1), truth)
    first = _all_metrics(noisy, prompt)["pairwise"]
    again = _all_metrics(noisy, prompt)["pairwise"]
    assert first.value is not None and first.low is not None and first.high is not None
    assert first.low < first.value < first.high
    assert first.high - first.low < 0.1  # 300 prompts pin it down
    assert (first.low, first.high) == (again.low, again.high)


def test_no_interval_from_a_single_prompt() -> None:
    metric = _all_metrics(np.array([[0, 1, 2], [0, 2, 1]], float), np.array([0, 0]))["pairwise"]
    assert metric.value == pytest.approx(2 / 3)
    assert metric.low is None and metric.high is None
