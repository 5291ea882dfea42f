"""Importing a file into a project: validate every row, then write them in bulk (design §8).

Bad input never half-imports: the whole file is read once to validate it, and only when every
row is valid (or the caller asked to skip the invalid ones) is it read a second time to write,
in batches. Both passes stream the file; what stays in memory is small per row: the errors,
each row's ``id`` (to find duplicates) and a 16-byte fingerprint per prompt (to find it again).

Importing the same file again adds nothing twice: a row's prompt is the project's prompt with
the same ``id``, else (no ``id``) one with the same text; completions are unique per prompt by
text hash (as the database requires); a demonstration is recognised by its prompt and text, a
preference by its prompt and its two answers, whichever file brought them: a copy of a file
under another name adds nothing either (design §10).

The project's prompts are read once per import, not looked up batch by batch: no index covers
a prompt's text, and on Postgres a lookup of 1,000 ids by a generic plan scans the project's
prompts, so per-batch lookups made a large import quadratic (100,000 rows: minutes instead of
seconds).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from app.db import Base, utcnow
from app.dialogue import Message, prompt_key
from app.imports.parse import (
    MAX_NAME_CHARS,
    ImportFileError,
    ImportRow,
    RowError,
    RowKind,
    read_rows,
)
from app.labeling.models import (
    Comparison,
    Completion,
    Demonstration,
    Prompt,
    PromptSource,
    text_sha256,
)
from app.projects.models import Project

BATCH_ROWS = 1000
BATCH_BYTES = 32 * 1024 * 1024  # rows may be up to 5 MiB each: batches are cut by size too
SOURCE_CHARS = 180  # of the file name in "import:<name>", leaving room for a "#2" suffix
IMPORT_LABELER_PREFIX = "import:"  # the external labeler of imported preferences: not a person


def is_import_labeler(external: str | None) -> bool:
    """Whether an external labeler name is an import's pseudo-labeler (``import:<file>``)."""
    return external is not None and external.startswith(IMPORT_LABELER_PREFIX)


def import_file_name(external: str) -> str:
    """The file an import pseudo-labeler stands for: ``import:hh.jsonl#2`` -> ``hh.jsonl``."""
    name = external.removeprefix(IMPORT_LABELER_PREFIX)
    head, hash_, n = name.rpartition("#")
    return head if hash_ and n.isdigit() else name


@dataclass
class ImportSummary:
    """What an import did (or, with ``imported`` false, why it did nothing)."""

    source_name: str
    rows: int = 0  # rows read, valid or not
    errors: list[RowError] = field(default_factory=list)
    imported: bool = False  # false: some rows are invalid and nothing was written
    kinds: Counter[RowKind] = field(default_factory=Counter)  # rows written, per kind
    prompts_created: int = 0
    prompts_reused: int = 0  # rows whose prompt was already there (earlier rows included)
    completions_added: int = 0
    completions_duplicate: int = 0  # already stored for the prompt (or twice in a row)
    demonstrations_added: int = 0
    demonstrations_duplicate: int = 0
    comparisons_added: int = 0
    comparisons_duplicate: int = 0  # already stored (by this file before, or by another)
    comparisons_in_other_files: int = 0  # ... of which another file had imported
    other_files: set[str] = field(default_factory=set)  # the names of those files

    @property
    def rows_imported(self) -> int:
        return sum(self.kinds.values())

    def counts(self) -> dict[str, int]:
        """The figures, by name, as the CLI prints them and the audit log stores them."""
        return {
            "rows": self.rows,
            "rows_imported": self.rows_imported,
            "rows_rejected": len(self.errors),
            "prompts_created": self.prompts_created,
            "prompts_reused": self.prompts_reused,
            "completions_added": self.completions_added,
            "completions_duplicate": self.completions_duplicate,
            "demonstrations_added": self.demonstrations_added,
            "demonstrations_duplicate": self.demonstrations_duplicate,
            "comparisons_added": self.comparisons_added,
            "comparisons_duplicate": self.comparisons_duplicate,
            "comparisons_in_other_files": self.comparisons_in_other_files,
        }


