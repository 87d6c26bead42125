"""The one checkpoint reader: every kind accepted, read as data, and one message per way a file
cannot be used, whichever kind it is."""

import os

import pytest
import torch
from safetensors.torch import save_file

from arlm.checkpoints.read import READERS, CheckpointError, read_checkpoint, weight_shapes

WEIGHTS = {"model.embed_tokens.weight": torch.ones(3, 2), "lm_head.weight": torch.zeros(3, 2)}


def test_every_kind_reads_into_one_description(tmp_path):
    torch.save({"state_dict": {f"model.{k}": v for k, v in WEIGHTS.items()}, "global_step": 4,
                "hyper_parameters": {"model": {"_target_": "x", "d_model": 2}}}, tmp_path / "run.ckpt")
    torch.save(WEIGHTS, tmp_path / "weights.pt")
    save_file(WEIGHTS, str(tmp_path / "model.safetensors"))
    lightning, torch_file, safetensors = (read_checkpoint(tmp_path / name) for name in ("run.ckpt", "weights.pt", "model.safetensors"))
    assert lightning.lightning and lightning.get("global_step") == 4 and lightning.model_config == {"_target_": "x", "d_model": 2}
    for checkpoint in (lightning, torch_file, safetensors):
        assert checkpoint.weights.keys() == WEIGHTS.keys() and torch.equal(checkpoint.weights["lm_head.weight"], WEIGHTS["lm_head.weight"])
    for model_only in (torch_file, safetensors):
        assert not model_only.lightning and model_only.hyper_parameters == {} and model_only.get("ema") is None
    assert weight_shapes(tmp_path / "model.safetensors") == (False, {name: (3, 2) for name in WEIGHTS})
    assert weight_shapes(tmp_path / "run.ckpt") == (True, {name: (3, 2) for name in WEIGHTS})
    assert [reader.kind for reader in READERS] == ["sharded checkpoint directory", "safetensors file", "torch file"]


@pytest.mark.parametrize("name", ["last.ckpt", "model.safetensors"])
@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "is truncated or corrupt"),
    (lambda data: b"", "(is empty \\(0 bytes\\)|is truncated or corrupt \\(0 bytes)"),
    (lambda data: b"not a checkpoint at all\n", "(is not a PyTorch checkpoint|is truncated or corrupt)"),
])
def test_an_unreadable_file_of_any_kind_is_named_with_what_is_wrong(tmp_path, name, damage, message):
    path = tmp_path / name
    if name.endswith(".ckpt"):
        torch.save({"state_dict": WEIGHTS}, path)
    else:
        save_file(WEIGHTS, str(path))
    path.write_bytes(damage(path.read_bytes()))
    for read in (read_checkpoint, weight_shapes):
        with pytest.raises(CheckpointError, match=f"^{path} {message}"):
            read(path)


def test_a_directory_or_a_missing_path_is_no_checkpoint(tmp_path):
    for path in (tmp_path, tmp_path / "missing.ckpt"):
        with pytest.raises(CheckpointError, match=f"{path} does not exist or is not a file"):
            read_checkpoint(path)


def test_a_file_that_asks_to_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"state_dict": WEIGHTS, "callbacks": RunsCode()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="asks to run or build Python objects that arlm does not load"):
        read_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()
