"""Reading documents from local ``.txt`` / ``.jsonl`` files (tokenizer training and pretraining)."""

import json
from pathlib import Path
from typing import Iterator, List, Sequence, Union

PathLike = Union[str, Path]
TEXT_SUFFIXES = (".txt", ".text")
JSONL_SUFFIXES = (".jsonl", ".json")


def check_text_files(files: Sequence[PathLike]) -> List[Path]:
    """The files as ``Path``s; ``ValueError`` if the list is empty, one is missing or has a
    suffix other than .txt/.text/.jsonl/.json."""
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("no text files given; expected at least one .txt or .jsonl file")
    for path in paths:
        if not path.is_file():
            raise ValueError(f"text file not found: {path}")
        if path.suffix not in TEXT_SUFFIXES + JSONL_SUFFIXES:
            raise ValueError(
                f"unsupported text file {path}: expected a suffix in {TEXT_SUFFIXES + JSONL_SUFFIXES}"
            )
    return paths


def _undecodable_position(path: Path) -> str:
    """``"line L, byte offset B (0x..)"`` of the first byte sequence of ``path`` that is not UTF-8."""
    offset = 0
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                bad = raw[error.start:error.start + 1]
                return f"line {line_number}, byte offset {offset + error.start} (byte 0x{bad.hex()})"
            offset += len(raw)
    return "its last line (cut inside a multi-byte character)"


def _jsonl_document(path: Path, line_number: int, line: str, text_field: str) -> str:
    """The ``text_field`` of one jsonl row, or ``ValueError`` naming the file, the line and what is wrong."""
    where = f"{path}:{line_number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where}: not a JSON object ({error.msg} at character {error.pos + 1}): {line.strip()[:80]!r}. "
            f"Fix: one JSON object per line, e.g. {{\"{text_field}\": \"...\"}}"
        ) from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a jsonl row must be a JSON object, got {type(row).__name__} {str(row)[:80]!r}")
    if text_field not in row:
        raise ValueError(f"{where}: jsonl row has no field {text_field!r} (fields: {sorted(row)})")
    if not isinstance(row[text_field], str):
        raise ValueError(
            f"{where}: field {text_field!r} must be a string, got {type(row[text_field]).__name__} {row[text_field]!r}"
        )
    return row[text_field]


def iter_documents(files: Sequence[PathLike], text_field: str = "text") -> Iterator[str]:
    """Yield documents: every non-empty line of a text file, the ``text_field`` of every jsonl row.

    Raises:
        ValueError: a file is not UTF-8 (naming the file, line and byte offset) or a jsonl line is
            not a JSON object with a string ``text_field`` (naming the file and line).
    """
    for path in check_text_files(files):
        with path.open(encoding="utf-8") as handle:
            try:
                for line_number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    if path.suffix in TEXT_SUFFIXES:
                        yield line.rstrip("\n")
                    else:
                        yield _jsonl_document(path, line_number, line, text_field)
            except UnicodeDecodeError:
                raise ValueError(
                    f"{path} is not UTF-8 text: {_undecodable_position(path)}. Fix: convert it to UTF-8 "
                    f"(e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix})"
                ) from None
