"""The export directory is written safely: weights-only checkpoint loading, no overwrite without
``overwrite=True``, nothing written on failure, no stale files. No xlm-core needed."""

import logging
import os
import subprocess
import sys

import pytest
import torch

from arlm import RotaryTransformerARLMModel
from arlm.hf.export import export_checkpoint_to_hf
from arlm.hf.xlm_checkpoint import XLM_MODEL_TARGET

from .test_hf_native_export import BASE, word_tokenizer

VOCAB = 54


def write_checkpoint(path, extra=None) -> RotaryTransformerARLMModel:
    torch.manual_seed(0)
    model = RotaryTransformerARLMModel(num_embeddings=VOCAB, **BASE)
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model": {"_target_": XLM_MODEL_TARGET, "num_embeddings": VOCAB, **BASE}},
        **(extra or {}),
    }
    torch.save(checkpoint, path)
    return model


class RunsCode:
    """Unpickling this runs ``os.system`` (a crafted checkpoint payload)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_pickle_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    write_checkpoint(tmp_path / "evil.ckpt", extra={"callbacks": RunsCode(marker)})
    with pytest.raises(ValueError, match="asks to run or build Python objects that arlm does not load"):
        export_checkpoint_to_hf(tmp_path / "evil.ckpt", tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_existing_file_or_non_empty_directory_is_refused_without_overwrite(tmp_path):
    write_checkpoint(tmp_path / "last.ckpt")
    target_file = tmp_path / "file"
    target_file.write_text("keep me")
    with pytest.raises(ValueError, match="is an existing file; .*overwrite=True"):
        export_checkpoint_to_hf(tmp_path / "last.ckpt", target_file)
    assert target_file.read_text() == "keep me"
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="directory is not empty"):
        export_checkpoint_to_hf(tmp_path / "last.ckpt", full)
    assert [p.name for p in full.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    export_checkpoint_to_hf(tmp_path / "last.ckpt", empty)
    assert (empty / "model.safetensors").is_file()


def test_overwrite_replaces_the_directory_without_stale_files(tmp_path):
    write_checkpoint(tmp_path / "last.ckpt")
    out = tmp_path / "out"
    export_checkpoint_to_hf(tmp_path / "last.ckpt", out, tokenizer=word_tokenizer())
    assert (out / "tokenizer.json").is_file()
    export_checkpoint_to_hf(tmp_path / "last.ckpt", out, overwrite=True, architecture="arlow")
    names = {p.name for p in out.iterdir()}
    assert "tokenizer.json" not in names and "config.json" in names  # no stale tokenizer
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no temp dirs left
    file_target = tmp_path / "was_a_file"
    file_target.write_text("old")
    export_checkpoint_to_hf(tmp_path / "last.ckpt", file_target, overwrite=True)
    assert (file_target / "config.json").is_file()


def test_unconvertible_tokenizer_writes_nothing(tmp_path):
    write_checkpoint(tmp_path / "last.ckpt")

    class NotAFastTokenizer:
        pass

    with pytest.raises(ValueError, match="cannot convert a NotAFastTokenizer"):
        export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "out", tokenizer=NotAFastTokenizer())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_bad_architecture_is_refused_before_anything(tmp_path):
    write_checkpoint(tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=r"architecture must be one of \('auto', 'native', 'arlow'\), got 'gpt2'"):
        export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "out", architecture="gpt2")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_export_gets_the_permissions_of_a_plain_save_pretrained_under_the_umask(tmp_path, mask):
    write_checkpoint(tmp_path / "last.ckpt")
    out = tmp_path / "out"
    old_mask = os.umask(mask)
    try:
        export_checkpoint_to_hf(tmp_path / "last.ckpt", out, tokenizer=word_tokenizer())
    finally:
        os.umask(old_mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {p.name: 0o666 & ~mask for p in out.iterdir()}


def test_export_removes_what_a_killed_export_left_beside_it_and_says_so_once(tmp_path, caplog):
    write_checkpoint(tmp_path / "last.ckpt")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".out.partial-{dead.stdout.strip()}-0a1b2c"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"x" * 1000)
    with caplog.at_level(logging.INFO):
        export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "out"]
    assert [r.getMessage() for r in caplog.records if leftover.name in r.getMessage()] == [
        f"Removed 1 temporaries left in {tmp_path} by writers that died: {leftover.name}"
    ]
