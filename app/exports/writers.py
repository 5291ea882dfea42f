"""Writing export rows to files as they stream in: JSONL (optionally gzip), Parquet (row
groups written as they fill) and a ``datasets.save_to_disk`` folder (built from the Parquet
files, memory-mapped). Memory stays flat whatever the number of rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import IO, Any, Protocol

PARQUET_BATCH = 10_000

# Characters ``str.splitlines`` treats as line ends that JSON leaves raw: escaped, so a JSONL
# line is always one line to every reader (the text round-trips exactly).
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _escape_breaks(text: str) -> str:
    if any(ch in text for ch in _LINE_BREAKS):
        for ch, escaped in _LINE_BREAKS.items():
            text = text.replace(ch, escaped)
    return text


def json_line(row: dict[str, Any]) -> str:
    """The row as one JSON line (compact, UTF-8 kept): the reference ``RowEncoder`` matches."""
    return _escape_breaks(json.dumps(row, ensure_ascii=False, separators=(",", ":"))) + "\n"


def json_value(value: Any) -> str:
    """A value (a string, a list of messages) as JSON, exactly as ``json_line`` writes it
    inside a row."""
    return _escape_breaks(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


class EncodedRow(dict[str, Any]):
    """A row that also carries its JSON line, built by the row's maker from texts encoded
    once per prompt (a prompt and its answers repeat over many pairs). ``line`` is exactly
    ``json_line(row)``."""

    __slots__ = ("line",)
    line: str


def arrow_schema(kind: str, *, conversational: bool) -> Any:
    """The columns of ``kind``'s rows. Conversational rows hold messages as a list of
    ``{role, content}`` structs (``datasets`` reads them back as lists of dicts)."""
    import pyarrow as pa

    text, whole = pa.string(), pa.int64()
    messages = pa.list_(pa.struct([("role", text), ("content", text)]))
    prompt, answer = (messages, messages) if conversational else (text, text)
    fields = {
        "pairwise": [
            ("prompt", prompt), ("chosen", answer), ("rejected", answer), ("prompt_id", whole),
            ("chosen_id", whole), ("rejected_id", whole), ("labeler", text), ("margin", whole),
            ("agreement", pa.float64()), ("comparison_id", whole), ("source", text),
        ],
        "kwise": [
            ("prompt", prompt), ("completions", pa.list_(text)), ("completion_ids", pa.list_(whole)),
            ("ranking", pa.list_(pa.list_(whole))), ("prompt_id", whole), ("labeler", text),
            ("agreement", pa.float64()), ("comparison_id", whole),
        ],
        "sft": [
            ("prompt", prompt), ("completion", answer), ("prompt_id", whole),
            ("demonstration_id", whole), ("author", text),
        ],
        "prompts": [("prompt", prompt), ("prompt_id", whole)],
    }[kind]  # fmt: skip
    return pa.schema(fields)


class RowWriter(Protocol):
    rows: int

    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    def __init__(self, path: Path, *, compress: bool) -> None:
        self.rows = 0
        # mtime=0 and no file name in the gzip header: the same rows give the same bytes.
        self._raw = path.open("wb")
        self._file: IO[bytes] | gzip.GzipFile = (
            gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
            if compress
            else self._raw
        )
        self._buffer: list[str] = []

    def write(self, row: dict[str, Any]) -> None:
        self._buffer.append(row.line if isinstance(row, EncodedRow) else json_line(row))
        self.rows += 1
        if len(self._buffer) >= 1000:
            self._flush()

    def _flush(self) -> None:
        self._file.write("".join(self._buffer).encode("utf-8"))
        self._buffer.clear()

    def close(self) -> None:
        self._flush()
        if self._file is not self._raw:
            self._file.close()
        self._raw.close()


class ParquetWriter:
    def __init__(self, path: Path, *, kind: str, conversational: bool) -> None:
        import pyarrow.parquet as pq

        self.rows = 0
        self._schema = arrow_schema(kind, conversational=conversational)
        self._writer = pq.ParquetWriter(str(path), self._schema, compression="zstd")
        self._buffer: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        self.rows += 1
        if len(self._buffer) >= PARQUET_BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self._schema))
            self._buffer.clear()

    def close(self) -> None:
        self._flush()
        self._writer.close()


def parquet_to_dataset_folder(parquet: dict[str, Path], out: Path, cache: Path) -> None:
    """A ``DatasetDict`` (one dataset per split) saved with ``save_to_disk`` into ``out``."""
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict, Features

    splits = {}
    for name, path in parquet.items():
        if pq.ParquetFile(path).metadata.num_rows:
            # Converted to Arrow files under ``cache`` and memory-mapped, not held in memory.
            splits[name] = Dataset.from_parquet(str(path), cache_dir=str(cache))
        else:  # an empty split (datasets refuses to build one from a file)
            features = Features.from_arrow_schema(pq.read_schema(path))
            splits[name] = Dataset.from_dict({k: [] for k in features}, features=features)
    # One shard per split: an empty split then still gets its (empty) Arrow file.
    DatasetDict(splits).save_to_disk(str(out), num_shards={name: 1 for name in splits})
