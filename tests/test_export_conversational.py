"""Conversational exports (design §11): `conversational` auto, always or never for each kind,
rows exactly in TRL's conversational formats, a string prompt as one user message, every file
format read back by `datasets` as lists of dicts, and the manifest and card saying which
format and why."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, null, update
from sqlalchemy.orm import Session

from app.auth.models import User
from app.dialogue import Message, plain_text
from app.exports.options import ExportError, ExportOptions
from app.exports.rows import RowShape, pairwise_rows
from app.exports.service import write_export
from app.exports.writers import EncodedRow, json_line
from app.labeling.models import Demonstration, GoldRanking, Prompt
from app.projects.models import Project
from tests.helpers import answers, make_admin, make_project, make_prompt, make_user, rank

TURNS: list[Message] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello. How can I help?"},
    {"role": "user", "content": "Name a colour."},
]
DIALOGUE_TEXT = plain_text(TURNS)
STRING = "Which is best?"


def _dialogue(session: Session, project: Project) -> Prompt:
    prompt = make_prompt(session, project, text=DIALOGUE_TEXT)
    prompt.messages = [dict(m) for m in TURNS]
    session.flush()
    return prompt


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _export(session: Session, project: Project, folder: Path, **options: Any) -> Path:
    opts = ExportOptions.from_dict({"validation_ratio": 0, **options})
    return write_export(session=session, project=project, options=opts, folder=folder).directory


def _rows(folder: Path) -> list[dict[str, Any]]:
    return _jsonl(folder / "train.jsonl")


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture
def mixed(session: Session) -> tuple[Project, Prompt, Prompt, User]:
    """A string prompt and a dialogue prompt, each ranked once (a > b > c > d) and with a
    demonstration."""
    project = make_project(session)
    string, dialogue = make_prompt(session, project, text=STRING), _dialogue(session, project)
    ann = make_user(session)
    for prompt in (string, dialogue):
        rank(session, prompt, ann, [0, 1, 2, 3])
        session.add(Demonstration(prompt_id=prompt.id, author_id=ann.id, text=f"Demo {prompt.id}"))
    session.flush()
    return project, string, dialogue, ann


def test_the_option_is_checked_and_recorded() -> None:
    assert ExportOptions.from_dict({"kind": "sft"}).conversational == "auto"
    options = ExportOptions.from_dict({"kind": "sft", "conversational": "never"})
    assert options.as_dict()["conversational"] == "never"
    with pytest.raises(ExportError, match="conversational must be one of auto, always, never"):
        ExportOptions.from_dict({"kind": "sft", "conversational": "yes"})


def test_pairwise_auto_with_a_dialogue_is_trls_conversational_preference_format(
    session: Session, mixed: Any, tmp_path: Path
) -> None:
    project, string, dialogue, ann = mixed
    rows = _rows(_export(session, project, tmp_path / "p", kind="pairwise"))
    assert len(rows) == 12  # C(4, 2) pairs per prompt
    a, b, *_ = answers(string)
    assert rows[0] == {
        "prompt": [{"role": "user", "content": STRING}],  # a string prompt: one user message
        "chosen": _assistant(f"Answer 0 to {STRING}"),
        "rejected": _assistant(f"Answer 1 to {STRING}"),
        "prompt_id": string.id, "chosen_id": a, "rejected_id": b, "labeler": f"user:{ann.id}",
        "margin": 1, "agreement": None, "comparison_id": rows[0]["comparison_id"],
        "source": "ranking",
    }  # fmt: skip
    turns = [r for r in rows if r["prompt_id"] == dialogue.id]
    assert len(turns) == 6 and all(r["prompt"] == TURNS for r in turns)
    assert turns[0]["chosen"] == _assistant(f"Answer 0 to {DIALOGUE_TEXT}")


def test_kwise_conversational_keeps_completions_as_texts(
    session: Session, mixed: Any, tmp_path: Path
) -> None:
    project, _string, _dialogue, _ann = mixed
    rows = _rows(_export(session, project, tmp_path / "k", kind="kwise"))
    assert [r["prompt"] for r in rows] == [[{"role": "user", "content": STRING}], TURNS]
    assert rows[1]["completions"] == [f"Answer {i} to {DIALOGUE_TEXT}" for i in range(4)]
    assert rows[1]["ranking"] == [[0], [1], [2], [3]]
    never = _rows(_export(session, project, tmp_path / "n", kind="kwise", conversational="never"))
    assert [r["prompt"] for r in never] == [STRING, DIALOGUE_TEXT]
    assert never[1]["completions"] == rows[1]["completions"]


def test_sft_and_prompts_in_each_mode(session: Session, mixed: Any, tmp_path: Path) -> None:
    project, string, dialogue, _ann = mixed
    sft = _rows(_export(session, project, tmp_path / "s", kind="sft"))
    assert [(r["prompt"], r["completion"]) for r in sft] == [
        ([{"role": "user", "content": STRING}], _assistant(f"Demo {string.id}")),
        (TURNS, _assistant(f"Demo {dialogue.id}")),
    ]
    assert set(sft[0]) == {"prompt", "completion", "prompt_id", "demonstration_id", "author"}
    plain = _rows(_export(session, project, tmp_path / "sn", kind="sft", conversational="never"))
    assert [(r["prompt"], r["completion"]) for r in plain] == [
        (STRING, f"Demo {string.id}"), (DIALOGUE_TEXT, f"Demo {dialogue.id}"),
    ]  # fmt: skip
    prompts = _rows(_export(session, project, tmp_path / "p", kind="prompts"))
    assert prompts == [
        {"prompt": [{"role": "user", "content": STRING}], "prompt_id": string.id},
        {"prompt": TURNS, "prompt_id": dialogue.id},
    ]
    never = _rows(
        _export(session, project, tmp_path / "pn", kind="prompts", conversational="never")
    )
    assert never == [{"prompt": STRING, "prompt_id": string.id},
                     {"prompt": DIALOGUE_TEXT, "prompt_id": dialogue.id}]  # fmt: skip


@pytest.mark.parametrize("kind", ["pairwise", "kwise", "sft", "prompts"])
def test_string_prompts_stay_standard_under_auto_and_become_messages_when_asked(
    session: Session, tmp_path: Path, kind: str
) -> None:
    project = make_project(session)
    prompt = make_prompt(session, project, text=STRING)
    ann = make_user(session)
    rank(session, prompt, ann, [0, 1, 2, 3])
    session.add(Demonstration(prompt_id=prompt.id, author_id=ann.id, text="A demonstration."))
    session.flush()
    auto = _export(session, project, tmp_path / "auto", kind=kind)
    assert {r["prompt"] for r in _rows(auto)} == {STRING}
    assert _manifest(auto)["row_format"] == {
        "name": "standard", "why": "auto: no prompt of the export is a dialogue",
    }  # fmt: skip
    always = _export(session, project, tmp_path / "always", kind=kind, conversational="always")
    rows = _rows(always)
    assert rows and all(r["prompt"] == [{"role": "user", "content": STRING}] for r in rows)
    answer_column = {"pairwise": "chosen", "sft": "completion"}.get(kind)
    if answer_column:
        assert all(r[answer_column][0]["role"] == "assistant" for r in rows)
    manifest = _manifest(always)
    assert manifest["options"]["conversational"] == "always"
    assert manifest["row_format"]["name"] == "conversational"


def test_auto_looks_only_at_the_prompts_the_export_holds(
    session: Session, mixed: Any, tmp_path: Path
) -> None:
    """A dialogue left out by the options (gold excluded, another labeler's ranking, a prompt
    with no demonstration) does not make the rest conversational."""
    project, string, dialogue, _ann = mixed
    session.add(GoldRanking(prompt_id=dialogue.id, ranking=[[a] for a in answers(dialogue)],
                            created_by_id=make_admin(session).id))  # fmt: skip
    session.flush()
    folder = _export(session, project, tmp_path / "g", kind="pairwise", gold="exclude")
    assert {json.dumps(r["prompt"]) for r in _rows(folder)} == {json.dumps(STRING)}
    assert _manifest(folder)["row_format"]["name"] == "standard"
    only = _export(session, project, tmp_path / "o", kind="kwise", gold="only")
    assert _manifest(only)["row_format"]["why"] == (
        f"auto: the export has dialogue prompts (prompt {dialogue.id} is one), so a string prompt "
        "is one user message"
    )
    other = make_user(session)
    rank(session, string, other, [1, 0, 2, 3])
    theirs = _export(session, project, tmp_path / "l", kind="kwise", labelers=[f"user:{other.id}"])
    assert [r["prompt"] for r in _rows(theirs)] == [STRING]


def test_string_prompts_stored_as_null_or_json_null_are_not_dialogues(
    session: Session, tmp_path: Path
) -> None:
    """Python None reaches the database as SQL NULL or JSON null (bulk imports): both are a
    string prompt."""
    project = make_project(session)
    first, second = make_prompt(session, project, text="One"), make_prompt(session, project)
    session.execute(update(Prompt).where(Prompt.id == first.id).values(messages=null()))
    session.execute(update(Prompt).where(Prompt.id == second.id).values(messages=JSON.NULL))
    session.expire_all()
    folder = _export(session, project, tmp_path / "p", kind="prompts")
    assert [r["prompt"] for r in _rows(folder)] == ["One", "Say hello"]


def test_manifest_and_card_say_the_format_and_why(
    session: Session, mixed: Any, tmp_path: Path
) -> None:
    project, _string, dialogue, _ann = mixed
    folder = _export(session, project, tmp_path / "c", kind="pairwise")
    manifest = _manifest(folder)
    assert manifest["options"]["conversational"] == "auto"
    assert manifest["row_format"]["name"] == "conversational"
    assert f"prompt {dialogue.id} is one" in manifest["row_format"]["why"]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "## Format" in card and "**Conversational**" in card
    assert "`chosen` and `rejected` are one assistant message each" in card
    assert f"Why: auto: the export has dialogue prompts (prompt {dialogue.id} is one)" in card
    never = _export(session, project, tmp_path / "n", kind="sft", conversational="never")
    card = (never / "README.md").read_text(encoding="utf-8")
    assert "**Standard**: `prompt` and `completion` are texts" in card
    assert "Why: never was asked for: a dialogue prompt is its plain text, turn by turn." in card
    assert _manifest(never)["row_format"]["name"] == "standard"


@pytest.mark.parametrize("kind", ["pairwise", "kwise", "sft", "prompts"])
def test_every_file_format_holds_conversational_rows(
    session: Session, mixed: Any, tmp_path: Path, kind: str
) -> None:
    """JSONL (gzip), Parquet and a datasets folder (its validation split empty) hold the same
    rows, and `datasets` reads messages back as lists of dicts."""
    from datasets import load_dataset, load_from_disk

    project, *_ = mixed
    expected = _rows(_export(session, project, tmp_path / "jsonl", kind=kind))
    gz = _export(session, project, tmp_path / "gz", kind=kind, gzip=True)
    parquet = _export(session, project, tmp_path / "pq", kind=kind, format="parquet")
    hf = _export(session, project, tmp_path / "hf", kind=kind, format="hf")
    cache = str(tmp_path / "cache")
    loaded = {
        "jsonl.gz": load_dataset("json", data_files=str(gz / "train.jsonl.gz"), split="train",
                                 cache_dir=cache),
        "parquet": load_dataset("parquet", data_files=str(parquet / "train.parquet"),
                                split="train", cache_dir=cache),
        "hf": load_from_disk(str(hf / "dataset"))["train"],
    }  # fmt: skip
    for name, dataset in loaded.items():
        assert dataset.to_list() == expected, name
        assert isinstance(dataset[0]["prompt"], list) and isinstance(dataset[0]["prompt"][0], dict)
    validation = load_from_disk(str(hf / "dataset"))["validation"]
    assert validation.num_rows == 0 and validation.features == loaded["hf"].features


def test_conversational_pairwise_lines_are_exactly_json_dumps_of_their_rows(
    session: Session, mixed: Any
) -> None:
    project, *_ = mixed
    options = ExportOptions(kind="pairwise", conversational="always")
    rows = [
        row for _, row in pairwise_rows(session, project, options, RowShape(conversational=True))
    ]
    assert len(rows) == 12
    for row in rows:
        assert isinstance(row, EncodedRow)
        assert row.line == json_line(row)
        assert json.loads(row.line) == row
