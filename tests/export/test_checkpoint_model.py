"""The export reads the checkpoint with the one reader and loads its weights as they are: no
model is initialised at random on the way, and a broken file is named, whatever its kind."""

import pytest
import torch
from safetensors.torch import save_file

from arlm.export.exporter import export_checkpoint_to_hf
from arlm.model_arlm import XLM_MODEL_TARGET
from tests.export.test_native import BASE, LLAMA, word_tokenizer, xlm_model

VOCAB = 54


@pytest.mark.parametrize("overrides, architecture", [({}, "auto"), (LLAMA, "auto"), ({}, "arlow")])
def test_the_export_draws_no_random_weights(tmp_path, overrides, architecture):
    """Three randomly initialised models (xLM, Arlow, native) were built to copy one state dict."""
    xlm = xlm_model(VOCAB, **overrides)
    torch.save({"state_dict": {f"model.{k}": v for k, v in xlm.state_dict().items()},
                "hyper_parameters": {"model": {"_target_": XLM_MODEL_TARGET, "num_embeddings": VOCAB, **BASE, **overrides}}},
               tmp_path / "last.ckpt")
    before = torch.random.get_rng_state()
    exported = export_checkpoint_to_hf(tmp_path / "last.ckpt", tmp_path / "hf", word_tokenizer(), architecture=architecture)
    assert torch.equal(torch.random.get_rng_state(), before)
    ids = torch.randint(4, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, xlm(ids), atol=1e-5, rtol=0)


def test_a_truncated_model_only_safetensors_file_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(xlm_model(VOCAB).state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{path} is truncated or corrupt \(100 bytes, not a complete safetensors file\)"):
        export_checkpoint_to_hf(path, tmp_path / "hf", model_config={"_target_": XLM_MODEL_TARGET, "num_embeddings": VOCAB, **BASE})
    assert not (tmp_path / "hf").exists()
