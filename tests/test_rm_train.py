"""Reward-model training end to end on synthetic rankings with a known rule: an answer that
says "please" beats one that does not. A tiny GPT-2 built here must learn it (> 0.9
validation accuracy) in CI time; bad data is refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.ml.rm_train import (
    KwiseCollator,
    Ranking,
    RewardConfig,
    RewardDataError,
    check_rankings,
    prepare_rankings,
    train_reward_model,
)
from workers.ml.synthetic import corpus, please_rankings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.ml.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("rm") / "gpt2", texts=corpus())


def test_a_tiny_reward_model_learns_the_please_rule(tiny: Path, tmp_path: Path) -> None:
    config = RewardConfig(epochs=4, batch_size=8, learning_rate=2e-3, max_length=64)
    _model, _tokenizer, result = train_reward_model(
        tiny, please_rankings(240, seed=1), please_rankings(60, seed=2), tmp_path, config
    )
    assert result.pairs == 60 * 4  # 2 polite x 2 plain per prompt; the ties give none
    assert result.accuracy > 0.9, result
    assert result.reward_std > 0


def test_a_one_epoch_run_logs_a_training_curve(tiny: Path, tmp_path: Path) -> None:
    """The demo's one-epoch RM job: 5 steps, fewer than the logging interval of 10. Its
    training figures are still logged, at every step, so the job page draws the train line
    beside the epoch's one validation point."""
    from workers.ml.training import ReportCallback

    logged: list[tuple[int, str, set[str]]] = []

    def on_step(step: int, values: dict[str, float], phase: str) -> None:
        logged.append((step, phase, set(values)))

    config = RewardConfig(epochs=1, batch_size=8, max_length=64, logging_steps=10)
    train_reward_model(
        tiny, please_rankings(40, seed=1), please_rankings(8, seed=2), tmp_path, config,
        callbacks=[ReportCallback(on_step, lambda fraction, message: None)], on_step=on_step,
    )  # fmt: skip
    train = [(step, keys) for step, phase, keys in logged if phase == "train"]
    assert [step for step, _ in train] == [1, 2, 3, 4, 5]
    assert all({"loss", "accuracy", "learning_rate"} <= keys for _, keys in train)
    assert [step for step, phase, _ in logged if phase == "eval"] == [5]


def test_the_answer_is_never_cut_the_prompt_is(tiny: Path) -> None:
    from workers.ml.reward_model import load_reward_model

    _, tokenizer = load_reward_model(tiny)
    collator = KwiseCollator(tokenizer, max_length=24, causal=True)
    ranking = Ranking(prompt="the cat " * 40, answers=["please sit", "ran"], places=[0, 1])
    batch = collator([ranking])
    assert batch["input_ids"].shape[1] <= 24
    first = tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert first.endswith("please sit" + tokenizer.eos_token)
    assert batch["places"].tolist() == [[0, 1]]


def test_bad_rankings_are_refused_with_a_reason() -> None:
    with pytest.raises(RewardDataError, match="no rankings"):
        check_rankings([])
    mixed = [Ranking("p", ["a", "b"], [0, 1]), Ranking("q", ["a", "b", "c"], [0, 1, 2])]
    assert check_rankings(mixed) == {2: 1, 3: 1}


def test_mixed_k_trains_in_one_run(tiny: Path, tmp_path: Path) -> None:
    """Imported pairs (K=2) beside K=4 rankings: one run, batches mixing the sizes, learns
    the rule on both, and every validation pair of either size is counted."""
    pairs = [Ranking(r.prompt, r.answers[:2], r.places[:2]) for r in please_rankings(300, seed=5)]
    pairs = [r for r in pairs if len(set(r.places)) == 2][:120]
    train = please_rankings(120, seed=1) + pairs
    validation = please_rankings(30, seed=2) + [
        r for r in (Ranking(x.prompt, x.answers[:2], x.places[:2])
                    for x in please_rankings(80, seed=6)) if len(set(r.places)) == 2
    ][:30]  # fmt: skip
    config = RewardConfig(epochs=4, batch_size=8, learning_rate=2e-3, max_length=64)
    _model, _tokenizer, result = train_reward_model(tiny, train, validation, tmp_path, config)
    assert result.sizes == {2: 120, 4: 120}
    assert result.pairs == 30 * 4 + 30 * 1
    assert result.accuracy > 0.9, result


