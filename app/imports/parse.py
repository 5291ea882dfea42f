"""Reading import files: JSON Lines or CSV, optionally gzipped, one row at a time (design §8).

Each row's kind is told by its fields:

- prompt:                 ``{"prompt", "id"?, "submitter"?, "metadata"?}``
- prompt with answers:    the same plus ``"completions": [{"text", "model"?}, ...]``
- demonstration:          the same plus ``"completion": str``
- preference:             the same plus ``"chosen": str, "rejected": str``

A prompt may be a dialogue (design §11): ``prompt`` an array of messages ``{"role",
"content"}`` ending with a user turn (TRL's conversational form), or ``messages`` instead of
``prompt``; a conversational preference's ``chosen``/``rejected`` are one assistant message
each. With ``transcript="hh"`` string prompts in the Anthropic HH form (``Human: ...
\n\nAssistant: ...``) are read as turns, and a preference row without a ``prompt`` (as
hh-rlhf ships them: two whole transcripts) gets the turns both share as its prompt.

The file is read as bytes and every line is decoded on its own, so that each problem, a bad
UTF-8 byte included, is reported with its line number, and so that a file of any size is read
in constant memory (a line longer than the row limit is read through, never held whole).
Nothing here touches the database: ``app.imports.service`` checks and writes.
"""

from __future__ import annotations

import csv
import enum
import gzip
import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from app.dialogue import (
    Message,
    check_answer_message,
    check_messages,
    json_type,
    parse_hh,
    plain_text,
)

MAX_ROW_BYTES = 5 * 1024 * 1024
MAX_COMPLETIONS = 9  # the largest K (design §1)
MAX_NAME_CHARS = 200  # ids and submitters: the width of their columns
MAX_MODEL_CHARS = 190  # "import:<model>" must fit the 200-character origin column

FIELDS = (
    "prompt",
    "id",
    "submitter",
    "metadata",
    "completions",
    "completion",
    "chosen",
    "rejected",
    "messages",  # a dialogue, instead of "prompt"
)
ANSWER_FIELDS = ("text", "model")
JSON_CELLS = ("metadata", "completions", "messages")  # CSV cells that hold JSON
TRANSCRIPTS = ("hh",)  # string prompts that are dialogues in this form
UTF8_BOM = b"\xef\xbb\xbf"


class _Lines(Protocol):
    """What reading needs of a file: plain and gzip files both have it."""

    def readline(self, size: int = -1, /) -> bytes: ...


class ImportFileError(ValueError):
    """The file as a whole cannot be read (missing, wrong type, bad gzip, bad CSV header).
    Row problems are not raised: they are reported as ``RowError``s with their line."""


class FileFormat(enum.StrEnum):
    jsonl = "jsonl"
    csv = "csv"


class RowKind(enum.StrEnum):
    prompt = "prompt"
    prompt_with_completions = "prompt with completions"
    demonstration = "demonstration"
    preference = "preference"


# The fields that make a row one of the kinds beyond a bare prompt; a row has one kind.
KIND_FIELDS: dict[RowKind, tuple[str, ...]] = {
    RowKind.prompt_with_completions: ("completions",),
    RowKind.demonstration: ("completion",),
    RowKind.preference: ("chosen", "rejected"),
}