def validate_file(
    *,
    session: Session,
    project: Project,
    path: Path,
    source_name: str | None = None,
    transcript: str | None = None,
) -> list[RowError]:
    """Every invalid row of the file, in line order; an empty list when all can be imported.
    Raises ``ImportFileError`` when the file as a whole cannot be read."""
    stored_ids = _stored_ids(session=session, project=project)
    return _check_file(
        stored_ids=stored_ids, path=path, name=source_name, transcript=transcript
    ).errors


def import_file(
    *,
    session: Session,
    project: Project,
    path: Path,
    source_name: str,
    skip_invalid: bool = False,
    commit: Callable[[], None] | None = None,
    transcript: str | None = None,
) -> ImportSummary:
    """Validate the whole file, then write its rows (flushed, not committed: the caller
    commits). With invalid rows nothing is written, unless ``skip_invalid``: then the valid
    rows are written and the summary's ``errors`` are the rejected rows.

    ``commit``, when given, is called after each batch of rows (``BATCH_ROWS``): the web page
    and the CLI commit there, so a large import holds the database's write lock one batch at
    a time and other requests wait briefly at most. A failure then leaves the batches before
    it stored; running the import again adds only what is missing (rows already stored are
    matched and skipped).

    ``source_name`` (the file's name) labels what the file brings: the default submitter of
    its prompts, the origin ``import:<name>`` of answers without a model, the author of its
    demonstrations and the external labeler of its preferences. ``transcript`` ("hh") reads
    string prompts in the Anthropic HH form as dialogues (``app.imports.parse``)."""
    source_name = source_name.strip()
    if not source_name:
        raise ImportFileError("the import needs the file's name")
    stored_ids = _stored_ids(session=session, project=project)
    check = _check_file(stored_ids=stored_ids, path=path, name=source_name, transcript=transcript)
    if check.rows == 0:
        raise ImportFileError(f"{source_name} has no rows to import")
    summary = ImportSummary(source_name=source_name, rows=check.rows, errors=check.errors)
    if check.errors and not skip_invalid:
        return summary

    writer = _Writer(
        session=session,
        project=project,
        source_name=source_name,
        summary=summary,
        stored_ids=stored_ids,
        # Rows without an id are matched by text: only then are the texts looked up.
        stored_texts=_stored_texts(session=session, project=project)
        if check.rows_without_id
        else None,
    )
    rejected = {error.line for error in check.errors}
    batch: list[ImportRow] = []
    batch_bytes = 0
    for item in read_rows(path, name=source_name, transcript=transcript):
        if item.row is None or item.line in rejected:
            continue
        batch.append(item.row)
        batch_bytes += item.row.size
        if len(batch) >= BATCH_ROWS or batch_bytes >= BATCH_BYTES:
            writer.write(batch)
            if commit is not None:
                commit()
            batch, batch_bytes = [], 0
    if batch:
        writer.write(batch)
    summary.imported = True
    return summary


def write_rejects(*, path: Path, errors: Sequence[RowError], out: Path) -> int:
    """Write the rejected rows to ``out`` as JSON Lines, ``{"line", "reason", "row"}`` with
    the row's text as it was in the file, so that it can be fixed and imported again.
    Written to a temporary file first and renamed, so a reader never sees half a file."""
    reasons = {error.line: error.reason for error in errors}
    partial = out.with_name(out.name + ".partial")
    written = 0
    with partial.open("w", encoding="utf-8") as stream:
        for item in read_rows(path):
            if item.line in reasons:
                record = {"line": item.line, "reason": reasons[item.line], "row": item.raw}
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
    partial.replace(out)
    return written


# --- validation -------------------------------------------------------------------------------


@dataclass
class _Check:
    rows: int
    errors: list[RowError]
    rows_without_id: int


