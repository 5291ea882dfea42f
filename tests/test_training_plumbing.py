"""The training plumbing's sampler and option checks (no model needed)."""

from __future__ import annotations

import pytest

from app.jobs.training import TrainError, TrainOptions
from workers.ml.training import EpochSampler, logging_every


def test_the_epoch_order_is_a_seeded_shuffle_and_grouping_sorts_megabatches() -> None:
    lengths = [(i * 37) % 101 for i in range(400)]
    plain = EpochSampler(lengths, 8, seed=3, group_by_length=False)
    first = list(plain)
    assert sorted(first) == list(range(400)) and first != list(range(400))
    assert list(EpochSampler(lengths, 8, seed=3, group_by_length=False)) == first  # resumable
    plain.set_epoch(1)
    assert list(plain) != first  # a new shuffle each epoch

    grouped = list(EpochSampler(lengths, 8, seed=3, group_by_length=True))
    assert sorted(grouped) == list(range(400))

    def padding(order: list[int]) -> int:
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(
            max(lengths[j] for j in b) * len(b) - sum(lengths[j] for j in b) for b in batches
        )

    assert padding(grouped) < padding(first) / 5  # similar lengths share a batch


def test_group_by_length_is_a_checked_flag() -> None:
    assert TrainOptions.from_dict({"kind": "rm", "base": "1"}).group_by_length is False
    options = TrainOptions.from_dict({"kind": "rm", "base": "1", "group_by_length": "true"})
    assert options.group_by_length is True and options.trainer_config()["group_by_length"]
    with pytest.raises(TrainError, match="group_by_length must be true or false, not 'maybe'"):
        TrainOptions.from_dict({"kind": "sft", "base": "1", "group_by_length": "maybe"})


def test_a_short_run_logs_often_enough_to_draw_a_curve() -> None:
    assert logging_every(10, 5) == 1  # a one-epoch run of 5 steps: every step
    assert logging_every(10, 40) == 4  # 10 points
    assert logging_every(10, 100) == 10  # long enough for the asked interval
    assert logging_every(10, 10_000) == 10
    assert logging_every(3, 12) == 1
