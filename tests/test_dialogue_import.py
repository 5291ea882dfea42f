"""Dialogue prompts in imports (design §11): TRL conversational prompt lists, ``messages``,
conversational preferences and HH transcripts; each bad row with its line and reason; on
SQLite and Postgres (the ``session`` fixture runs both)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.dialogue import parse_hh, plain_text
from app.imports.parse import ImportFileError
from app.imports.service import import_file, validate_file
from app.labeling.models import Comparison, Completion, Prompt
from tests.helpers import make_project
from tests.test_imports import SHARED_DATA, write_csv, write_jsonl

DIALOGUE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another?"},
]


def _errors(session: Session, tmp_path: Path, rows: list[Any], **options: Any) -> list[str]:
    project = make_project(session)
    path = write_jsonl(tmp_path, rows)
    errors = validate_file(session=session, project=project, path=path, **options)
    return [f"line {e.line}: {e.reason}" for e in errors]


def _import(session: Session, tmp_path: Path, rows: list[Any], **options: Any) -> list[Prompt]:
    project = make_project(session)
    path = write_jsonl(tmp_path, rows)
    summary = import_file(
        session=session, project=project, path=path, source_name="d.jsonl", **options
    )
    assert summary.imported and not summary.errors, summary.errors
    session.flush()
    return list(session.scalars(select(Prompt).where(Prompt.project_id == project.id)))


def test_a_prompt_list_a_messages_field_and_a_string_are_stored_as_given(
    session: Session, tmp_path: Path
) -> None:
    prompts = _import(
        session, tmp_path,
        [{"prompt": DIALOGUE, "completions": [{"text": "Red."}, {"text": "Green."}]},
         {"messages": DIALOGUE[1:2], "id": "single"},
         {"prompt": "Plain text"}],
    )  # fmt: skip
    by_text = {p.text: p for p in prompts}
    dialogue = by_text[
        "System: Be brief.\n\nUser: Name a colour.\n\nAssistant: Blue.\n\nUser: Another?"
    ]
    assert dialogue.messages == DIALOGUE
    assert dialogue.turns == DIALOGUE and dialogue.input == DIALOGUE
    assert [c.text for c in dialogue.completions] == ["Red.", "Green."]
    single = by_text["Name a colour."]  # one user turn reads as its text
    assert single.messages == DIALOGUE[1:2] and single.external_id == "single"
    plain = by_text["Plain text"]
    assert plain.messages is None
    assert (
        plain.turns == [{"role": "user", "content": "Plain text"}] and plain.input == "Plain text"
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": DIALOGUE[:3]}, "'prompt' ends with an assistant turn; a prompt ends with"),
        ({"prompt": DIALOGUE[:1]}, "'prompt' ends with a system turn"),
        ({"prompt": []}, "'prompt' is an empty array"),
        ({"prompt": [{"role": "robot", "content": "hi"}]}, "'prompt[0]': the role 'robot' is unknown"),
        ({"prompt": [{"content": "hi"}]}, "'prompt[0]': the role is missing"),
        ({"prompt": [{"role": "user", "content": "  "}]}, "'prompt[0]': 'content' is empty"),
        ({"prompt": [{"role": "user", "content": 3}]}, "'prompt[0]': 'content' must be a string, not a number"),
        ({"prompt": [{"role": "user"}]}, "'prompt[0]': 'content' is missing"),
        ({"prompt": ["hi"]}, "'prompt[0]' must be an object with 'role' and 'content', not a string"),
        ({"prompt": [{"role": "user", "content": "a", "name": "x"}]}, "'prompt[0]' has unknown field 'name'"),
        ({"prompt": [*DIALOGUE[1:2], DIALOGUE[0], *DIALOGUE[1:2]]}, "'prompt[1]': a system turn can only be the first"),
        ({"prompt": [{"role": "user", "content": "a\u0000"}]}, "'prompt[0]': 'content' contains a NUL"),
        ({"prompt": {"role": "user"}}, "'prompt' must be a string, not an object"),
        ({"messages": "hi"}, "'messages' must be a string or an array of messages, not a string"),
        ({"messages": DIALOGUE[:3]}, "'messages' ends with an assistant turn"),
        ({"prompt": "a", "messages": DIALOGUE}, "has both 'prompt' and 'messages'"),
        ({"prompt": DIALOGUE, "chosen": [{"role": "assistant", "content": "a"}] * 2, "rejected": "b"},
         "'chosen' must be a string or one assistant message, [{'role': 'assistant', 'content': ...}], not 2 items"),
        ({"prompt": DIALOGUE, "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
         "'chosen' must be one assistant message, [{'role': 'assistant', 'content': ...}], not a 'user' message"),
        ({"prompt": DIALOGUE, "chosen": "a", "rejected": [{"role": "assistant", "content": 7}]},
         "'rejected' must be one assistant message"),
    ],
)  # fmt: skip
def test_each_bad_dialogue_row_is_reported_with_its_line_and_reason(
    session: Session, tmp_path: Path, row: dict[str, Any], reason: str
) -> None:
    errors = _errors(session, tmp_path, [{"prompt": "fine"}, row])
    assert len(errors) == 1 and errors[0].startswith(f"line 2: {reason}"), errors


def test_a_conversational_preference_is_a_ranking_of_its_two_answers(
    session: Session, tmp_path: Path
) -> None:
    row = {
        "prompt": DIALOGUE,
        "chosen": [{"role": "assistant", "content": "Green."}],
        "rejected": [{"role": "assistant", "content": ""}],  # saying nothing is an answer
    }
    (prompt,) = _import(session, tmp_path, [row])
    assert prompt.messages == DIALOGUE
    texts = {c.id: c.text for c in prompt.completions}
    comparison = session.scalars(select(Comparison).where(Comparison.prompt_id == prompt.id)).one()
    best = [texts[cid] for cid in comparison.ranking[0]]
    assert best == ["Green."] and sorted(texts.values()) == ["", "Green."]


def test_reimporting_dialogues_adds_nothing_and_a_lookalike_string_is_another_prompt(
    session: Session, tmp_path: Path
) -> None:
    project = make_project(session)
    rows = [{"prompt": DIALOGUE, "completions": [{"text": "Red."}]}]
    first = write_jsonl(tmp_path, rows, "a.jsonl")
    again = write_jsonl(tmp_path, [*rows, {"prompt": plain_text(DIALOGUE)}], "b.jsonl")
    one = import_file(session=session, project=project, path=first, source_name="a.jsonl")
    two = import_file(session=session, project=project, path=again, source_name="b.jsonl")
    assert (one.prompts_created, two.prompts_reused, two.prompts_created) == (1, 1, 1)
    assert two.completions_added == 0
    stored = session.scalars(select(Prompt).where(Prompt.project_id == project.id)).all()
    assert sorted(p.messages is None for p in stored) == [False, True]


def test_csv_messages_cells_hold_json(session: Session, tmp_path: Path) -> None:
    project = make_project(session)
    path = write_csv(
        tmp_path, [{"messages": DIALOGUE, "id": "c1"}, {"messages": "[1]", "id": "c2"}]
    )
    errors = validate_file(session=session, project=project, path=path)
    assert [(e.line, e.reason) for e in errors] == [
        (3, "'messages[0]' must be an object with 'role' and 'content', not a number")
    ]


HH_PROMPT = (
    "Human: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke\n\nAssistant:"
)


def test_hh_transcripts_are_read_as_turns() -> None:
    assert parse_hh(HH_PROMPT) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    assert parse_hh("\n\nHuman: only one\n\nAssistant:") == [
        {"role": "user", "content": "only one"}
    ]
    assert parse_hh("Hello\n\nHuman: x").startswith("does not start with 'Human:'")
    assert parse_hh("Human: x\n\nAssistant: done").startswith("ends with an Assistant turn")
    assert parse_hh("Human: x\n\nAssistant: \n\nHuman: y") == "turn 2 of the transcript is empty"


def test_the_hh_option_reads_prompts_and_whole_transcript_pairs(
    session: Session, tmp_path: Path
) -> None:
    rows = [
        {"prompt": HH_PROMPT, "chosen": " Why did the chicken...", "rejected": " No."},
        # hh-rlhf as shipped: no prompt, two whole transcripts sharing all but the last turn
        {"chosen": "\n\nHuman: Are you there?\n\nAssistant: Yes.",
         "rejected": "\n\nHuman: Are you there?\n\nAssistant: Go away."},
    ]  # fmt: skip
    prompts = _import(session, tmp_path, rows, transcript="hh")
    by_turns = {len(p.messages or []): p for p in prompts}
    assert by_turns[3].messages == parse_hh(HH_PROMPT)
    assert by_turns[1].messages == [{"role": "user", "content": "Are you there?"}]
    answers = sorted(c.text for c in by_turns[1].completions)
    assert answers == ["Go away.", "Yes."]
    # without the option the same prompt stays text, as it was
    (plain,) = _import(session, tmp_path, rows[:1])
    assert plain.messages is None and plain.text == HH_PROMPT


def test_bad_hh_rows_are_reported(session: Session, tmp_path: Path) -> None:
    rows = [
        {"prompt": "Tell me a joke"},
        {"prompt": "Human: x\n\nAssistant: done", "completions": [{"text": "a"}]},
        {"chosen": "Human: a\n\nAssistant: b", "rejected": "Human: c\n\nAssistant: d"},
        {"chosen": "no transcript", "rejected": "at all"},
    ]
    errors = _errors(session, tmp_path, rows, transcript="hh")
    assert errors == [
        "line 1: 'prompt' does not start with 'Human:' (an HH transcript is "
        "'Human: ...\\n\\nAssistant: ...')",
        "line 2: 'prompt' ends with an Assistant turn that has text; a prompt ends with the "
        "Human's turn",
        "line 3: no 'prompt', and 'chosen' and 'rejected' differ before their last Assistant turn; "
        "'prompt' is missing",
        "line 4: no 'prompt', and 'chosen'/'rejected' are not whole HH transcripts; "
        "'prompt' is missing",
    ]
    with pytest.raises(ImportFileError, match="unknown transcript form 'xml'"):
        _errors(session, tmp_path, rows, transcript="xml")


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_the_hh_dev_file_imports_as_dialogues(session: Session, tmp_path: Path) -> None:
    """Every row of the real file, with the CLI's option: dialogues ending with the human."""
    project = make_project(session)
    summary = import_file(
        session=session, project=project, path=SHARED_DATA / "hh_harmless_pairs_dev.jsonl",
        source_name="hh_harmless_pairs_dev.jsonl", transcript="hh",
    )  # fmt: skip
    assert summary.imported and not summary.errors
    assert summary.comparisons_added == summary.rows
    prompts = session.scalars(select(Prompt).where(Prompt.project_id == project.id)).all()
    assert all(p.messages and p.messages[-1]["role"] == "user" for p in prompts)
    assert max(len(p.messages or []) for p in prompts) >= 5
    # a turn per "\n\nHuman:"/"\n\nAssistant:" separator, the empty last Assistant dropped
    # (a few real turns quote "Human:" inside their text: kept as written)
    raw = {
        json.loads(line)["prompt"] for line in (SHARED_DATA / "hh_harmless_pairs_dev.jsonl").open()
    }
    expected = sorted(
        sum(f"\n\n{text}".count(f"\n\n{who}:") for who in ("Human", "Assistant")) - 1
        for text in raw
    )
    assert sorted(len(p.messages or []) for p in prompts) == expected
    assert session.scalar(select(Completion.id).where(Completion.prompt_id == prompts[0].id))