def _check_file(
    *,
    stored_ids: dict[str, tuple[int, bytes]],
    path: Path,
    name: str | None,
    transcript: str | None = None,
) -> _Check:
    """Read the whole file once. Beyond each row's own checks: an ``id`` used twice in the
    file, and an ``id`` that already names a prompt of the project with another text
    (importing the row would hang its answers on the wrong prompt)."""
    check = _Check(rows=0, errors=[], rows_without_id=0)
    first_line_of: dict[str, int] = {}
    for item in read_rows(path, name=name, transcript=transcript):
        check.rows += 1
        row = item.row
        if row is None:
            check.errors.append(RowError(item.line, item.error or "invalid row"))
            continue
        if row.external_id is None:
            check.rows_without_id += 1
            continue
        if row.external_id in first_line_of:
            line = first_line_of[row.external_id]
            reason = f"'id' {row.external_id!r} is already used on line {line}"
            check.errors.append(RowError(item.line, reason))
            continue
        first_line_of[row.external_id] = item.line
        stored = stored_ids.get(row.external_id)
        if stored is not None and stored[1] != _row_digest(row):
            reason = (
                f"'id' {row.external_id!r} already names prompt {stored[0]} of this project, "
                "whose text is different"
            )
            check.errors.append(RowError(item.line, reason))
    return check


def _digest(text: str, messages: Sequence[Message] | None = None) -> bytes:
    """A short fingerprint of a prompt (its text, or a dialogue's turns: ``prompt_key``):
    what is kept in memory to recognise it."""
    key = prompt_key(text, messages)
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


def _row_digest(row: ImportRow) -> bytes:
    return _digest(row.prompt, row.messages)


def _stored_ids(*, session: Session, project: Project) -> dict[str, tuple[int, bytes]]:
    """The project's prompts that have an external id: {id: (prompt id, text digest)}."""
    stmt = select(Prompt.external_id, Prompt.id, Prompt.text, Prompt.messages).where(
        Prompt.project_id == project.id, Prompt.external_id.is_not(None)
    )
    rows = session.execute(stmt.execution_options(yield_per=BATCH_ROWS))
    return {
        external_id: (prompt_id, _digest(text, messages))
        for external_id, prompt_id, text, messages in rows
        if external_id is not None
    }


def _stored_texts(*, session: Session, project: Project) -> dict[bytes, int]:
    """The project's prompts by text digest (the oldest of equal texts)."""
    stmt = select(Prompt.text, Prompt.messages, Prompt.id).where(Prompt.project_id == project.id)
    stored: dict[bytes, int] = {}
    for text, messages, prompt_id in session.execute(
        stmt.order_by(Prompt.id).execution_options(yield_per=BATCH_ROWS)
    ):
        stored.setdefault(_digest(text, messages), prompt_id)
    return stored


# --- writing ----------------------------------------------------------------------------------