def test_collator_encodes_only_real_answers_of_mixed_sizes(tiny: Path) -> None:
    from workers.ml.reward_model import load_reward_model

    _, tokenizer = load_reward_model(tiny)
    collator = KwiseCollator(tokenizer, max_length=64, causal=True)
    batch = collator(
        [Ranking("p", ["a", "b"], [0, 1]), Ranking("q", ["c", "d", "e", "f"], [1, 0, 2, 2])]
    )
    assert batch["input_ids"].shape[0] == 6  # 2 + 4 answers, no padding answer
    assert batch["valid"].tolist() == [[True, True, False, False], [True] * 4]
    assert batch["places"][1].tolist() == [1, 0, 2, 2]


def test_long_answers_are_left_out_of_their_rankings_by_default(tiny: Path) -> None:
    from workers.ml.reward_model import load_reward_model

    _, tokenizer = load_reward_model(tiny)
    collator = KwiseCollator(tokenizer, max_length=32, causal=True)
    long = "cat " * 200
    rankings = [
        Ranking("p", [long, "dog", "please sit"], [0, 1, 2]),  # keeps 2 places
        Ranking("q", [long, "dog"], [0, 1]),  # left with one answer: dropped
        Ranking("r", ["dog", "cat"], [0, 0]),  # all tied: no pair
        Ranking("s", ["dog"], [0]),  # one answer: no pair either, and no reason to refuse
    ]
    kept, left_out, cut = prepare_rankings(rankings, collator)
    assert [(r.prompt, r.answers, r.places) for r in kept] == [("p", ["dog", "please sit"], [1, 2])]
    assert cut == 0
    assert left_out.metrics() == {
        "left_out": 4,
        "left_out_reasons": {
            "rankings with fewer than 2 ranked places (no pair)": 2,
            "answers longer than max_length (32 tokens) left out of their rankings": 1,
            "rankings left with fewer than 2 ranked places once answers longer than max_length "
            "(32 tokens) were left out": 1,
        },
    }
    kept, left_out, cut = prepare_rankings(rankings, collator, long_answers="truncate")
    assert [r.prompt for r in kept] == ["p", "q"]
    assert cut == 2 and left_out.total == 2  # only the rankings with no pair
    first = kept[0].answers[0]
    assert long.startswith(first) and 0 < len(first) < len(long)
    assert len(tokenizer(first, add_special_tokens=False)["input_ids"]) <= collator.answer_budget
    batch = collator(kept)
    assert batch["input_ids"].shape[1] <= 32
    text = tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert text.endswith(first + tokenizer.eos_token)  # the cut answer is whole in the input


def test_a_run_with_every_answer_too_long_fails_naming_the_option(
    tiny: Path, tmp_path: Path
) -> None:
    long = [Ranking("p", ["cat " * 200, "dog " * 100], [0, 1])] * 4
    with pytest.raises(RewardDataError, match="--long-answers truncate") as error:
        train_reward_model(tiny, long, long, tmp_path, RewardConfig(max_length=32))
    # the training split's own counts, and the options that would help
    assert str(error.value).startswith(
        "None of the 4 training rankings can be used: 4 rankings left with fewer than 2 ranked "
        "places once answers longer than max_length (32 tokens) were left out. Use "
        "--long-answers truncate"
    )
    ties = [Ranking("p", ["a", "b"], [0, 0])] * 3
    with pytest.raises(RewardDataError, match="Nothing is left to learn from") as tied:
        train_reward_model(tiny, ties, ties, tmp_path, RewardConfig(max_length=32))
    assert "--long-answers" not in str(tied.value)
    config = RewardConfig(max_length=32, long_answers="truncate", epochs=1)
    _model, _tokenizer, result = train_reward_model(tiny, long, long, tmp_path, config)
    assert result.truncated == 16 and result.train_rankings == 4 and result.pairs == 4