def test_rlhf_import_has_the_transcript_option(tmp_path: Path) -> None:
    from tests.test_agreement_pages import rlhf, rlhf_env

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = rlhf_env(url, tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    assert rlhf(env, "projects", "create", "p").returncode == 0
    path = write_jsonl(tmp_path, [{"prompt": HH_PROMPT, "chosen": "a", "rejected": "b"}])
    done = rlhf(env, "import", "p", str(path), "--transcript", "hh")
    assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("
         "'select messages from prompts').fetchone()[0])", str(tmp_path / "cli.db")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(shown.stdout) == parse_hh(HH_PROMPT)
    refused = rlhf(env, "import", "p", str(path), "--transcript", "xml")
    assert refused.returncode == 2 and "xml" in refused.stderr


async def test_the_upload_page_reads_hh_transcripts_when_asked(
    client: httpx.AsyncClient, session: Session
) -> None:
    from tests.test_imports import _as_admin, _jsonl_bytes, _url

    project = make_project(session)
    token = await _as_admin(client, session, project)
    upload = ("hh.jsonl", _jsonl_bytes([{"prompt": HH_PROMPT, "chosen": "a", "rejected": "b"}]))
    refused = await client.post(
        _url(project), data={"csrf_token": token, "transcript": "xml"}, files={"file": upload}
    )
    assert refused.status_code == 422 and "Choose how prompts are read" in refused.text
    done = await client.post(
        _url(project), data={"csrf_token": token, "transcript": "hh"}, files={"file": upload}
    )
    assert done.status_code == 200, done.text
    session.expire_all()
    prompt = session.scalars(select(Prompt).where(Prompt.project_id == project.id)).one()
    assert prompt.messages == parse_hh(HH_PROMPT)
    event = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert event is not None and event.details["transcript"] == "hh"