SUFFIXES = {".jsonl": FileFormat.jsonl, ".json": FileFormat.jsonl, ".csv": FileFormat.csv}


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One valid row. Texts are kept exactly as in the file (no trimming, no normalising)."""

    line: int
    kind: RowKind
    prompt: str  # a dialogue's plain rendering (app.dialogue.plain_text)
    external_id: str | None = None
    submitter: str | None = None
    metadata: dict[str, Any] | None = None
    completions: tuple[Answer, ...] = ()
    completion: str | None = None  # a demonstration's answer
    chosen: str | None = None
    rejected: str | None = None
    size: int = 0  # bytes in the file, so that write batches stay small in memory
    messages: tuple[Message, ...] | None = None  # the turns of a dialogue prompt


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class SourceRow:
    """A row as read: where it starts, its text as in the file (for a rejects file), and either
    the parsed row or the reason it is rejected."""

    line: int
    raw: str
    row: ImportRow | None = None
    error: str | None = None


def file_format(name: str) -> tuple[FileFormat, str]:
    """The format told by the file name, and the suffix that told it (``.jsonl.gz``...)."""
    lower = name.lower()
    gz = ".gz" if lower.endswith(".gz") else ""
    stem = lower.removesuffix(gz)
    for suffix, fmt in SUFFIXES.items():
        if stem.endswith(suffix):
            return fmt, suffix + gz
    raise ImportFileError(
        f"{name}: unsupported file type; use .jsonl, .json or .csv, optionally gzipped (.gz)"
    )


def read_rows(
    path: Path, *, name: str | None = None, transcript: str | None = None
) -> Iterator[SourceRow]:
    """Every non-blank row of the file, in order, valid or not. ``name`` is the file's name
    as the user knows it (an upload is stored under another), used in messages;
    ``transcript`` ("hh") reads string prompts in that form as dialogues."""
    if transcript is not None and transcript not in TRANSCRIPTS:
        raise ImportFileError(f"unknown transcript form {transcript!r} (known: hh)")
    name = name or path.name
    fmt, suffix = file_format(path.name)
    if not path.is_file():
        raise ImportFileError(f"no such file: {path}")
    gzipped = suffix.endswith(".gz")
    try:
        with gzip.open(path, "rb") if gzipped else path.open("rb") as stream:
            if fmt is FileFormat.csv:
                yield from _csv_rows(stream, name, transcript)
            else:
                yield from _jsonl_rows(stream, name, transcript)
    except (OSError, EOFError, zlib.error) as exc:
        what = "a readable gzip file" if gzipped else "readable"
        raise ImportFileError(f"{name} is not {what}: {exc}") from None


# --- lines ------------------------------------------------------------------------------------


def _numbered_lines(stream: _Lines) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, bytes, size) per line; the bytes are None for a line over the row limit,
    which is read through in chunks so that it is never held in memory whole."""
    number = 0
    while True:
        data = stream.readline(MAX_ROW_BYTES + 3)  # room for "\r\n" and one byte too many
        if not data:
            return
        number += 1
        if number == 1 and data.startswith(UTF8_BOM):  # as spreadsheets write UTF-8 CSV
            data = data[len(UTF8_BOM) :]
        size = len(data)
        if len(data.rstrip(b"\r\n")) <= MAX_ROW_BYTES:
            yield number, data, size
            continue
        while not data.endswith(b"\n"):
            data = stream.readline(1 << 20)
            if not data:
                break
            size += len(data)
        yield number, None, size - (len(data) - len(data.rstrip(b"\r\n")))


def _too_large(size: int) -> str:
    return f"row is larger than {MAX_ROW_BYTES // (1024 * 1024)} MiB ({size:,} bytes)"


