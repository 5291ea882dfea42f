"""Export jobs: write a project's data as files in a folder of their own, atomically (a
temporary folder renamed into place once everything, manifest last, is written), with a
manifest (what was asked, counts, sha256 per file, the rows' format) and a dataset card."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import app
from app.errors import NotFoundError
from app.exports.models import Export
from app.exports.options import ExportOptions
from app.exports.rows import SPLITS, RowFormat, export_rows, row_format
from app.exports.writers import JsonlWriter, ParquetWriter, RowWriter, parquet_to_dataset_folder
from app.labeling.models import Prompt
from app.projects.models import Project

PROGRESS_EVERY = 20_000  # rows
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    counts: dict[str, int]
    files: dict[str, str]  # relative path -> sha256
    prompts: int  # prompts with at least one row


def export_folder(data_dir: Path, project_id: int, job_id: int, kind: str) -> Path:
    return data_dir / "exports" / f"project-{project_id}" / f"export-{job_id}-{kind}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _data_file(kind_format: str, split: str, gzip: bool) -> str:
    if kind_format == "jsonl":
        return f"{split}.jsonl" + (".gz" if gzip else "")
    return f"{split}.parquet"


def write_export(
    *,
    session: Session,
    project: Project,
    options: ExportOptions,
    folder: Path,
    job_id: int | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> ExportResult:
    """Stream the rows into ``folder`` (made through a temporary sibling, renamed at the end;
    a half-written export is never visible under the final name)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f"{TMP_PREFIX}{folder.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a killed earlier attempt
    tmp = folder.parent / f"{TMP_PREFIX}{folder.name}-{os.getpid()}"
    tmp.mkdir()
    try:
        rows = row_format(session, project, options)
        counts, prompts, agreement = _write_rows(session, project, options, rows, tmp, progress)
        files = {
            path.relative_to(tmp).as_posix(): file_sha256(path)
            for path in sorted(tmp.rglob("*"))
            if path.is_file()
        }
        manifest = {
            "kind": options.kind,
            "format": options.format,
            "options": options.as_dict(),
            "row_format": {"name": rows.name, "why": rows.why},
            "project": {"id": project.id, "name": project.name, "k": project.k},
            "counts": {**counts, "total": sum(counts.values()), "prompts": prompts},
            "files": files,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "app_version": app.__version__,
            "job_id": job_id,
        }
        if agreement is not None:
            manifest["agreement"] = agreement
        (tmp / "README.md").write_text(dataset_card(manifest), encoding="utf-8")
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        if folder.exists():  # an earlier attempt of the same job finished its rename
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(directory=folder, counts=counts, files=files, prompts=prompts)


def _write_rows(
    session: Session,
    project: Project,
    options: ExportOptions,
    rows: RowFormat,
    tmp: Path,
    progress: Callable[[float, str], None] | None,
) -> tuple[dict[str, int], int, dict[str, Any] | None]:
    parquet_dir = tmp / ".parquet" if options.format == "hf" else tmp
    parquet_dir.mkdir(exist_ok=True)
    writers: dict[str, RowWriter] = {}
    for split in SPLITS:
        if options.format == "jsonl":
            path = tmp / _data_file("jsonl", split, options.gzip)
            writers[split] = JsonlWriter(path, compress=options.gzip)
        else:
            writers[split] = ParquetWriter(
                parquet_dir / f"{split}.parquet",
                kind=options.kind,
                conversational=rows.conversational,
            )
    first, last = session.execute(
        select(func.min(Prompt.id), func.max(Prompt.id)).where(Prompt.project_id == project.id)
    ).one()
    span = max((last or 0) - (first or 0), 1)
    # Rows come in prompt order, so prompts are counted (and their agreement summed) as they
    # change: no per-prompt set that would grow with the project.
    last_prompt, prompts = None, 0
    agreement_sum, agreement_count = 0.0, 0
    written = 0
    try:
        for split, row in export_rows(session, project, options, rows.conversational):
            writers[split].write(row)
            prompt_id = row["prompt_id"]
            if prompt_id != last_prompt:
                last_prompt, prompts = prompt_id, prompts + 1
                if row.get("agreement") is not None:
                    agreement_sum += row["agreement"]
                    agreement_count += 1
            written += 1
            if progress and written % PROGRESS_EVERY == 0:
                fraction = (prompt_id - (first or 0)) / span
                progress(fraction, f"{written:,} rows written")
    finally:
        for writer in writers.values():
            writer.close()
    if options.format == "hf":
        parquet_to_dataset_folder(
            {split: parquet_dir / f"{split}.parquet" for split in SPLITS},
            tmp / "dataset",
            tmp / ".cache",
        )
        shutil.rmtree(parquet_dir, ignore_errors=True)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
    summary = None
    if options.kind in ("pairwise", "kwise"):
        summary = {
            "mean_prompt_agreement": (
                round(agreement_sum / agreement_count, 4) if agreement_count else None
            ),
            "prompts_with_agreement": agreement_count,
            "tie_rule": "a pair tied by either labeler is left out",
        }
    return {split: writers[split].rows for split in SPLITS}, prompts, summary


