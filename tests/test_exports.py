"""Exports: the rows of each kind, splits, options, files written atomically and byte for
byte the same twice, the manifest and the card, odd text, and the job."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import User
from app.config import Settings
from app.exports.models import Export
from app.exports.options import ExportError, ExportOptions
from app.exports.rows import prompt_agreement, split_of
from app.exports.service import write_export
from app.jobs import kinds
from app.jobs.models import JobStatus
from app.jobs.service import create_job
from app.labeling.models import Completion, Demonstration, GoldRanking, Prompt, text_sha256
from app.projects.models import Project
from tests.helpers import answers, make_admin, make_project, make_prompt, make_user, rank
from workers.runner import run_job


def _jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        return [json.loads(line) for line in f]


def _export(session: Session, project: Project, folder: Path, **options: Any) -> Path:
    opts = ExportOptions.from_dict({"kind": "pairwise", **options})
    return write_export(session=session, project=project, options=opts, folder=folder).directory


@pytest.fixture
def ranked(session: Session) -> tuple[Project, Prompt, User, User]:
    project = make_project(session)
    prompt = make_prompt(session, project, text="Which is best?")
    ann, bob = make_user(session), make_user(session)
    rank(session, prompt, ann, [0, 1, 1, 2])  # a > b = c > d
    rank(session, prompt, bob, [1, 0, 2, 3])  # b > a > c > d
    return project, prompt, ann, bob


def test_pairwise_rows(session: Session, ranked: Any, tmp_path: Path) -> None:
    project, prompt, ann, bob = ranked
    a, b, c, d = answers(prompt)
    folder = _export(session, project, tmp_path / "out", validation_ratio=0)
    rows = _jsonl(folder / "train.jsonl")
    assert _jsonl(folder / "validation.jsonl") == []
    # ann: a>b, a>c (margin 1), a>d (2), b>d, c>d (1); the tie b = c gives no row.
    anns = [(r["chosen_id"], r["rejected_id"], r["margin"]) for r in rows if r["labeler"] == f"user:{ann.id}"]  # fmt: skip
    assert anns == [(a, b, 1), (a, c, 1), (a, d, 2), (b, d, 1), (c, d, 1)]
    assert len([r for r in rows if r["labeler"] == f"user:{bob.id}"]) == 6
    first = rows[0]
    assert first["prompt"] == "Which is best?" and first["chosen"] == "Answer 0 to Which is best?"
    # Agreement: ab disagree; ac, ad, bd, cd agree; bc tied by ann (left out).
    assert first["agreement"] == pytest.approx(4 / 5)
    assert {r["prompt_id"] for r in rows} == {prompt.id}


def test_consensus_only_and_min_agreement(session: Session, ranked: Any, tmp_path: Path) -> None:
    project, prompt, _ann, _bob = ranked
    folder = _export(session, project, tmp_path / "c", consensus_only=True, validation_ratio=0)
    rows = _jsonl(folder / "train.jsonl")
    assert {r["labeler"] for r in rows} == {"consensus"}
    a, b, c, d = answers(prompt)
    # Mean places (0..1): a = (0 + 1/3)/2, b = (1/2 + 0)/2, c = (1/2 + 2/3)/2, d = 1.
    pairs = [(r["chosen_id"], r["rejected_id"], r["margin"]) for r in rows]
    assert pairs == [(a, b, 1), (a, c, 2), (a, d, 3), (b, c, 1), (b, d, 2), (c, d, 1)]
    none = _export(session, project, tmp_path / "m", min_agreement=0.9)
    manifest = json.loads((none / "manifest.json").read_text())
    assert manifest["counts"]["total"] == 0
    assert "No rows matched these options" in (none / "README.md").read_text()
    assert (none / "train.jsonl").read_bytes() == b""  # valid, empty


def test_splits_go_by_submitter(session: Session, tmp_path: Path) -> None:
    project = make_project(session)
    labeler = make_user(session)
    submitters = [make_user(session) for _ in range(12)]
    for i, submitter in enumerate(submitters):
        for j in range(2):
            prompt = make_prompt(session, project, text=f"P{i}-{j}")
            prompt.submitter_id = submitter.id
            rank(session, prompt, labeler, [0, 1, 2, 3])
    folder = _export(session, project, tmp_path / "s", validation_ratio=0.5, seed=3)
    by_split: dict[str, set[int]] = {}
    prompts = {p.id: p.submitter_id for p in session.scalars(select(Prompt).where(Prompt.project_id == project.id))}  # fmt: skip
    for split in ("train", "validation"):
        for row in _jsonl(folder / f"{split}.jsonl"):
            by_split.setdefault(split, set()).add(prompts[row["prompt_id"]])
    assert by_split["train"] and by_split["validation"]
    assert not by_split["train"] & by_split["validation"]  # no submitter in both
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"]["train"] + manifest["counts"]["validation"] == 12 * 2 * 6
    assert split_of("user:1", seed=3, ratio=0.5) == split_of("user:1", seed=3, ratio=0.5)


@pytest.mark.parametrize("options", [{"format": "jsonl"}, {"format": "jsonl", "gzip": True},
                                     {"format": "parquet"}])  # fmt: skip
def test_the_same_data_and_options_give_the_same_bytes(
    session: Session, ranked: Any, tmp_path: Path, options: dict[str, Any]
) -> None:
    project, *_ = ranked
    one = _export(session, project, tmp_path / "one", **options)
    two = _export(session, project, tmp_path / "two", **options)
    first = json.loads((one / "manifest.json").read_text())
    second = json.loads((two / "manifest.json").read_text())
    assert first["files"] == second["files"]  # sha256 of every data file
    for name in first["files"]:
        assert (one / name).read_bytes() == (two / name).read_bytes()


def test_manifest_and_card(session: Session, ranked: Any, tmp_path: Path) -> None:
    project, *_ = ranked
    folder = _export(session, project, tmp_path / "m", validation_ratio=0)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "pairwise" and manifest["format"] == "jsonl"
    assert manifest["project"] == {"id": project.id, "name": project.name, "k": 4}
    assert manifest["counts"] == {"train": 11, "validation": 0, "total": 11, "prompts": 1}
    assert manifest["agreement"]["mean_prompt_agreement"] == 0.8
    for name, digest in manifest["files"].items():
        import hashlib

        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    card = (folder / "README.md").read_text()
    assert "| train | 11 |" in card and "80.0%" in card and 'load_dataset("json"' in card


def test_kwise_sft_and_prompts(session: Session, ranked: Any, tmp_path: Path) -> None:
    project, prompt, ann, _bob = ranked
    session.add(Demonstration(prompt_id=prompt.id, author_id=ann.id, text="A demonstration."))
    session.flush()
    kwise = _jsonl(
        _export(session, project, tmp_path / "k", kind="kwise", validation_ratio=0) / "train.jsonl"
    )
    assert len(kwise) == 2
    row = kwise[0]
    assert row["completions"][row["ranking"][0][0]] == "Answer 0 to Which is best?"
    assert row["ranking"] == [[0], [1, 2], [3]]  # shown in id order here: a, b, c, d
    sft = _jsonl(
        _export(session, project, tmp_path / "f", kind="sft", validation_ratio=0) / "train.jsonl"
    )
    assert sft == [{"prompt": "Which is best?", "completion": "A demonstration.",
                    "prompt_id": prompt.id, "demonstration_id": sft[0]["demonstration_id"],
                    "author": f"user:{ann.id}"}]  # fmt: skip
    prompts = _jsonl(
        _export(session, project, tmp_path / "p", kind="prompts", validation_ratio=0)
        / "train.jsonl"
    )
    assert prompts == [{"prompt": "Which is best?", "prompt_id": prompt.id}]


def test_gold_surplus_and_labeler_filters(session: Session, ranked: Any, tmp_path: Path) -> None:
    project, prompt, ann, _bob = ranked
    admin = make_admin(session)
    only_ann = _export(
        session, project, tmp_path / "a", labelers=[f"user:{ann.id}"], validation_ratio=0
    )
    assert {r["labeler"] for r in _jsonl(only_ann / "train.jsonl")} == {f"user:{ann.id}"}
    session.add(
        GoldRanking(
            prompt_id=prompt.id, ranking=[[a] for a in answers(prompt)], created_by_id=admin.id
        )
    )
    session.flush()
    excluded = _export(session, project, tmp_path / "g", gold="exclude")
    assert json.loads((excluded / "manifest.json").read_text())["counts"]["total"] == 0


def test_odd_text_and_huge_answers_round_trip(session: Session, tmp_path: Path) -> None:
    project = make_project(session)
    texts = [
        "emoji 🧪🏳️‍🌈 and \U0001d518\U0001d52b (astral planes)",
        "right-to-left: مرحبا بالعالم שלום",
        "combining: e\u0301 a\u0308 \u0e01\u0e34",
        "controls: \x01\x07\x1b[0m tab\t cr\r lf\n nel\x85 ls\u2028 ps\u2029 del\x7f bom\ufeff",
        "x" * 1_000_000,
    ]
    prompt = make_prompt(session, project, text="odd\u2028prompt\x85", answers=0)
    for text in texts:
        session.add(Completion(prompt_id=prompt.id, text=text, text_sha256=text_sha256(text), origin="t"))  # fmt: skip
    session.flush()
    session.refresh(prompt)
    labeler = make_user(session)
    rank(session, prompt, labeler, [0, 1, 2, 3, 4])
    for fmt in ("jsonl", "parquet"):
        folder = _export(session, project, tmp_path / fmt, format=fmt, validation_ratio=0)
        if fmt == "jsonl":
            raw = (folder / "train.jsonl").read_text(encoding="utf-8")
            assert len(raw.splitlines()) == 10  # one line per row, whatever the text
            rows = _jsonl(folder / "train.jsonl")
        else:
            import pyarrow.parquet as pq

            rows = pq.read_table(folder / "train.parquet").to_pylist()
        seen = {r["chosen"] for r in rows} | {r["rejected"] for r in rows}
        assert seen == set(texts)
        assert {r["prompt"] for r in rows} == {"odd\u2028prompt\x85"}


def test_a_failure_half_way_leaves_no_partial_export(
    session: Session, ranked: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, *_ = ranked
    import app.exports.service as service

    def broken(*args: Any) -> Any:
        yield "train", {"prompt": "p", "chosen": "a", "rejected": "b", "prompt_id": 1}
        raise RuntimeError("worker killed")

    monkeypatch.setattr(service, "export_rows", broken)
    folder = tmp_path / "exports" / "x"
    with pytest.raises(RuntimeError):
        _export(session, project, folder)
    assert not folder.exists()
    assert list(folder.parent.iterdir()) == []  # the temporary folder is gone too
    monkeypatch.undo()
    assert (_export(session, project, folder) / "manifest.json").exists()  # a rerun works


def test_bad_options_are_refused_with_every_reason() -> None:
    with pytest.raises(ExportError) as caught:
        ExportOptions.from_dict(
            {"kind": "everything", "format": "csv", "validation_ratio": "2", "gold": "maybe",
             "since": "soon", "labelers": ["bob"]}
        )  # fmt: skip
    message = str(caught.value)
    for part in ("kind must be one of", "format must be one of", "validation_ratio must be",
                 "gold must be one of", "since must be a date", "labelers are user:ID"):  # fmt: skip
        assert part in message
    with pytest.raises(ExportError, match="gzip applies to JSONL only"):
        ExportOptions.from_dict({"kind": "sft", "format": "parquet", "gzip": True})
    with pytest.raises(ExportError, match="consensus-only applies to rankings"):
        ExportOptions.from_dict({"kind": "sft", "consensus_only": True})


def test_prompt_agreement_by_hand() -> None:
    assert prompt_agreement([[[1], [2], [3]]]) is None  # one ranking
    assert prompt_agreement([[[1], [2]], [[2], [1]]]) == 0.0
    assert prompt_agreement([[[1, 2]], [[1], [2]]]) is None  # the only pair is tied by one


def test_the_export_job(
    session: Session, session_factory: sessionmaker[Session], settings: Settings, ranked: Any
) -> None:
    project, *_ = ranked
    job = create_job(
        session=session, kind=kinds.EXPORT, project_id=project.id,
        params={"kind": "pairwise", "format": "parquet"},
    )  # fmt: skip
    session.commit()
    status = run_job(job_id=job.id, session_factory=session_factory, settings=settings)
    session.refresh(job)
    assert status == JobStatus.succeeded, job.error
    export = session.scalars(select(Export).where(Export.job_id == job.id)).one()
    assert export.counts["train"] + export.counts["validation"] == 11
    assert Path(export.directory).is_dir() and "train.parquet" in export.files
    assert job.artifacts["export_id"] == export.id
    bad = create_job(
        session=session, kind=kinds.EXPORT, project_id=project.id, params={"kind": "x"}
    )
    session.commit()
    assert (
        run_job(job_id=bad.id, session_factory=session_factory, settings=settings)
        == JobStatus.failed
    )
    session.refresh(bad)
    assert "kind must be one of" in (bad.error or "")


def test_pairwise_lines_are_exactly_json_dumps_of_their_rows(session: Session) -> None:
    """Pairwise rows carry a line built from texts encoded once per prompt; it must be the
    very bytes ``json.dumps`` gives, odd text included."""
    from app.exports.rows import pairwise_rows
    from app.exports.writers import EncodedRow, json_line

    project = make_project(session)
    odd = 'p \u2028 \x85 "q" \\ \U0001f9ea \x01'
    prompt = make_prompt(session, project, text=odd)
    rank(session, prompt, make_user(session), [0, 1, 1, 2])
    rank(session, prompt, make_user(session), [0, 1, 2, 3])
    rows = [row for _, row in pairwise_rows(session, project, ExportOptions(kind="pairwise"))]
    assert len(rows) == 11
    for row in rows:
        assert isinstance(row, EncodedRow)
        assert row.line == json_line(row)
        assert json.loads(row.line) == row
