"""Bad input to ``python -m arlm.pretrain`` is named with the file, line or flag and the fix
(before: a JSONDecodeError or UnicodeDecodeError naming no file, a corpus shorter than a block
that never yielded a batch, ``--block-size 0`` / ``--max-steps 0`` passed to the Trainer)."""

import subprocess
import sys

import pytest

from arlm.pretrain.trainer import main
from arlm.pretrain.text_files import iter_documents

TINY = ["--vocab-size", "300", "--hidden-size", "32", "--num-hidden-layers", "1", "--num-attention-heads", "2", "--max-steps", "1"]


@pytest.mark.parametrize(
    "flag, value, expected",
    [("--block-size", "0", "argument --block-size: must be an integer >= 2, got 0"),
     ("--max-steps", "0", "argument --max-steps: must be an integer >= 1, got 0"),
     ("--batch-size", "-4", "argument --batch-size: must be an integer >= 1, got -4"),
     ("--learning-rate", "nan", "argument --learning-rate: must be a number in (0.0, 10.0], got nan"),
     ("--attention-dropout", "1", "argument --attention-dropout: must be a number in [0.0, 1.0), got 1.0"),
     ("--num-hidden-layers", "two", "argument --num-hidden-layers: must be an integer >= 1, got 'two'")],
)
def test_bad_flags_exit_2_naming_the_flag(tmp_path, flag, value, expected):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\n")
    proc = subprocess.run(
        [sys.executable, "-m", "arlm.pretrain", "--train-files", str(corpus), "--output-dir", str(tmp_path / "out"), flag, value],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr


def test_a_corpus_shorter_than_a_block_is_refused_before_training(tmp_path):
    corpus = tmp_path / "short.txt"
    corpus.write_text("one two three\n")
    with pytest.raises(ValueError, match=r"hold \d+ tokens in 1 documents .* fewer than one block of block_size=64. Fix: lower --block-size"):
        main(["--train-files", str(corpus), "--output-dir", str(tmp_path / "out"), "--block-size", "64", *TINY])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content, expected",
    [(b'{"text": "a"}\n{"text": "b"\n', r"bad.jsonl:2: not a JSON object \(Expecting ',' delimiter"),
     (b'{"text": "a"}\n["a list"]\n', r"bad.jsonl:2: a jsonl row must be a JSON object, got list"),
     (b'{"text": "a"}\n"text"\n', r"bad.jsonl:2: a jsonl row must be a JSON object, got str"),
     (b'{"text": 7}\n', r"bad.jsonl:1: field 'text' must be a string, got int 7"),
     (b'{"body": "a"}\n', r"bad.jsonl:1: jsonl row has no field 'text'"),
     (b'{"text": "caf\xe9"}\n', r"bad.jsonl is not UTF-8 text: line 1, byte offset 13 \(byte 0xe9\)")],
)
def test_bad_jsonl_rows_name_the_file_and_line(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=expected):
        list(iter_documents([path]))


def test_non_utf8_text_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nsecond café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: line 2, byte offset 21 \(byte 0xe9\). Fix: convert it to UTF-8"):
        list(iter_documents([path]))


def test_crlf_and_utf8_text_read_as_before(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_bytes("café\r\n\r\nnaïve\n".encode("utf-8"))
    assert list(iter_documents([path])) == ["café", "naïve"]


@pytest.mark.parametrize("under_a_file", [True, False])
def test_an_output_dir_that_cannot_be_a_directory_exits_2_naming_it(tmp_path, under_a_file):
    """Round 3 leftover: ``--output-dir <a file>/out`` gave a raw ``NotADirectoryError``."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\n")
    output_dir = corpus / "out" if under_a_file else corpus
    proc = subprocess.run(
        [sys.executable, "-m", "arlm.pretrain", "--train-files", str(corpus), "--output-dir", str(output_dir)],
        capture_output=True, text=True, timeout=120,
    )
    expected = f"{corpus} is a file" if under_a_file else f"{corpus} is an existing file, not a directory"
    assert proc.returncode == 2 and f"argument --output-dir: {output_dir}" in proc.stderr and expected in proc.stderr, proc.stderr
