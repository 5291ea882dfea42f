"""`rlhf import` as a user runs it: real processes on a fresh SQLite file each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.processes import rlhf, rlhf_env

ROWS = [
    {"prompt": "Name a prime.", "id": "p1", "completions": [{"text": "7"}, {"text": "9"}]},
    {"prompt": "Say hi in French.", "completion": "Bonjour !"},
    {"prompt": "Is the sky green?", "chosen": "No.", "rejected": "Yes."},
]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = rlhf_env(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "data")
    assert rlhf(env, "db", "upgrade").returncode == 0
    assert rlhf(env, "projects", "create", "Imports").returncode == 0
    return env


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def counts(env: dict[str, str]) -> dict[str, int]:
    shown = rlhf(env, "projects", "show", "Imports", "--json")
    return json.loads(shown.stdout)["counts"]


def test_a_file_is_imported_and_a_second_run_adds_nothing(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = write(tmp_path / "rows.jsonl", [json.dumps(row) for row in ROWS])
    result = rlhf(cli_env, "import", "Imports", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "imported 3 of 3 rows from rows.jsonl into project 'Imports' (id 1)"
    assert "  prompts created            3" in lines
    assert "  completions added          4" in lines
    assert counts(cli_env) | {"rankable_prompts": 0, "rankings_wanted": 0, "rankings_done": 0} == {
        "prompts": 3,
        "completions": 4,
        "demonstrations": 1,
        "comparisons": 1,
        "rankable_prompts": 0,
        "rankings_wanted": 0,
        "rankings_done": 0,
    }
    again = rlhf(cli_env, "import", "1", str(path))  # the project by id this time
    assert again.returncode == 0, again.stderr
    assert "  prompts reused             3" in again.stdout.splitlines()
    assert "  completions added          0" in again.stdout.splitlines()
    assert counts(cli_env)["completions"] == 4


def test_a_renamed_copy_adds_no_preference_and_says_so(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    lines = [json.dumps(row) for row in ROWS]
    assert (
        rlhf(cli_env, "import", "Imports", str(write(tmp_path / "a.jsonl", lines))).returncode == 0
    )
    copy = rlhf(cli_env, "import", "Imports", str(write(tmp_path / "a_copy.jsonl", lines)))
    assert copy.returncode == 0, copy.stderr
    shown = copy.stdout.splitlines()
    assert "  comparisons added          0" in shown
    assert "  comparisons duplicate      1" in shown
    assert "  comparisons in other files 1" in shown
    assert counts(cli_env)["comparisons"] == 1


def test_invalid_rows_are_listed_and_nothing_is_imported(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    lines = [json.dumps(ROWS[0]), '{"prompt": ""}', *['{"prompt": "x", "oops": 1}'] * 24]
    path = write(tmp_path / "bad.jsonl", lines)
    result = rlhf(cli_env, "import", "Imports", str(path))
    assert result.returncode == 2
    stderr = result.stderr.splitlines()
    assert stderr[0] == "line 2: 'prompt' is empty"
    assert stderr[1].startswith("line 3: unknown field 'oops' (known: prompt, id, submitter,")
    assert len([line for line in stderr if line.startswith("line ")]) == 20
    assert stderr[-2] == "... and 5 more"
    assert stderr[-1] == (
        f"error: {path} has 25 invalid rows; nothing was imported "
        "(use --skip-invalid to import the valid rows)"
    )
    assert "Traceback" not in result.stderr
    assert counts(cli_env)["prompts"] == 0


def test_skip_invalid_imports_the_rest_and_writes_the_rejects(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = write(
        tmp_path / "mixed.csv",
        ["prompt,completion,chosen,rejected", "Write a haiku,Old pond...,,", ",,,x", "Pick,,A,A"],
    )
    result = rlhf(cli_env, "import", "Imports", str(path), "--skip-invalid")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported 1 of 3 rows from mixed.csv")
    assert f"2 rejected rows written to {tmp_path / 'mixed.rejects.jsonl'}" in result.stderr
    rejects = [json.loads(line) for line in (tmp_path / "mixed.rejects.jsonl").open()]
    assert rejects == [
        {
            "line": 3,
            "reason": "'prompt' is missing; "
            "'chosen' is missing (a preference needs both 'chosen' and 'rejected')",
            "row": ",,,x",
        },
        {"line": 4, "reason": "'chosen' and 'rejected' are the same text", "row": "Pick,,A,A"},
    ]
    assert counts(cli_env)["demonstrations"] == 1

    elsewhere = tmp_path / "out" / "rejects.jsonl"
    elsewhere.parent.mkdir()
    again = rlhf(
        cli_env, "import", "Imports", str(path), "--skip-invalid", "--rejects", str(elsewhere)
    )
    assert again.returncode == 0 and len(elsewhere.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Nope", "{dir}/rows.jsonl"], "error: no project 'Nope'"),
        (["Imports", "{dir}/missing.jsonl"], "error: no such file: {dir}/missing.jsonl"),
        (
            ["Imports", "{dir}/rows.txt"],
            "error: rows.txt: unsupported file type; use .jsonl, .json or .csv, "
            "optionally gzipped (.gz)",
        ),
        (["Imports", "{dir}/empty.jsonl"], "error: empty.jsonl has no rows to import"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli_env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    write(tmp_path / "rows.jsonl", [json.dumps(ROWS[0])])
    write(tmp_path / "rows.txt", [json.dumps(ROWS[0])])
    write(tmp_path / "empty.jsonl", [""])
    result = rlhf(cli_env, "import", *[a.format(dir=tmp_path) for a in args])
    assert result.returncode == 2
    assert result.stderr.strip() == message.format(dir=tmp_path)


def test_import_has_help(cli_env: dict[str, str]) -> None:
    result = rlhf(cli_env, "import", "--help")
    assert result.returncode == 0
    assert "--skip-invalid" in result.stdout and "--rejects" in result.stdout
