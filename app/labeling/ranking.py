"""Rankings as data: ordered groups of completion ids, best first; a group of 2+ is a tie.

Plain functions over plain data (no database), shared by the pages, the API and exports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

Ranking = list[list[int]]


class RankingError(ValueError):
    """A ranking that does not fit its task; the message is shown to the labeler as it is."""


def answer_label(index: int) -> str:
    """A, B, ..., Z, AA, AB, ...: answers named as on the labeler's page, past 26 too."""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


def missing_places(letters: Sequence[str]) -> str:
    """What a labeler is told when answers have no place yet: "answers B, C and D have"."""
    names = letters[0] if len(letters) == 1 else ", ".join(letters[:-1]) + " and " + letters[-1]
    if len(letters) == 1:
        return f"Give every answer a place: answer {names} has none yet."
    return f"Give every answer a place: answers {names} have none yet."


def _ids(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in sorted(values))


def validate_ranking(ranking: Sequence[Sequence[int]], displayed: Sequence[int]) -> Ranking:
    """Check that ``ranking`` orders exactly the ``displayed`` answers, each once, and return it
    normalised (no empty groups, ids as ints, each tie group sorted)."""
    if not isinstance(ranking, Sequence) or isinstance(ranking, str | bytes):
        raise RankingError("The ranking must be a list of groups of answer ids, best first.")
    groups: Ranking = []
    seen: set[int] = set()
    repeated: set[int] = set()
    for group in ranking:
        if not isinstance(group, Sequence) or isinstance(group, str | bytes):
            raise RankingError("Each place in the ranking must be a list of answer ids.")
        ids: list[int] = []
        for value in group:
            if isinstance(value, bool) or not isinstance(value, int):
                raise RankingError(f"{value!r} is not an answer id.")
            if value in seen:
                repeated.add(value)
            seen.add(value)
            ids.append(value)
        if ids:
            groups.append(sorted(ids))
    expected = set(displayed)
    foreign = seen - expected
    if foreign:
        raise RankingError(f"Answer {_ids(foreign)} is not one of this task's answers.")
    if repeated:
        raise RankingError(f"Answer {_ids(repeated)} is ranked more than once.")
    missing = expected - seen
    if missing:
        raise RankingError(f"Every answer needs a place: answer {_ids(missing)} is not ranked yet.")
    return groups


def ranks_to_groups(ranks: Mapping[int, int]) -> Ranking:
    """{completion id: rank number} to groups, best (lowest number) first; equal numbers tie.
    The numbers need not be consecutive: {a: 1, b: 3, c: 3} is [[a], [b, c]]."""
    by_rank: dict[int, list[int]] = {}
    for completion_id, rank in ranks.items():
        by_rank.setdefault(rank, []).append(completion_id)
    return [sorted(by_rank[rank]) for rank in sorted(by_rank)]


def ordered_pairs(ranking: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """Every (better, worse, margin) pair the ranking implies; ties give no pair. The margin
    is the distance between the two groups (1 for neighbours)."""
    pairs = []
    for i, better in enumerate(ranking):
        for j in range(i + 1, len(ranking)):
            for winner in better:
                for loser in ranking[j]:
                    pairs.append((winner, loser, j - i))
    return pairs