def _bad_utf8(data: bytes, exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte {exc.start + 1} of the line"


# --- JSON Lines -------------------------------------------------------------------------------


def _jsonl_rows(stream: _Lines, name: str, transcript: str | None) -> Iterator[SourceRow]:
    first_row = True
    for number, data, size in _numbered_lines(stream):
        if data is None:
            yield SourceRow(number, "", error=_too_large(size))
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw = data.decode("utf-8", "backslashreplace").rstrip("\r\n")
            yield SourceRow(number, raw, error=_bad_utf8(data, exc))
            continue
        if not text.strip():
            continue  # blank lines (a trailing one, say) are not rows
        if (
            first_row
            and text.lstrip().startswith("[")
            and name.lower().removesuffix(".gz").endswith(".json")
        ):
            raise ImportFileError(
                f"{name} holds a JSON array; write one JSON object per line (JSON Lines)"
            )
        first_row = False
        yield _jsonl_row(number, text.rstrip("\r\n"), size, transcript)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a repeated key (json keeps the last one silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the field {_quote(key)} appears twice")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


def _load_json(text: str) -> tuple[Any, str | None]:
    """The value, or why the text is not JSON that a database can store."""
    try:
        value = json.loads(
            text, object_pairs_hook=_object, parse_constant=_no_constant, parse_float=_finite_float
        )
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (column {exc.colno})"
    except ValueError as exc:
        return None, f"not valid JSON: {exc}"
    except RecursionError:
        return None, "not valid JSON: nested too deeply"
    return value, None


def _jsonl_row(number: int, text: str, size: int, transcript: str | None) -> SourceRow:
    value, error = _load_json(text)
    if error is None and not isinstance(value, dict):
        error = f"not a JSON object: the line holds {json_type(value)}"
    if error is not None:
        return SourceRow(number, text, error=error)
    parsed = parse_row(value, line=number, size=size, transcript=transcript)
    if isinstance(parsed, str):
        return SourceRow(number, text, error=parsed)
    return SourceRow(number, text, row=parsed)


# --- CSV --------------------------------------------------------------------------------------


class _CsvLines:
    """The decoded lines the csv module reads, one at a time. Remembers what was wrong with a
    line (bad UTF-8, too long) and the text read since the last record, so each record can be
    reported with its own line numbers and raw text."""

    def __init__(self, stream: _Lines) -> None:
        self._lines = _numbered_lines(stream)
        self._problems: dict[int, str] = {}
        self._text: list[str] = []
        self._size = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        number, data, size = next(self._lines)
        self._size += size
        if data is None:
            self._problems[number] = _too_large(size)
            text = "\n"
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._problems[number] = _bad_utf8(data, exc)
                text = data.decode("utf-8", "replace")
        self._text.append(text)
        return text

    def take(self, first: int, last: int) -> tuple[str, int, list[str]]:
        """The text, size and line problems of lines first..last (one record), then forget them."""
        text, size = "".join(self._text).rstrip("\r\n"), self._size
        problems = [
            f"line {n}: {self._problems.pop(n)}" if n != first else self._problems.pop(n)
            for n in range(first, last + 1)
            if n in self._problems
        ]
        self._text.clear()
        self._size = 0
        return text, size, problems


def _csv_rows(stream: _Lines, name: str, transcript: str | None) -> Iterator[SourceRow]:
    # A field may be as large as a row (the default limit is 128 KiB); process-wide, harmless.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_BYTES))
    lines = _CsvLines(stream)
    reader = csv.reader(lines)
    header: list[str] | None = None
    last = 0  # the last line the previous record used
    while True:
        try:
            cells = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as exc:
            cells, error = [], f"not valid CSV: {exc}"
        first, last = last + 1, reader.line_num
        raw, size, problems = lines.take(first, last)
        if error is None and not any(cells):
            continue  # a blank line, or a row of empty cells as spreadsheets leave at the end
        if header is None:
            header = _csv_header(cells, problems or ([error] if error else []), name, first)
            continue
        if error is None and problems:
            error = "; ".join(problems)
        if error is None and size > MAX_ROW_BYTES:
            error = _too_large(size)
        if error is None and len(cells) != len(header):
            error = f"has {len(cells)} cells but the header has {len(header)} columns"
        if error is not None:
            yield SourceRow(first, raw, error=error)
            continue
        parsed = _csv_row(
            dict(zip(header, cells, strict=True)), line=first, size=size, transcript=transcript
        )
        if isinstance(parsed, str):
            yield SourceRow(first, raw, error=parsed)
        else:
            yield SourceRow(first, raw, row=parsed)


def _csv_header(cells: list[str], problems: list[str], name: str, line: int) -> list[str]:
    """The column names; a header that cannot be used makes the whole file unreadable."""
    where = f"{name}, line {line}"
    if problems:
        raise ImportFileError(f"{where} (the header): {'; '.join(problems)}")
    columns = [cell.strip() for cell in cells]
    unknown = [c for c in columns if c not in FIELDS]
    if unknown:
        raise ImportFileError(
            f"{where} (the header): unknown {_plural(len(unknown), 'column')} "
            f"{_names(unknown)} (known: {', '.join(FIELDS)})"
        )
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ImportFileError(f"{where} (the header): {_names(duplicates)} appears twice")
    if "prompt" not in columns and "messages" not in columns:
        raise ImportFileError(f"{where} (the header): there is no 'prompt' (or 'messages') column")
    return columns


def _csv_row(
    cells: dict[str, str], *, line: int, size: int, transcript: str | None
) -> ImportRow | str:
    """A CSV row: an empty cell is an absent field; metadata, completions and messages hold
    JSON."""
    values: dict[str, Any] = {}
    for column, cell in cells.items():
        if cell == "":
            continue
        if column in JSON_CELLS:
            value, error = _load_json(cell)
            if error is not None:
                return f"'{column}' is {error}"
            values[column] = value
        else:
            values[column] = cell
    return parse_row(values, line=line, size=size, transcript=transcript)


# --- one row ----------------------------------------------------------------------------------


def parse_row(
    obj: dict[str, Any], *, line: int, size: int = 0, transcript: str | None = None
) -> ImportRow | str:
    """The row, or every reason it is rejected (joined with "; ") so one fix pass is enough.
    ``null`` is an absent field: JSON writers (pandas, ``datasets``) write missing values so."""
    problems: list[str] = []
    unknown = [key for key in obj if key not in FIELDS]
    if unknown:
        problems.append(
            f"unknown {_plural(len(unknown), 'field')} {_names(unknown)} "
            f"(known: {', '.join(FIELDS)})"
        )
    values = {key: value for key, value in obj.items() if value is not None and key in FIELDS}
    if transcript == "hh" and "prompt" not in values and "messages" not in values:
        _hh_pair(values, problems)  # hh-rlhf's own rows: two whole transcripts
    prompt, messages = _prompt(values, problems, transcript)
    external_id = _name(values, "id", problems, numbers=True)
    submitter = _name(values, "submitter", problems)
    metadata = _metadata(values.get("metadata"), problems)

    kinds = [kind for kind, names in KIND_FIELDS.items() if any(n in values for n in names)]
    kind = kinds[0] if len(kinds) == 1 else RowKind.prompt
    answers: tuple[Answer, ...] = ()
    completion = chosen = rejected = None
    if len(kinds) > 1:
        fields = " and ".join(_names(KIND_FIELDS[k]) for k in kinds)
        problems.append(
            f"has both {fields}: a row is a prompt with completions, a demonstration "
            "('completion') or a preference ('chosen' and 'rejected'), not several"
        )
    elif kind is RowKind.prompt_with_completions:
        answers = _answers(values["completions"], problems)
    elif kind is RowKind.demonstration:
        completion = _text(values, "completion", problems)
    elif kind is RowKind.preference:
        # An empty answer is a real one here: harmlessness data prefers saying nothing to
        # saying something harmful (HH-RLHF has such pairs).
        both = " (a preference needs both 'chosen' and 'rejected')"
        chosen = _answer_text(values, "chosen", problems, missing=both)
        rejected = _answer_text(values, "rejected", problems, missing=both)
        if chosen is not None and chosen == rejected:
            problems.append("'chosen' and 'rejected' are the same text")

    if problems or prompt is None:
        return "; ".join(problems)
    return ImportRow(
        line=line,
        kind=kind,
        prompt=prompt,
        external_id=external_id,
        submitter=submitter,
        metadata=metadata,
        completions=answers,
        completion=completion,
        chosen=chosen,
        rejected=rejected,
        size=size,
        messages=tuple(messages) if messages is not None else None,
    )


def _prompt(
    values: dict[str, Any], problems: list[str], transcript: str | None
) -> tuple[str | None, list[Message] | None]:
    """The prompt's text and, for a dialogue, its turns: from ``prompt`` (a string, or an
    array of messages) or ``messages``; with ``transcript`` a string prompt in that form."""
    if "prompt" in values and "messages" in values:
        problems.append("has both 'prompt' and 'messages': give the dialogue in one of them")
        return None, None
    key = "messages" if "messages" in values else "prompt"
    value = values.get(key)
    if key == "messages" or isinstance(value, list):
        messages = check_messages(value, f"'{key}'", problems, unstorable=_unstorable)
        return (plain_text(messages), messages) if messages is not None else (None, None)
    text = _text(values, "prompt", problems)
    if text is None or transcript != "hh":
        return text, None
    turns = parse_hh(text)
    if isinstance(turns, str):
        problems.append(f"'prompt' {turns}")
        return None, None
    return plain_text(turns), turns


def _answer_text(
    values: dict[str, Any], key: str, problems: list[str], *, missing: str
) -> str | None:
    """A preference's answer: a string, or one assistant message (TRL's conversational form)."""
    value = values.get(key)
    if isinstance(value, list):
        text = check_answer_message(value, f"'{key}'", problems)
        if text is not None and (problem := _unstorable(text)) is not None:
            problems.append(f"'{key}' {problem}")
            return None
        return text
    return _text(values, key, problems, missing=missing, empty_ok=True)


def _hh_pair(values: dict[str, Any], problems: list[str]) -> None:
    """An hh-rlhf row ``{"chosen": transcript, "rejected": transcript}``: the turns both share
    become the prompt, and each last Assistant turn its answer (in ``values``, in place)."""
    chosen, rejected = values.get("chosen"), values.get("rejected")
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        return  # the usual checks say what is missing
    head_c, sep_c, answer_c = chosen.rpartition("\n\nAssistant:")
    head_r, sep_r, answer_r = rejected.rpartition("\n\nAssistant:")
    if not sep_c or not sep_r:
        problems.append("no 'prompt', and 'chosen'/'rejected' are not whole HH transcripts")
    elif head_c != head_r:
        problems.append(
            "no 'prompt', and 'chosen' and 'rejected' differ before their last Assistant turn"
        )
    else:
        values.update(prompt=head_c, chosen=answer_c.strip(), rejected=answer_r.strip())


def _text(
    values: dict[str, Any],
    key: str,
    problems: list[str],
    *,
    where: str = "",
    missing: str = "",
    empty_ok: bool = False,
) -> str | None:
    """A required text that the database can store; blank only where ``empty_ok``."""
    label = f"'{where}{key}'"
    value = values.get(key)
    if value is None:
        problems.append(f"{label} is missing{missing}")
    elif not isinstance(value, str):
        problems.append(f"{label} must be a string, not {json_type(value)}")
    elif not empty_ok and not value.strip():
        problems.append(f"{label} is empty")
    elif (problem := _unstorable(value)) is not None:
        problems.append(f"{label} {problem}")
    else:
        return value
    return None


def _name(
    values: dict[str, Any],
    key: str,
    problems: list[str],
    *,
    where: str = "",
    numbers: bool = False,
    max_chars: int = MAX_NAME_CHARS,
) -> str | None:
    """An optional short name (id, submitter, model). Ids may be integers, as many data sets
    number their rows; they are stored as text, the same as the CSV cell "7"."""
    label = f"'{where}{key}'"
    value = values.get(key)
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None:
        return None
    if not isinstance(value, str):
        kinds = "a string or an integer" if numbers else "a string"
        problems.append(f"{label} must be {kinds}, not {json_type(value)}")
    elif not value.strip():
        problems.append(f"{label} is empty")
    elif len(value) > max_chars:
        problems.append(f"{label} is longer than {max_chars} characters")
    elif (problem := _unstorable(value)) is not None:
        problems.append(f"{label} {problem}")
    else:
        return value
    return None


def _metadata(value: Any, problems: list[str]) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append(f"'metadata' must be an object, not {json_type(value)}")
        return None
    stack: list[Any] = [value]
    while stack:  # keys and strings at any depth must be storable too
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and (problem := _unstorable(item)) is not None:
            problems.append(f"'metadata' {problem}")
            return None
    return value


def _answers(value: Any, problems: list[str]) -> tuple[Answer, ...]:
    """The answers to rank. Two equal answers are not an error (two models may well agree):
    the import stores the text once per prompt and counts the duplicate."""
    if not isinstance(value, list):
        problems.append(f"'completions' must be an array of answers, not {json_type(value)}")
        return ()
    if not value:
        problems.append("'completions' is empty")
        return ()
    if len(value) > MAX_COMPLETIONS:
        problems.append(
            f"'completions' has {len(value)} answers; at most {MAX_COMPLETIONS} are allowed"
        )
        return ()
    answers = []
    for index, item in enumerate(value):
        where = f"completions[{index}]."
        if not isinstance(item, dict):
            problems.append(
                f"'completions[{index}]' must be an object with 'text' (and 'model'), "
                f"not {json_type(item)}"
            )
            continue
        unknown = [key for key in item if key not in ANSWER_FIELDS]
        if unknown:
            problems.append(
                f"'completions[{index}]' has unknown {_plural(len(unknown), 'field')} "
                f"{_names(unknown)} (known: {', '.join(ANSWER_FIELDS)})"
            )
        present = {key: v for key, v in item.items() if v is not None}
        text = _text(present, "text", problems, where=where)
        model = _name(present, "model", problems, where=where, max_chars=MAX_MODEL_CHARS)
        if text is not None:
            answers.append(Answer(text, model))
    return tuple(answers)


def _unstorable(text: str) -> str | None:
    """Why the database cannot store this text, if it cannot: Postgres refuses NUL in text
    and JSON, and an unpaired surrogate (from a "\\ud83d" escape) is not encodable UTF-8."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which the database cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"contains an unpaired surrogate (\\u{ord(text[exc.start]):04x}), "
            "which is not valid Unicode"
        )
    return None


def _quote(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:40] + "…")


def _names(names: Any) -> str:
    return ", ".join(_quote(n) for n in names)


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
