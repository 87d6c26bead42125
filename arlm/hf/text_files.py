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


def iter_documents(files: Sequence[PathLike], text_field: str = "text") -> Iterator[str]:
    """Yield documents: every non-empty line of a text file, the ``text_field`` of every jsonl row."""
    for path in check_text_files(files):
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if path.suffix in TEXT_SUFFIXES:
                    yield line.rstrip("\n")
                    continue
                row = json.loads(line)
                if text_field not in row:
                    raise ValueError(
                        f"{path}:{line_number}: jsonl row has no field {text_field!r} "
                        f"(fields: {sorted(row)})"
                    )
                yield row[text_field]
