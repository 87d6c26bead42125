"""The export directory is written safely: weights-only checkpoint loading, no overwrite without
``overwrite=True``, nothing written on failure, no stale files. No xlm-core needed."""

import logging
import re
import os
import subprocess
import sys

import pytest
import torch

from arlm import RotaryTransformerARLMModel
from arlm.export.exporter import export_checkpoint_to_hf
from arlm.model_arlm import XLM_MODEL_TARGET

from tests.export.test_native import BASE, word_tokenizer

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


@pytest.mark.parametrize("layout", ["git repository", "project", "file", "export plus a note", "link to an export"])
def test_overwrite_replaces_only_an_earlier_export(tmp_path, layout):
    write_checkpoint(tmp_path / "last.ckpt")
    target = tmp_path / "target"
    if layout == "file":
        target.write_text("keep me")
    elif layout == "link to an export":
        export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "export")
        target.symlink_to(tmp_path / "export")
    else:
        target.mkdir()
        if layout == "git repository":
            (target / ".git").mkdir()
            (target / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        if layout == "export plus a note":
            export_checkpoint_to_hf(tmp_path / "last.ckpt", target, overwrite=True)
        (target / ("notes.txt" if layout != "project" else "train.py")).write_text("keep me")
    before = sorted(str(p) for p in target.rglob("*")) if target.is_dir() else None
    with pytest.raises(ValueError, match=f"output_dir {target} is not an earlier export .*overwrite=True replaces only"):
        export_checkpoint_to_hf(tmp_path / "last.ckpt", target, overwrite=True)
    if layout == "file":
        assert target.read_text() == "keep me"
    else:
        assert sorted(str(p) for p in target.rglob("*")) == before


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


def test_output_dir_that_is_or_holds_the_checkpoint_or_the_run_s_checkpoints_is_refused(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_checkpoint(checkpoints / "last.ckpt")
    (checkpoints / "best.ckpt").write_bytes((checkpoints / "last.ckpt").read_bytes())
    before = sorted((p.name, p.stat().st_size) for p in checkpoints.iterdir())
    cases = [
        (checkpoints / "last.ckpt", f"is the checkpoint {checkpoints / 'last.ckpt'} being exported"),
        (checkpoints, f"contains the checkpoint {checkpoints / 'last.ckpt'} being exported"),
        (tmp_path / "run", f"contains the checkpoint {checkpoints / 'last.ckpt'} being exported"),
    ]
    for output_dir, refusal in cases:
        with pytest.raises(ValueError, match=re.escape(f"output_dir {output_dir} {refusal}")):
            export_checkpoint_to_hf(checkpoints / "last.ckpt", output_dir, overwrite=True)
    with pytest.raises(ValueError, match=re.escape(f"output_dir {checkpoints} is a checkpoint directory (it holds")):
        export_checkpoint_to_hf(_copy(checkpoints / "last.ckpt", tmp_path / "copy.ckpt"), checkpoints, overwrite=True)
    with pytest.raises(ValueError, match=re.escape(f"output_dir {tmp_path / 'run'} contains the checkpoint directory {checkpoints}")):
        export_checkpoint_to_hf(tmp_path / "copy.ckpt", tmp_path / "run", overwrite=True)
    assert sorted((p.name, p.stat().st_size) for p in checkpoints.iterdir()) == before
    export_checkpoint_to_hf(checkpoints / "last.ckpt", checkpoints / "hf")  # a new directory beside them deletes nothing
    export_checkpoint_to_hf(checkpoints / "last.ckpt", tmp_path / "run" / "hf")
    assert sorted((p.name, p.stat().st_size) for p in checkpoints.iterdir() if p.suffix == ".ckpt") == before


def _copy(source, target):
    target.write_bytes(source.read_bytes())
    return target


def test_output_dir_in_or_over_a_data_cache_is_refused(tmp_path):
    data = tmp_path / "work" / "data"
    (data / "dhruveshpatel" / "star-small").mkdir(parents=True)
    write_checkpoint(tmp_path / "last.ckpt", extra={"hyper_parameters": {
        "model": {"_target_": XLM_MODEL_TARGET, "num_embeddings": VOCAB, **BASE},
        "paths": {"data_dir": str(data)},
    }})
    for output_dir, relation in [(data, "is"), (data / "hf", "lies inside"), (tmp_path / "work", "contains")]:
        with pytest.raises(ValueError, match=re.escape(f"output_dir {output_dir} {relation} the data cache directory {data}")):
            export_checkpoint_to_hf(tmp_path / "last.ckpt", output_dir, overwrite=True)
    other = tmp_path / "other_cache"
    with pytest.raises(ValueError, match=re.escape(f"lies inside the data cache directory {other}")):
        export_checkpoint_to_hf(tmp_path / "last.ckpt", other / "hf", protected_dirs=[other])
    assert (data / "dhruveshpatel" / "star-small").is_dir() and not (data / "hf").exists()


@pytest.mark.parametrize("which", ["raw", "ema", "both"])
def test_nan_or_inf_weights_are_refused_naming_the_tensor_and_the_fix(tmp_path, which):
    ExponentialMovingAverage = pytest.importorskip("torch_ema").ExponentialMovingAverage
    torch.manual_seed(0)
    model = RotaryTransformerARLMModel(num_embeddings=VOCAB, **BASE)
    ema = ExponentialMovingAverage([p for p in model.parameters() if p.requires_grad], decay=0.5)
    with torch.no_grad():
        if which in ("ema", "both"):
            ema.shadow_params[3][0] = float("nan")
        if which in ("raw", "both"):
            model.model.layers[0].mlp.up_proj.weight[1, 2] = float("inf")
    torch.save({
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model": {"_target_": XLM_MODEL_TARGET, "num_embeddings": VOCAB, **BASE}},
        "ema": ema.state_dict(),
    }, tmp_path / "bad.ckpt")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if which == "raw":
        with pytest.raises(ValueError, match=re.escape(
            "the raw weights hold NaN or Inf values, first in tensor 'model.layers.0.mlp.up_proj.weight' (1 of ")):
            export_checkpoint_to_hf(tmp_path / "bad.ckpt", tmp_path / "out", apply_ema=False)
        export_checkpoint_to_hf(tmp_path / "bad.ckpt", tmp_path / "out")  # the finite EMA weights are exported
    else:
        with pytest.raises(ValueError, match=f"EMA weights.* first in tensor '{re.escape(names[3])}' .*Fix: " + (
            re.escape("only the EMA weights are bad; export the raw weights, which are finite, with apply_ema=False")
            if which == "ema" else "the run diverged")):
            export_checkpoint_to_hf(tmp_path / "bad.ckpt", tmp_path / "out")
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [("overwrite", "no"), ("overwrite", 1), ("apply_ema", "false"), ("apply_ema", 0)])
def test_flags_that_are_not_booleans_are_refused_before_anything(tmp_path, flag, value):
    write_checkpoint(tmp_path / "last.ckpt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match=re.escape(f"{flag} must be True or False, got {type(value).__name__} {value!r}")):
        export_checkpoint_to_hf(tmp_path / "last.ckpt", out, **{flag: value})
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_a_plain_fast_tokenizer_gives_the_recorded_vocabulary_placeholder(tmp_path):
    """Round 4, cryptic: a checkpoint recording ``num_embeddings: ${tokenizer:full_vocab_size}``
    exported with a plain ``PreTrainedTokenizerFast`` (no ``full_vocab_size``) raised ``AttributeError``."""
    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    model = RotaryTransformerARLMModel(num_embeddings=len(tokenizer), **BASE)
    torch.save({
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model": {"_target_": XLM_MODEL_TARGET, "num_embeddings": "${tokenizer:full_vocab_size}", **BASE}},
    }, tmp_path / "last.ckpt")
    exported = export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "out", tokenizer=tokenizer)
    assert exported.config.vocab_size == len(tokenizer)


def test_output_dir_dot_in_an_empty_directory_exports_there(tmp_path, monkeypatch):
    """Round 4, cryptic: ``output_dir=.`` (the empty directory the user stands in)."""
    write_checkpoint(tmp_path / "last.ckpt")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    export_checkpoint_to_hf(tmp_path / "last.ckpt", ".", tokenizer=word_tokenizer())
    assert (here / "config.json").is_file() and "from_pretrained('here')" in (here / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "last.ckpt"]