LOADING = {
    "jsonl": 'load_dataset("json", data_files={{"train": "train.jsonl{gz}", '
    '"validation": "validation.jsonl{gz}"}})',
    "parquet": 'load_dataset("parquet", data_files={{"train": "train.parquet", '
    '"validation": "validation.parquet"}})',
    "hf": 'load_from_disk("dataset")',
}
_TURNS = "`prompt` is a list of messages (`role`, `content`) ending with a user turn"
ROW_FORMATS = {  # kind: (conversational, standard)
    "pairwise": (
        f"{_TURNS}; `chosen` and `rejected` are one assistant message each (TRL's "
        "conversational preference format)",
        "`prompt`, `chosen` and `rejected` are texts (TRL's standard preference format)",
    ),
    "kwise": (
        f"{_TURNS}; `completions` are texts, the answers to that turn",
        "`prompt` and `completions` are texts",
    ),
    "sft": (
        f"{_TURNS}; `completion` is one assistant message (TRL's conversational "
        "prompt-completion format)",
        "`prompt` and `completion` are texts (TRL's standard prompt-completion format)",
    ),
    "prompts": (
        f"{_TURNS} (TRL's conversational prompt-only format)",
        "`prompt` is a text (TRL's standard prompt-only format)",
    ),
}
TRAINERS = {
    "pairwise": "TRL's `RewardTrainer` and `DPOTrainer` (preference format: prompt, chosen, "
    "rejected)",
    "kwise": "a K-wise reward model loss (all C(K,2) pairs of a prompt in one batch)",
    "sft": "TRL's `SFTTrainer` (prompt-completion format)",
    "prompts": "PPO rollouts",
}


def dataset_card(manifest: dict[str, Any]) -> str:
    """The README.md of an export: what it is, counts, agreement, how to load it."""
    options = manifest["options"]
    counts = manifest["counts"]
    fmt = manifest["format"]
    load = LOADING[fmt].format(gz=".gz" if options.get("gzip") else "")
    chosen = [
        f"- {name.replace('_', ' ')}: {value}"
        for name, value in options.items()
        if value not in (None, False, [], "") and name not in ("kind", "format")
    ]
    lines = [
        f"# {manifest['project']['name']}: {manifest['kind']} export",
        "",
        f"Exported from RLHF Studio {manifest['app_version']} on {manifest['created_at']} "
        f"(project {manifest['project']['id']}, K = {manifest['project']['k']}).",
        f"Made for {TRAINERS[manifest['kind']]}.",
        "",
        "## Counts",
        "",
        "| split | rows |",
        "|---|---:|",
        f"| train | {counts['train']:,} |",
        f"| validation | {counts['validation']:,} |",
        f"| total | {counts['total']:,} |",
        "",
        f"{counts['prompts']:,} prompts. Splits go by prompt submitter: one submitter's prompts "
        "are never in both.",
    ]
    if counts["total"] == 0:
        lines += ["", "**No rows matched these options**: the files are valid and empty."]
    if "agreement" in manifest:
        agreement = manifest["agreement"]
        mean = agreement["mean_prompt_agreement"]
        lines += ["", "## Agreement", ""]
        if mean is None:
            lines.append("No exported prompt was ranked by two or more labelers yet.")
        else:
            lines.append(
                f"Mean pairwise agreement between labelers over the "
                f"{agreement['prompts_with_agreement']:,} exported prompts ranked by two or "
                f"more: **{mean * 100:.1f}%** (a pair tied by either labeler is left out). "
                "Each row's `agreement` is its prompt's; AI judges' rankings never count in "
                "it."
            )
    row_format = manifest["row_format"]
    conversational, standard = ROW_FORMATS[manifest["kind"]]
    lines += ["", "## Format", ""]
    if row_format["name"] == "conversational":
        lines.append(
            f"**Conversational**: {conversational}. Trainers lay the messages out with the "
            "tokenizer's chat template."
        )
    else:
        lines.append(f"**Standard**: {standard}.")
    lines += ["", f"Why: {row_format['why']}."]
    if manifest["kind"] == "pairwise":
        lines += [
            "",
            "Each row's `source` says where its pair comes from: `ranking` (a labeler's "
            "ranking here), `rewrite` (a labeler's rewrite of the answer they ranked best, "
            "preferred over that answer; its `chosen_id` is null), `import` (an imported "
            "preference) or `ai` (an AI judge's ranking, exported only when asked: "
            "`ai` include or only).",
        ]
    lines += ["", "## Options", "", *chosen, "", "## Loading", "", "```python"]
    lines += [
        "from datasets import load_dataset, load_from_disk",
        f"dataset = {load}",
        "```",
        "",
        "`manifest.json` lists every file with its sha256.",
        "",
    ]
    return "\n".join(lines)


def record_export(
    *,
    session: Session,
    project: Project,
    options: ExportOptions,
    result: ExportResult,
    job_id: int | None,
    created_by_id: int | None,
) -> Export:
    export = Export(
        project_id=project.id,
        job_id=job_id,
        kind=options.kind,
        format=options.format,
        filters=options.as_dict(),
        counts={**result.counts, "prompts": result.prompts},
        files={**result.files, "manifest.json": "", "README.md": ""},
        directory=str(result.directory),
        created_by_id=created_by_id,
    )
    session.add(export)
    session.flush()
    return export


def get_export(*, session: Session, export_id: int) -> Export:
    export = session.get(Export, export_id)
    if export is None:
        raise NotFoundError(f"no export {export_id}")
    return export


def list_exports(*, session: Session, project: Project) -> Sequence[Export]:
    return session.scalars(
        select(Export)
        .where(Export.project_id == project.id)
        .order_by(Export.created_at.desc(), Export.id.desc())
    ).all()


def export_file(export: Export, name: str) -> Path:
    """The path of one of the export's files; only names the export lists (no traversal)."""
    if name not in export.files:
        raise NotFoundError(f"export {export.id} has no file {name!r}")
    path = Path(export.directory) / name
    if not path.is_file():
        raise NotFoundError(f"the file {name!r} of export {export.id} is gone from the disk")
    return path
