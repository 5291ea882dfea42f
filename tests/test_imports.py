"""Data import (design §8): every bad-input rule with its line, the four row shapes from JSONL and
CSV, re-imports that add nothing twice, --skip-invalid, a 100,000-row file, and the upload page."""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.config import Settings
from app.imports import views as import_views
from app.imports.parse import MAX_ROW_BYTES, ImportFileError
from app.imports.service import ImportSummary, import_file, validate_file, write_rejects
from app.labeling.models import Comparison, Completion, Demonstration, Prompt, text_sha256
from app.projects.models import Project
from tests.helpers import (
    csrf_token,
    login,
    make_admin,
    make_project,
    make_user,
    rank,
    visible_text,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GOOD = '{"prompt": "A fine prompt"}'


def write_lines(directory: Path, lines: list[str | bytes], name: str = "rows.jsonl") -> Path:
    """A file of these lines as they are (bytes kept raw, so bad UTF-8 can be written)."""
    path = directory / name
    path.write_bytes(b"\n".join(ln if isinstance(ln, bytes) else ln.encode() for ln in lines))
    return path


def write_jsonl(directory: Path, rows: list[dict[str, Any]], name: str = "rows.jsonl") -> Path:
    return write_lines(directory, [json.dumps(row, ensure_ascii=False) for row in rows], name)


def write_csv(directory: Path, rows: list[dict[str, Any]], name: str = "rows.csv") -> Path:
    """The same rows as CSV: completions and metadata as JSON in their cells."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        cells = {
            key: json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
            for key, value in row.items()
        }
        writer.writerow(cells)
    path = directory / name
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return path


def errors_of(session: Session, project: Project, path: Path) -> list[tuple[int, str]]:
    return [(e.line, e.reason) for e in validate_file(session=session, project=project, path=path)]


def run_import(session: Session, project: Project, path: Path, **kwargs: Any) -> ImportSummary:
    return import_file(session=session, project=project, path=path, source_name=path.name, **kwargs)


def count(session: Session, model: Any, project: Project) -> int:
    stmt = select(func.count()).select_from(model)
    if model is not Prompt:
        stmt = stmt.join(Prompt, Prompt.id == model.prompt_id)
    return session.scalar(stmt.where(Prompt.project_id == project.id)) or 0


# --- every rule, with its line ----------------------------------------------------------------

ANSWERS_10 = json.dumps({"prompt": "p", "completions": [{"text": f"a{i}"} for i in range(10)]})

RULES: list[tuple[str | bytes, str]] = [
    ('{"prompt": "a",}', "not valid JSON: Expecting property name enclosed in double quotes"),
    ('["a", "b"]', "not a JSON object: the line holds an array"),
    ('"just text"', "not a JSON object: the line holds a string"),
    ('{"id": "x"}', "'prompt' is missing"),
    ('{"prompt": "   "}', "'prompt' is empty"),
    ('{"prompt": 42}', "'prompt' must be a string, not a number"),
    ('{"prompt": "p", "id": [1]}', "'id' must be a string or an integer, not an array"),
    ('{"prompt": "p", "id": true}', "'id' must be a string or an integer, not true/false"),
    ('{"prompt": "p", "id": "' + "i" * 201 + '"}', "'id' is longer than 200 characters"),
    ('{"prompt": "p", "submitter": 7}', "'submitter' must be a string, not a number"),
    ('{"prompt": "p", "metadata": [1]}', "'metadata' must be an object, not an array"),
    ('{"prompt": "p", "completions": "an answer"}', "'completions' must be an array of answers"),
    ('{"prompt": "p", "completions": ["an answer"]}', "'completions[0]' must be an object"),
    ('{"prompt": "p", "completions": []}', "'completions' is empty"),
    (ANSWERS_10, "'completions' has 10 answers; at most 9 are allowed"),
    (
        '{"prompt": "p", "completions": [{"text": "a"}, {"text": " \\n"}]}',
        "'completions[1].text' is empty",
    ),
    ('{"prompt": "p", "completions": [{"model": "m"}]}', "'completions[0].text' is missing"),
    (
        '{"prompt": "p", "completions": [{"text": "a", "score": 3}]}',
        "'completions[0]' has unknown field 'score' (known: text, model)",
    ),
    ('{"prompt": "p", "completion": ""}', "'completion' is empty"),
    (
        '{"prompt": "p", "chosen": "same", "rejected": "same"}',
        "'chosen' and 'rejected' are the same",
    ),
    ('{"prompt": "p", "chosen": "a"}', "'rejected' is missing (a preference needs both"),
    ('{"prompt": "p", "completion": "a", "chosen": "b", "rejected": "c"}', "has both 'completion'"),
    ('{"prompt": "p", "answer": "a", "score": 1}', "unknown fields 'answer', 'score' (known:"),
    ('{"prompt": "a\\u0000b"}', "'prompt' contains a NUL character"),
    ('{"prompt": "p", "completion": "x\\u0000"}', "'completion' contains a NUL character"),
    ('{"prompt": "p", "metadata": {"k": ["\\u0000"]}}', "'metadata' contains a NUL character"),
    ('{"prompt": "\\ud83d alone"}', "'prompt' contains an unpaired surrogate (\\ud83d)"),
    (b'{"prompt": "caf\xe9"}', "not valid UTF-8: byte 0xe9 at byte 16 of the line"),
    ('{"prompt": "p", "prompt": "q"}', "the field 'prompt' appears twice"),
    ('{"prompt": "p", "metadata": {"score": NaN}}', "NaN is not a JSON number"),
    ('{"prompt": "p", "metadata": {"score": 1e999}}', "the number 1e999 is too large"),
]


@pytest.mark.parametrize(("line", "reason"), RULES, ids=[r for _, r in RULES])
def test_each_bad_row_is_reported_with_its_line_and_reason(
    session: Session, tmp_path: Path, line: str | bytes, reason: str
) -> None:
    project = make_project(session)
    path = write_lines(tmp_path, [GOOD, "", line, GOOD])  # the blank line 2 still counts
    [(number, message)] = errors_of(session, project, path)
    assert number == 3
    assert reason in message, message


def test_a_row_over_the_size_limit_is_reported_without_being_held(
    session: Session, tmp_path: Path
) -> None:
    project = make_project(session)
    huge = '{"prompt": "' + "x" * MAX_ROW_BYTES + '"}'
    path = write_lines(tmp_path, [GOOD, huge, GOOD])
    assert errors_of(session, project, path) == [
        (2, f"row is larger than 5 MiB ({len(huge):,} bytes)")
    ]


def test_an_id_used_twice_in_the_file_is_reported_on_its_second_line(
    session: Session, tmp_path: Path
) -> None:
    project = make_project(session)
    path = write_jsonl(
        tmp_path, [{"prompt": "a", "id": "x"}, {"prompt": "b"}, {"prompt": "c", "id": "x"}]
    )
    assert errors_of(session, project, path) == [(3, "'id' 'x' is already used on line 1")]


def test_an_id_that_names_another_prompt_of_the_project_is_refused(
    session: Session, tmp_path: Path
) -> None:
    project = make_project(session)
    run_import(session, project, write_jsonl(tmp_path, [{"prompt": "Old text", "id": "x"}]))
    stored = session.scalar(select(Prompt.id).where(Prompt.external_id == "x"))
    path = write_jsonl(tmp_path, [{"prompt": "New text", "id": "x"}], name="v2.jsonl")
    assert errors_of(session, project, path) == [
        (1, f"'id' 'x' already names prompt {stored} of this project, whose text is different")
    ]
    other = make_project(session)  # ids are per project
    assert errors_of(session, other, path) == []


def test_every_problem_of_a_row_is_listed_at_once(session: Session, tmp_path: Path) -> None:
    project = make_project(session)
    path = write_lines(tmp_path, ['{"prompt": "", "id": 1.5, "completions": [{"text": ""}]}'])
    [(_, reason)] = errors_of(session, project, path)
    assert reason == (
        "'prompt' is empty; 'id' must be a string or an integer, not a number; "
        "'completions[0].text' is empty"
    )


def test_nothing_is_written_when_one_row_is_bad(session: Session, tmp_path: Path) -> None:
    project = make_project(session)
    path = write_jsonl(
        tmp_path,
        [{"prompt": "a", "completions": [{"text": "x"}]}, {"prompt": "b", "chosen": "y"}],
    )
    summary = run_import(session, project, path)
    assert not summary.imported
    assert [(e.line, e.reason) for e in summary.errors] == [
        (2, "'rejected' is missing (a preference needs both 'chosen' and 'rejected')")
    ]
    assert count(session, Prompt, project) == 0
    assert count(session, Completion, project) == 0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rows.txt", b"{}", "rows.txt: unsupported file type; use .jsonl, .json or .csv"),
        ("rows.jsonl", b"\n\n  \n", "rows.jsonl has no rows to import"),
        ("rows.json", b'[{"prompt": "a"}]', "rows.json holds a JSON array; write one JSON object"),
        ("rows.jsonl.gz", b"not gzip at all", "rows.jsonl.gz is not a readable gzip file"),
        (
            "rows.csv",
            b"prompt,answer\na,b\n",
            "rows.csv, line 1 (the header): unknown column 'answer'",
        ),
        ("rows.csv", b"id,submitter\na,b\n", "rows.csv, line 1 (the header): there is no 'prompt'"),
        ("rows.csv", b"prompt,id,prompt\na,b,c\n", "line 1 (the header): 'prompt' appears twice"),
    ],
)
def test_files_that_cannot_be_read_at_all(
    session: Session, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    project = make_project(session)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImportFileError) as caught:
        run_import(session, project, path)
    assert message in str(caught.value), str(caught.value)


def test_a_missing_file_is_one_clear_error(session: Session, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"no such file: .*nope\.jsonl"):
        run_import(session, make_project(session), tmp_path / "nope.jsonl")


def test_csv_rows_are_checked_with_the_line_each_starts_on(
    session: Session, tmp_path: Path
) -> None:
    project = make_project(session)
    path = write_lines(
        tmp_path,
        [
            b"prompt,completions,metadata",
            b'"a prompt over',  # a quoted cell that spans lines 2 and 3
            b'two lines",,',
            b'b,"[{""text"": ""x""}]",{not json}',
            b"c,,,",
            b"caf\xe9,,",
            b'"",,{"a": 1}',
            b"d,,",
        ],
        name="rows.csv",
    )
    assert errors_of(session, project, path) == [
        (
            4,
            "'metadata' is not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        ),
        (5, "has 4 cells but the header has 3 columns"),
        (6, "not valid UTF-8: byte 0xe9 at byte 4 of the line"),
        (7, "'prompt' is missing"),
    ]


# --- the four shapes --------------------------------------------------------------------------

FOUR_SHAPES: list[dict[str, Any]] = [
    {"prompt": "Plain prompt", "id": "p1", "submitter": "alice", "metadata": {"topic": "x"}},
    {
        "prompt": "Rank these",
        "id": "p2",
        "completions": [{"text": "Answer A", "model": "sft-1"}, {"text": "Answer B"}],
    },
    {"prompt": "Write one", "completion": "A demonstration", "submitter": "bob"},
    {"prompt": "Which is better?", "chosen": "Good answer", "rejected": "Bad answer"},
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "jsonl.gz"])
def test_the_four_row_shapes_are_stored_as_designed(
    session: Session, tmp_path: Path, fmt: str
) -> None:
    project = make_project(session)
    if fmt == "csv":
        path = write_csv(tmp_path, FOUR_SHAPES, name="shapes.csv")
    else:
        path = write_jsonl(tmp_path, FOUR_SHAPES, name="shapes.jsonl")
        if fmt == "jsonl.gz":
            zipped = tmp_path / "shapes.jsonl.gz"
            zipped.write_bytes(gzip.compress(path.read_bytes()))
            path = zipped
    summary = run_import(session, project, path)
    assert summary.imported and not summary.errors
    assert {kind.value: n for kind, n in summary.kinds.items()} == {
        "prompt": 1,
        "prompt with completions": 1,
        "demonstration": 1,
        "preference": 1,
    }
    assert (summary.prompts_created, summary.completions_added) == (4, 4)
    assert (summary.demonstrations_added, summary.comparisons_added) == (1, 1)

    prompts = {
        p.text: p for p in session.scalars(select(Prompt).where(Prompt.project_id == project.id))
    }
    plain = prompts["Plain prompt"]
    assert (plain.source.value, plain.external_id, plain.submitter_external) == (
        "import",
        "p1",
        "alice",
    )
    assert plain.meta == {"topic": "x"}
    assert prompts["Which is better?"].submitter_external == path.name  # the default submitter
    assert prompts["Which is better?"].meta == {}

    ranked = prompts["Rank these"]
    answers = {
        c.text: c
        for c in session.scalars(select(Completion).where(Completion.prompt_id == ranked.id))
    }
    assert answers["Answer A"].origin == "import:sft-1"
    assert answers["Answer B"].origin == f"import:{path.name}"
    assert answers["Answer A"].text_sha256 == text_sha256("Answer A")

    demo = session.scalars(
        select(Demonstration).where(Demonstration.prompt_id == prompts["Write one"].id)
    ).one()
    assert (demo.text, demo.author_external, demo.author_id) == (
        "A demonstration",
        f"import:{path.name}",
        None,
    )
    assert prompts["Write one"].submitter_external == "bob"

    pref = prompts["Which is better?"]
    comparison = session.scalars(select(Comparison).where(Comparison.prompt_id == pref.id)).one()
    pair = {
        c.text: c.id
        for c in session.scalars(select(Completion).where(Completion.prompt_id == pref.id))
    }
    chosen, rejected = pair["Good answer"], pair["Bad answer"]
    assert comparison.labeler_external == f"import:{path.name}"
    assert comparison.labeler_id is None
    assert comparison.displayed_completion_ids == [chosen, rejected]
    assert comparison.ranking == [[chosen], [rejected]]
    assert (comparison.revision, comparison.is_latest) == (1, True)


def test_integer_ids_and_nulls_are_read_as_writers_produce_them(
    session: Session, tmp_path: Path
) -> None:
    # pandas and `datasets` write numeric ids and null for missing values.
    project = make_project(session)
    path = write_jsonl(
        tmp_path, [{"prompt": "p", "id": 7, "submitter": None, "chosen": None, "rejected": None}]
    )
    assert run_import(session, project, path).imported
    prompt = session.scalars(select(Prompt).where(Prompt.project_id == project.id)).one()
    assert (prompt.external_id, prompt.submitter_external) == ("7", path.name)


def test_an_empty_preferred_answer_is_a_real_answer(session: Session, tmp_path: Path) -> None:
    # Harmlessness data prefers saying nothing to saying something harmful.
    project = make_project(session)
    path = write_jsonl(
        tmp_path, [{"prompt": "How do I pick a lock?", "chosen": "", "rejected": "Sure: ..."}]
    )
    summary = run_import(session, project, path)
    assert summary.comparisons_added == 1
    assert "" in session.scalars(select(Completion.text)).all()


# --- importing again --------------------------------------------------------------------------


def test_importing_the_same_file_again_adds_nothing(session: Session, tmp_path: Path) -> None:
    project = make_project(session)
    rows = [*FOUR_SHAPES, {"prompt": "No id", "completions": [{"text": "x"}, {"text": "y"}]}]
    path = write_jsonl(tmp_path, rows)
    run_import(session, project, path)
    before = [count(session, m, project) for m in (Prompt, Completion, Demonstration, Comparison)]
    again = run_import(session, project, path)
    assert [
        count(session, m, project) for m in (Prompt, Completion, Demonstration, Comparison)
    ] == before
    assert (again.prompts_created, again.prompts_reused) == (0, 5)
    assert (again.completions_added, again.completions_duplicate) == (0, 6)
    assert (again.demonstrations_added, again.demonstrations_duplicate) == (0, 1)
    assert (again.comparisons_added, again.comparisons_duplicate) == (0, 1)


def test_a_known_prompt_gets_only_its_new_answers(session: Session, tmp_path: Path) -> None:
    project = make_project(session)
    first = [{"prompt": "Q", "id": "q", "completions": [{"text": "a"}, {"text": "b"}]}]
    run_import(session, project, write_jsonl(tmp_path, first, name="round1.jsonl"))
    second = [
        {"prompt": "Q", "id": "q", "completions": [{"text": "b"}, {"text": "c", "model": "m2"}]}
    ]
    summary = run_import(session, project, write_jsonl(tmp_path, second, name="round2.jsonl"))
    assert (summary.prompts_reused, summary.completions_added, summary.completions_duplicate) == (
        1,
        1,
        1,
    )
    prompt = session.scalars(select(Prompt).where(Prompt.project_id == project.id)).one()
    assert [c.text for c in prompt.completions] == ["a", "b", "c"]


def test_without_an_id_a_prompt_is_found_by_its_text(session: Session, tmp_path: Path) -> None:
    project = make_project(session)
    path = write_jsonl(
        tmp_path,
        [
            {"prompt": "Same", "completions": [{"text": "a"}]},
            {"prompt": "Same", "completion": "a demonstration"},  # same file, same prompt
        ],
    )
    summary = run_import(session, project, path)
    assert (summary.prompts_created, summary.prompts_reused) == (1, 1)
    later = write_jsonl(
        tmp_path, [{"prompt": "Same", "completions": [{"text": "b"}]}], name="b.jsonl"
    )
    assert run_import(session, project, later).prompts_reused == 1
    assert count(session, Prompt, project) == 1
    assert count(session, Completion, project) == 2


def test_prompts_are_found_again_across_write_batches(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.imports import service

    monkeypatch.setattr(service, "BATCH_ROWS", 2)
    project = make_project(session)
    rows = [{"prompt": f"P{i % 3}", "completions": [{"text": f"A{i}"}]} for i in range(7)]
    summary = run_import(session, project, write_jsonl(tmp_path, rows))
    assert (summary.prompts_created, summary.prompts_reused, summary.completions_added) == (3, 4, 7)
    assert count(session, Prompt, project) == 3


def test_equal_answers_within_a_row_are_stored_once(session: Session, tmp_path: Path) -> None:
    # Two models may well give the same answer ("The capital of Australia is Canberra.").
    project = make_project(session)
    row = {
        "prompt": "Capital?",
        "completions": [{"text": "Canberra.", "model": "a"}, {"text": "Canberra.", "model": "b"}],
    }
    summary = run_import(session, project, write_jsonl(tmp_path, [row]))
    assert (summary.completions_added, summary.completions_duplicate) == (1, 1)
    assert session.scalars(select(Completion.origin)).all() == ["import:a"]


def test_two_different_pairs_for_one_prompt_are_two_rankings(
    session: Session, tmp_path: Path
) -> None:
    # A comparison is one per prompt and labeler: the second pair gets its own external labeler.
    project = make_project(session)
    rows = [
        {"prompt": "Dialogue", "chosen": "A", "rejected": "B"},
        {"prompt": "Dialogue", "chosen": "C", "rejected": "D"},
        {"prompt": "Dialogue", "chosen": "A", "rejected": "B"},  # the same judgement again
    ]
    path = write_jsonl(tmp_path, rows, name="hh.jsonl")
    summary = run_import(session, project, path)
    assert (summary.comparisons_added, summary.comparisons_duplicate) == (2, 1)
    labelers = session.scalars(select(Comparison.labeler_external).order_by(Comparison.id)).all()
    assert labelers == ["import:hh.jsonl", "import:hh.jsonl#2"]
    assert run_import(session, project, path).comparisons_added == 0


PAIRS = [
    {"prompt": "Dialogue", "chosen": "A", "rejected": "B"},
    {"prompt": "Dialogue", "chosen": "C", "rejected": "D"},  # ranked by import:pairs.jsonl#2
    {"prompt": "Capital?", "id": "c1", "chosen": "Canberra.", "rejected": "Sydney."},
]


def test_the_same_preferences_under_another_file_name_add_nothing(
    session: Session, tmp_path: Path
) -> None:
    # Design §10: a preference is matched by its prompt and answer texts, whoever imported it.
    project = make_project(session)
    first = run_import(session, project, write_jsonl(tmp_path, PAIRS, name="pairs.jsonl"))
    assert (first.comparisons_added, first.comparisons_in_other_files) == (3, 0)
    before = [count(session, m, project) for m in (Prompt, Completion, Comparison)]
    copy = run_import(session, project, write_jsonl(tmp_path, PAIRS, name="pairs_copy.jsonl"))
    assert [count(session, m, project) for m in (Prompt, Completion, Comparison)] == before
    assert (copy.comparisons_added, copy.comparisons_duplicate) == (0, 3)
    assert (copy.comparisons_in_other_files, copy.other_files) == (3, {"pairs.jsonl"})
    assert copy.counts()["comparisons_in_other_files"] == 3
    # The same file again is a duplicate of its own rows, not of another file's.
    again = run_import(session, project, write_jsonl(tmp_path, PAIRS, name="pairs.jsonl"))
    assert (again.comparisons_added, again.comparisons_duplicate) == (0, 3)
    assert (again.comparisons_in_other_files, again.other_files) == (0, set())


def test_the_same_demonstrations_under_another_file_name_add_nothing(
    session: Session, tmp_path: Path
) -> None:
    rows = [{"prompt": "Boil an egg?", "completion": "Nine minutes in boiling water."},
            {"prompt": "Capital?", "completion": "Canberra."}]  # fmt: skip
    project = make_project(session)
    first = run_import(session, project, write_jsonl(tmp_path, rows, name="demos.jsonl"))
    assert first.demonstrations_added == 2
    copy = run_import(session, project, write_jsonl(tmp_path, rows, name="demos (1).jsonl"))
    assert (copy.demonstrations_added, copy.demonstrations_duplicate) == (0, 2)
    assert count(session, Demonstration, project) == 2
    # A new answer to the same prompt is a new demonstration, whatever the file.
    more = [{"prompt": "Capital?", "completion": "Canberra, since 1913."}]
    assert (
        run_import(
            session, project, write_jsonl(tmp_path, more, name="more.jsonl")
        ).demonstrations_added
        == 1
    )


def test_the_other_order_or_other_answers_are_a_new_preference(
    session: Session, tmp_path: Path
) -> None:
    project = make_project(session)
    run_import(session, project, write_jsonl(tmp_path, PAIRS[:1], name="pairs.jsonl"))
    prompt = session.scalars(select(Prompt).where(Prompt.project_id == project.id)).one()
    rank(session, prompt, make_user(session), [1, 0])  # a person: "B" above "A"
    rows = [
        {"prompt": "Dialogue", "chosen": "B", "rejected": "A"},  # as the person, not an import
        {"prompt": "Dialogue", "chosen": "A", "rejected": "E"},  # another answer
        {"prompt": "Dialogue", "chosen": "A", "rejected": "B"},  # as pairs.jsonl has it
    ]
    summary = run_import(session, project, write_jsonl(tmp_path, rows, name="more.jsonl"))
    assert (summary.comparisons_added, summary.comparisons_in_other_files) == (2, 1)
    labelers = session.scalars(
        select(Comparison.labeler_external)
        .where(Comparison.labeler_id.is_(None))
        .order_by(Comparison.id)
    ).all()
    assert labelers == ["import:pairs.jsonl", "import:more.jsonl", "import:more.jsonl#2"]


# --- skipping invalid rows --------------------------------------------------------------------


def test_skip_invalid_writes_the_valid_rows_and_returns_the_rejects(
    session: Session, tmp_path: Path
) -> None:
    project = make_project(session)
    path = write_lines(
        tmp_path,
        ['{"prompt": "one"}', '{"prompt": ""}', b'{"prompt": "\xff"}', '{"prompt": "four"}'],
    )
    summary = run_import(session, project, path, skip_invalid=True)
    assert summary.imported
    assert (summary.rows, summary.rows_imported) == (4, 2)
    assert [e.line for e in summary.errors] == [2, 3]
    assert sorted(session.scalars(select(Prompt.text).where(Prompt.project_id == project.id))) == [
        "four",
        "one",
    ]

    out = tmp_path / "rejects.jsonl"
    assert write_rejects(path=path, errors=summary.errors, out=out) == 2
    rejects = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rejects == [
        {"line": 2, "reason": "'prompt' is empty", "row": '{"prompt": ""}'},
        {
            "line": 3,
            "reason": "not valid UTF-8: byte 0xff at byte 13 of the line",
            "row": '{"prompt": "\\xff"}',
        },
    ]


# --- scale ------------------------------------------------------------------------------------


def test_a_100k_row_file_with_one_bad_row_is_refused_at_that_line(
    session: Session, tmp_path: Path
) -> None:
    project = make_project(session)
    path = tmp_path / "big.jsonl"
    bad_line = 73_211
    with path.open("w", encoding="utf-8") as out:
        for n in range(1, 100_001):
            if n == bad_line:
                out.write('{"id": "r73211", "prompt": "x", "completions": [{"text": ""}]}\n')
                continue
            answers = [{"text": f"Answer {k} to prompt {n}.", "model": f"m{k}"} for k in range(4)]
            out.write(
                json.dumps({"id": f"r{n}", "prompt": f"Prompt {n}?", "completions": answers}) + "\n"
            )
    started = time.perf_counter()
    summary = run_import(session, project, path)
    elapsed = time.perf_counter() - started
    assert [(e.line, e.reason) for e in summary.errors] == [
        (bad_line, "'completions[0].text' is empty")
    ]
    assert not summary.imported
    assert summary.rows == 100_000
    assert count(session, Prompt, project) == 0
    assert elapsed < 30, f"validating 100,000 rows took {elapsed:.1f} s"


# --- text survives exactly --------------------------------------------------------------------

TRICKY = [
    "Emoji 👩🏽‍💻🚀 and a flag 🇺🇦",
    "עברית: שלום עולם, and العربية: مرحبا بالعالم",
    "Combining marks: e\u0301 n\u0303 a\u030a (not normalised)",
    'Line\r\nbreaks\u2028and\ttabs, "quotes" and \\backslashes\\',
    "<script>alert(1)</script> & stays text",
]
LONG_ANSWER = ("A 1 MB answer with ünïcödé ✓. " * 40_000)[: 1024 * 1024]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_unicode_and_a_1mb_answer_round_trip_exactly(
    session: Session, tmp_path: Path, fmt: str
) -> None:
    project = make_project(session)
    rows = [
        {
            "prompt": text,
            "id": f"t{i}",
            "completions": [{"text": text + " (answer)"}, {"text": LONG_ANSWER}],
        }
        for i, text in enumerate(TRICKY)
    ]
    path = write_csv(tmp_path, rows) if fmt == "csv" else write_jsonl(tmp_path, rows)
    assert run_import(session, project, path).imported
    session.expire_all()
    stored = {
        p.external_id: p
        for p in session.scalars(select(Prompt).where(Prompt.project_id == project.id))
    }
    for i, text in enumerate(TRICKY):
        prompt = stored[f"t{i}"]
        assert prompt.text == text
        assert [c.text for c in prompt.completions] == [text + " (answer)", LONG_ANSWER]


# --- real data --------------------------------------------------------------------------------


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is not here (the shared data folder is not part of a clone)")
    return path


def test_the_shared_alpaca_eval_and_hh_files_import_with_the_expected_counts(
    session: Session, tmp_path: Path
) -> None:
    project = make_project(session)
    alpaca = _shared("alpaca_eval_k4_dev.jsonl")
    rows = [json.loads(line) for line in alpaca.read_text(encoding="utf-8").splitlines()]
    distinct = sum(len({c["text"] for c in row["completions"]}) for row in rows)
    summary = run_import(session, project, alpaca)
    assert summary.imported and not summary.errors
    assert summary.prompts_created == len(rows) == 481
    assert summary.completions_added == distinct
    assert summary.completions_duplicate == 4 * len(rows) - distinct

    hh = _shared("hh_harmless_pairs_dev.jsonl")
    pairs = [json.loads(line) for line in hh.read_text(encoding="utf-8").splitlines()]
    summary = run_import(session, project, hh)
    assert summary.imported and not summary.errors
    assert summary.rows == len(pairs) == 1393
    assert summary.prompts_created == len({p["prompt"] for p in pairs})
    assert summary.comparisons_added == len(
        {(p["prompt"], p["chosen"], p["rejected"]) for p in pairs}
    )
    assert summary.completions_added == len(
        {(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")}
    )
    assert count(session, Comparison, project) == summary.comparisons_added
    assert run_import(session, project, hh).comparisons_added == 0
    renamed = tmp_path / "hh_copy.jsonl"
    renamed.write_bytes(hh.read_bytes())
    copy = run_import(session, project, renamed)
    assert (copy.comparisons_added, copy.comparisons_in_other_files) == (0, len(pairs))
    assert count(session, Comparison, project) == summary.comparisons_added


# --- the upload page --------------------------------------------------------------------------


def page_text(response: httpx.Response) -> str:
    return html.unescape(visible_text(response.text))


def _url(project: Project) -> str:
    return f"/admin/projects/{project.id}/import"


async def _as_admin(client: httpx.AsyncClient, session: Session, project: Project) -> str:
    await login(client, make_admin(session))
    return await csrf_token(client, _url(project))


def _jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


async def test_the_form_explains_the_row_shapes(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session, name="Helpful")
    await _as_admin(client, session, project)
    page = (await client.get(_url(project))).text
    assert 'enctype="multipart/form-data"' in page and 'name="skip_invalid"' in page
    assert page.count('<pre class="code">') == 5 and 'name="transcript"' in page
    shapes = ('"completions": [{"text": "7"', '"completion": "Bonjour !"', '"chosen": ', '"role": ')
    for shape in shapes:
        assert shape.replace('"', "&#34;") in page


async def test_an_upload_is_imported_and_audited(
    client: httpx.AsyncClient, session: Session, settings: Settings
) -> None:
    project = make_project(session)
    token = await _as_admin(client, session, project)
    upload = ("C:\\Users\\me\\shapes.jsonl", _jsonl_bytes(FOUR_SHAPES), "application/jsonl")
    r = await client.post(_url(project), data={"csrf_token": token}, files={"file": upload})
    assert r.status_code == 200, r.text
    page = page_text(r)
    assert "Imported 4 of 4 rows" in page
    assert "4 prompts created" in page and "1 preferences added" in page
    assert count(session, Prompt, project) == 4
    # The name the admin knows, not the client's path or the temporary file's.
    assert session.scalar(select(Comparison.labeler_external)) == "import:shapes.jsonl"
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "project.import")).one()
    assert (event.target_id, event.details["file"], event.details["prompts_created"]) == (
        project.id,
        "shapes.jsonl",
        4,
    )
    assert list((settings.data_dir / "uploads").iterdir()) == []  # the upload is not kept


async def test_an_upload_of_a_renamed_copy_says_its_preferences_are_already_there(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    token = await _as_admin(client, session, project)
    for name in ("pairs.jsonl", "pairs (1).jsonl"):
        upload = (name, _jsonl_bytes(PAIRS), "application/jsonl")
        r = await client.post(_url(project), data={"csrf_token": token}, files={"file": upload})
        assert r.status_code == 200, r.text
    page = page_text(r)
    assert "0 preferences added" in page and "3 preferences already there" in page
    assert "3 of them brought by pairs.jsonl" in page
    assert count(session, Comparison, project) == 3
    event = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "project.import")
        .order_by(AuditEvent.id.desc())
    ).first()
    assert event is not None and event.details["comparisons_in_other_files"] == 3


async def test_an_upload_with_bad_rows_lists_them_and_writes_nothing(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    token = await _as_admin(client, session, project)
    content = (
        b'{"prompt": "ok"}\n{"prompt": "ok", "chosen": "x", "rejected": "x"}\n'
        + b"not json\n" * 250
    )
    r = await client.post(
        _url(project), data={"csrf_token": token}, files={"file": ("bad.jsonl", content)}
    )
    assert r.status_code == 422
    page = page_text(r)
    assert "Nothing was imported" in page and "bad.jsonl has 251 invalid rows" in page
    assert "2 'chosen' and 'rejected' are the same text" in page
    assert "The first 200 of 251 are listed" in page
    assert r.text.count('<tr><td class="num">') == 200
    assert count(session, Prompt, project) == 0
    assert (
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "project.import")
        )
        == 0
    )


async def test_an_upload_can_skip_the_invalid_rows(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    token = await _as_admin(client, session, project)
    content = b'{"prompt": "kept"}\n{"prompt": ""}\n'
    r = await client.post(
        _url(project),
        data={"csrf_token": token, "skip_invalid": "true"},
        files={"file": ("mixed.jsonl", content)},
    )
    assert r.status_code == 200
    page = page_text(r)
    assert "Imported 1 of 2 rows; 1 invalid row skipped" in page
    assert "Skipped rows 1 Line Reason 2 'prompt' is empty" in page
    assert session.scalars(select(Prompt.text).where(Prompt.project_id == project.id)).all() == [
        "kept"
    ]


async def test_unicode_and_a_1mb_answer_survive_the_upload(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    token = await _as_admin(client, session, project)
    rows = [
        {"prompt": text, "completions": [{"text": LONG_ANSWER}, {"text": text}]} for text in TRICKY
    ]
    r = await client.post(
        _url(project), data={"csrf_token": token}, files={"file": ("u.jsonl", _jsonl_bytes(rows))}
    )
    assert r.status_code == 200, page_text(r)
    session.expire_all()
    for text in TRICKY:
        prompt = session.scalars(
            select(Prompt).where(Prompt.project_id == project.id, Prompt.text == text)
        ).one()
        assert [c.text for c in prompt.completions] == [LONG_ANSWER, text]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"file": ("notes.txt", b"hello")}, "notes.txt: unsupported file type"),
        ({}, "Choose a file to import."),
        ({"file": ("empty.csv", b"prompt\n")}, "empty.csv has no rows to import."),
        (
            {"file": ("x.csv", b"prompt,bogus\na,b\n")},
            "x.csv, line 1 (the header): unknown column 'bogus'",
        ),
    ],
)
async def test_unusable_uploads_come_back_to_the_form_with_a_message(
    client: httpx.AsyncClient, session: Session, files: dict[str, Any], message: str
) -> None:
    project = make_project(session)
    token = await _as_admin(client, session, project)
    r = await client.post(_url(project), data={"csrf_token": token}, files=files)
    assert r.status_code == 422
    assert message in page_text(r)
    assert 'type="file"' in r.text


async def test_an_upload_over_the_limit_is_refused(
    client: httpx.AsyncClient, session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(session)
    token = await _as_admin(client, session, project)
    monkeypatch.setattr(settings, "max_upload_bytes", 1000)
    monkeypatch.setattr(import_views, "_CHUNK", 100)
    content = _jsonl_bytes([{"prompt": f"prompt {i}"} for i in range(100)])
    r = await client.post(
        _url(project), data={"csrf_token": token}, files={"file": ("big.jsonl", content)}
    )
    assert r.status_code == 413
    assert "The file is larger than" in r.text and "rlhf import" in r.text
    assert count(session, Prompt, project) == 0
    assert list((settings.data_dir / "uploads").iterdir()) == []


async def test_only_admins_reach_the_import_page(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    await login(client, make_user(session))
    token = await csrf_token(client, "/home")
    assert (await client.get(_url(project))).status_code == 403
    r = await client.post(
        _url(project), data={"csrf_token": token}, files={"file": ("a.jsonl", b'{"prompt": "x"}')}
    )
    assert r.status_code == 403
    assert count(session, Prompt, project) == 0


async def test_an_upload_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, session: Session
) -> None:
    project = make_project(session)
    await _as_admin(client, session, project)
    r = await client.post(_url(project), files={"file": ("a.jsonl", b'{"prompt": "x"}')})
    assert r.status_code == 403 and "Form expired" in r.text
    assert count(session, Prompt, project) == 0


async def test_an_unknown_project_is_404(client: httpx.AsyncClient, session: Session) -> None:
    await login(client, make_admin(session))
    assert (await client.get("/admin/projects/999999/import")).status_code == 404