class _Writer:
    """Writes batches of valid rows with a few bulk statements each, reusing what exists."""

    def __init__(
        self,
        *,
        session: Session,
        project: Project,
        source_name: str,
        summary: ImportSummary,
        stored_ids: dict[str, tuple[int, bytes]],
        stored_texts: dict[bytes, int] | None,
    ) -> None:
        self.session = session
        self.stored_ids = stored_ids
        # Prompts created by this import join these as they are written.
        self.stored_texts = stored_texts
        self.project_id = project.id
        self.summary = summary
        self.label = f"{IMPORT_LABELER_PREFIX}{source_name[:SOURCE_CHARS]}"
        self.submitter = source_name[:MAX_NAME_CHARS]
        self.now = utcnow()

    def write(self, rows: list[ImportRow]) -> None:
        prompt_ids, existing = self._prompts(rows)
        completion_ids = self._completions(rows, prompt_ids, existing)
        self._demonstrations(rows, prompt_ids, existing)
        self._comparisons(rows, prompt_ids, existing, completion_ids)
        self.summary.kinds.update(row.kind for row in rows)

    def _prompts(self, rows: list[ImportRow]) -> tuple[list[int], set[int]]:
        """Each row's prompt id, and the ids of those that existed before this batch (only
        they can already have answers, demonstrations or rankings)."""
        # Each row's prompt: an existing id (>= 0), or -(1 + index) of a new prompt below.
        slots: list[int] = []
        new: list[dict[str, Any]] = []
        new_digests: list[bytes | None] = []
        new_by_digest: dict[bytes, int] = {}
        for row in rows:
            digest = _row_digest(row) if self.stored_texts is not None else None
            found: int | None = None
            if row.external_id is not None:
                stored = self.stored_ids.get(row.external_id)
                found = stored[0] if stored is not None else None
            elif digest is not None and self.stored_texts is not None:
                found = self.stored_texts.get(digest)
                if found is None and digest in new_by_digest:
                    found = -(1 + new_by_digest[digest])
            if found is not None:
                slots.append(found)
                self.summary.prompts_reused += 1
                continue
            if digest is not None:
                new_by_digest.setdefault(digest, len(new))
            slots.append(-(1 + len(new)))
            new_digests.append(digest)
            new.append(
                {
                    "project_id": self.project_id,
                    "text": row.prompt,
                    "messages": list(row.messages) if row.messages is not None else None,
                    "source": PromptSource.import_,
                    "external_id": row.external_id,
                    "submitter_external": row.submitter or self.submitter,
                    "metadata": row.metadata or {},
                    "created_at": self.now,
                }
            )
        new_ids: list[int] = []
        if new:
            # RETURNING rows come back in no promised order (SQLite would insert one row per
            # statement to promise one), so they are matched to the rows by id, else by text:
            # a new prompt without an id is a prompt (prompt_key) no other new prompt is.
            stmt = insert(_table(Prompt)).returning(
                Prompt.id, Prompt.external_id, Prompt.text, Prompt.messages
            )
            by_key = {
                external_id if external_id is not None else (prompt_key(text, messages),): prompt_id
                for prompt_id, external_id, text, messages in self.session.execute(stmt, new)
            }
            new_ids = [
                by_key[
                    p["external_id"]
                    if p["external_id"] is not None
                    else (prompt_key(p["text"], p["messages"]),)
                ]
                for p in new
            ]
            if self.stored_texts is not None:  # (ids are unique in a file: no later row needs them)
                for digest, prompt_id in zip(new_digests, new_ids, strict=True):
                    if digest is not None:
                        self.stored_texts.setdefault(digest, prompt_id)
        self.summary.prompts_created += len(new)
        prompt_ids = [slot if slot >= 0 else new_ids[-slot - 1] for slot in slots]
        return prompt_ids, {slot for slot in slots if slot >= 0}

    def _completions(
        self, rows: list[ImportRow], prompt_ids: list[int], existing: set[int]
    ) -> dict[tuple[int, str], int]:
        """Store each answer once per prompt; the ids by (prompt id, text hash)."""
        known: dict[tuple[int, str], int] = {}
        wanted = {pid for row, pid in zip(rows, prompt_ids, strict=True) if _answers(row)}
        if wanted & existing:
            stmt = select(Completion.prompt_id, Completion.text_sha256, Completion.id).where(
                Completion.prompt_id.in_(wanted & existing)
            )
            known = {(pid, sha): cid for pid, sha, cid in self.session.execute(stmt)}
        new: list[dict[str, Any]] = []
        for row, prompt_id in zip(rows, prompt_ids, strict=True):
            for text, model in _answers(row):
                key = (prompt_id, text_sha256(text))
                if key in known:
                    self.summary.completions_duplicate += 1
                    continue
                known[key] = -1  # stored below (with its id when a preference needs it)
                new.append(
                    {
                        "prompt_id": prompt_id,
                        "text": text,
                        "text_sha256": key[1],
                        "origin": f"import:{model}" if model else self.label,
                        "created_at": self.now,
                    }
                )
        if new and any(row.kind is RowKind.preference for row in rows):
            # Preferences rank the new answers by id: have them back.
            stmt2 = insert(_table(Completion)).returning(
                Completion.prompt_id, Completion.text_sha256, Completion.id
            )
            known.update({(pid, sha): cid for pid, sha, cid in self.session.execute(stmt2, new)})
        elif new:  # a plain executemany, the fastest on every driver
            self.session.execute(insert(_table(Completion)), new)
        self.summary.completions_added += len(new)
        return known

    def _demonstrations(
        self, rows: list[ImportRow], prompt_ids: list[int], existing: set[int]
    ) -> None:
        pairs = [
            (row.completion, pid)
            for row, pid in zip(rows, prompt_ids, strict=True)
            if row.completion is not None
        ]
        if not pairs:
            return
        stored: set[tuple[int, str]] = set()
        old = {pid for _, pid in pairs} & existing
        if old:
            stmt = select(Demonstration.prompt_id, Demonstration.text).where(
                Demonstration.prompt_id.in_(old),
                Demonstration.author_external.startswith(IMPORT_LABELER_PREFIX, autoescape=True),
            )
            stored = {(pid, text_sha256(text)) for pid, text in self.session.execute(stmt)}
        new: list[dict[str, Any]] = []
        for text, prompt_id in pairs:
            key = (prompt_id, text_sha256(text))
            if key in stored:
                self.summary.demonstrations_duplicate += 1
                continue
            stored.add(key)
            new.append(
                {
                    "prompt_id": prompt_id,
                    "author_external": self.label,
                    "text": text,
                    "created_at": self.now,
                }
            )
        if new:
            self.session.execute(insert(_table(Demonstration)), new)
        self.summary.demonstrations_added += len(new)

    def _comparisons(
        self,
        rows: list[ImportRow],
        prompt_ids: list[int],
        existing: set[int],
        completion_ids: dict[tuple[int, str], int],
    ) -> None:
        """A preference is a K=2 ranking by the external labeler ``import:<file>``. A
        comparison is one per prompt and labeler, so a second, different pair for the same
        prompt in the same file (HH-RLHF has some) is ranked by ``import:<file>#2``.

        A preference already stored by any import (this file's or another's: the same prompt,
        the same two answers, the same one preferred) is not stored again; answers are one
        per prompt and text, so the same texts give the same ranking of the same ids."""
        prefs = [
            (row, pid)
            for row, pid in zip(rows, prompt_ids, strict=True)
            if row.kind is RowKind.preference
        ]
        if not prefs:
            return
        # Per prompt: every import pseudo-labeler's ranking (labeler -> ranking).
        rankings: dict[int, dict[str, Any]] = {pid: {} for _, pid in prefs}
        old = set(rankings) & existing
        if old:
            stmt = select(
                Comparison.prompt_id, Comparison.labeler_external, Comparison.ranking
            ).where(
                Comparison.prompt_id.in_(old),
                Comparison.is_latest.is_(True),
                Comparison.labeler_external.startswith(IMPORT_LABELER_PREFIX, autoescape=True),
            )
            for pid, labeler, ranking in self.session.execute(stmt):
                rankings[pid][labeler] = ranking
        new: list[dict[str, Any]] = []
        for row, prompt_id in prefs:
            assert row.chosen is not None and row.rejected is not None
            chosen = completion_ids[(prompt_id, text_sha256(row.chosen))]
            rejected = completion_ids[(prompt_id, text_sha256(row.rejected))]
            ranking = [[chosen], [rejected]]
            taken = rankings[prompt_id]
            stored_by = next((who for who, r in taken.items() if r == ranking), None)
            if stored_by is not None:
                self.summary.comparisons_duplicate += 1
                if not self._ours(stored_by):
                    self.summary.comparisons_in_other_files += 1
                    self.summary.other_files.add(import_file_name(stored_by))
                continue
            n = 1
            while (labeler := self.label if n == 1 else f"{self.label}#{n}") in taken:
                n += 1
            taken[labeler] = ranking
            new.append(
                {
                    "prompt_id": prompt_id,
                    "labeler_external": labeler,
                    "displayed_completion_ids": [chosen, rejected],
                    "ranking": ranking,
                    "revision": 1,
                    "is_latest": True,
                    "created_at": self.now,
                }
            )
        if new:
            self.session.execute(insert(_table(Comparison)), new)
        self.summary.comparisons_added += len(new)

    def _ours(self, labeler: str) -> bool:
        """Whether a pseudo-labeler is this file's (``import:<file>`` or ``...#<n>``)."""
        rest = labeler.removeprefix(self.label)
        return rest != labeler and (not rest or (rest[0] == "#" and rest[1:].isdigit()))


def _table(model: type[Base]) -> Table:
    """The model's table: rows are inserted with Core statements (keys are column names),
    which skips the ORM's per-row bookkeeping that a bulk import does not need."""
    return cast(Table, model.__table__)


def _answers(row: ImportRow) -> list[tuple[str, str | None]]:
    """The answers a row brings, as (text, model): its completions, or a preference's pair."""
    if row.completions:
        return [(answer.text, answer.model) for answer in row.completions]
    if row.chosen is not None and row.rejected is not None:
        return [(row.chosen, None), (row.rejected, None)]
    return []
