"""Documents from files, for `meshsearch ingest`: JSON Lines, CSV, a directory of text or
Markdown files, or JSON Lines on standard input.

Fields: the id is `id` (or BEIR's `_id`), the text is `text`, prefixed by `title` when there is
one (as BEIR corpora are embedded); a `metadata` object and every other field become metadata.
Each source can be read again from the start, so an upload resumed by a later process can skip
what the server already holds.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshsearch.api.v1 import api_pb2 as pb

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}


class SourceError(ValueError):
    """The input cannot be read as documents; the message says where and why."""


@dataclass(frozen=True)
class Fields:
    id: str = "id"
    text: str = "text"
    title: str = "title"


def document_from_record(record: dict[str, Any], fields: Fields, where: str) -> pb.Document:
    identifier = record.get(fields.id, record.get("_id") if fields.id == "id" else None)
    if identifier is None or identifier == "":
        raise SourceError(f"{where}: no '{fields.id}' field")
    text = record.get(fields.text)
    if not isinstance(text, str):
        raise SourceError(f"{where}: no '{fields.text}' text field")
    title = record.get(fields.title)
    if isinstance(title, str) and title.strip():
        text = f"{title} {text}".strip()
    document = pb.Document(id=str(identifier), text=text)
    metadata: dict[str, Any] = {}
    nested = record.get("metadata")
    if isinstance(nested, dict):
        metadata.update(nested)
    for key, value in record.items():
        if key not in {fields.id, "_id", fields.text, "metadata"} and value not in (None, ""):
            metadata[key] = value
    if metadata:
        document.metadata.update(metadata)
    return document


def _jsonl(lines: Iterator[str], fields: Fields, name: str) -> Iterator[pb.Document]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{name} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise SourceError(f"{name} line {number}: expected a JSON object")
        yield document_from_record(record, fields, f"{name} line {number}")


def _jsonl_file(path: Path, fields: Fields) -> Iterator[pb.Document]:
    with path.open(encoding="utf-8") as handle:
        yield from _jsonl(iter(handle), fields, str(path))


def _csv(path: Path, fields: Fields) -> Iterator[pb.Document]:
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            yield document_from_record(dict(row), fields, f"{path} line {number}")


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, links followed, lies within `root`: a link out of the directory being
    ingested (to ~/.ssh, to /etc) is never read and uploaded."""
    return path.resolve().is_relative_to(root.resolve())


def _directory(root: Path) -> Iterator[pb.Document]:
    found = (p for p in root.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file() and _inside(p, root))
    for path in sorted(found):
        relative = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"{path}: not UTF-8 text") from None
        document = pb.Document(id=relative, text=text)
        document.metadata.update({"path": relative})
        yield document


@dataclass(frozen=True)
class Source:
    """Where documents come from; iterate it for them, from the first one each time."""

    location: str
    fields: Fields = Fields()

    @property
    def is_stdin(self) -> bool:
        return self.location == "-"

    def check(self) -> None:
        if not self.is_stdin and not Path(self.location).exists():
            raise FileNotFoundError(self.location)

    def __iter__(self) -> Iterator[pb.Document]:
        if self.is_stdin:
            return _jsonl(iter(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")), self.fields, "stdin")
        path = Path(self.location)
        if path.is_dir():
            return _directory(path)
        if path.suffix.lower() == ".csv":
            return _csv(path, self.fields)
        return _jsonl_file(path, self.fields)

    def count(self) -> int | None:
        """How many documents it holds (None for standard input, which cannot be read twice)."""
        if self.is_stdin:
            return None
        path = Path(self.location)
        if path.is_file() and path.suffix.lower() != ".csv":
            with path.open(encoding="utf-8") as handle:
                return sum(1 for line in handle if line.strip())  # one JSON object per line
        return sum(1 for _ in self)
