"""Bad arguments of the xLM face (model, sampler, predictor) and bad checkpoint files fail early,
naming the value, instead of raw torch errors, NaN outputs or silently empty text."""

import math

import numpy as np
import pytest
import torch

from arlm.checkpoints.read import CheckpointError, read_checkpoint
from arlm.datamodule_arlm import id_lists_to_tensors, prepare_prefix_ids_arlm
from arlm.network.config import DecoderConfig
from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.predictor_arlm import ARLMPredictor
from arlm.network.sampling import Sampler
from tests.conftest import TINY_MODEL_KWARGS

PAD, BOS = 0, 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(dim_feedforward=0), "dim_feedforward must be a positive integer, got 0"),
    (dict(dim_feedforward=-4), "dim_feedforward must be a positive integer, got -4"),
    (dict(rope_theta=0.0), "rope_theta must be a positive finite number, got 0.0"),
    (dict(rope_theta=-10.0), "rope_theta must be a positive finite number, got -10.0"),
    (dict(rope_theta=math.nan), "rope_theta must be a positive finite number, got nan"),
    (dict(layer_norm_eps=-1.0), "layer_norm_eps must be a positive finite number, got -1.0"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps must be a positive finite number, got 0.0"),
])
def test_model_rejects_bad_sizes_and_constants(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RotaryTransformerARLMModel(**dict(TINY_MODEL_KWARGS, **kwargs))


def test_cross_attention_dim_must_be_positive():
    with pytest.raises(ValueError, match="cross_attention_dim must be a positive integer, got 0"):
        DecoderConfig(vocab_size=57, d_model=32, n_layers=1, n_heads=2, cross_attention=True, cross_attention_dim=0)


@pytest.mark.parametrize("ids, positions, message", [
    (torch.tensor([7, 8, 9]), None, r"token ids must be a 2-D \(batch, seq\) tensor, got shape \(3,\)"),
    (torch.full((1, 2, 3), 7), None, r"token ids must be a 2-D \(batch, seq\) tensor, got shape \(1, 2, 3\)"),
    (torch.tensor([[7, 8]]), torch.tensor([[0.0, 1.0]]), "positions must be an integer tensor, got dtype torch.float32"),
])
def test_model_rejects_bad_input_ranks_and_float_positions(tiny_model, ids, positions, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(ids, positions=positions)


def test_string_p_is_named():
    with pytest.raises(ValueError, match=r"p \(top-p\) must be a number, got '0.9' \(str\)"):
        Sampler("sample_top_p", top_p="0.9")


def _nan_model():
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS).eval()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    return model


@pytest.mark.parametrize("method", ["greedy", "sample_top_p"])
def test_nan_weights_are_reported_for_greedy_and_sampling(simple_tokenizer, method):
    predictor = ARLMPredictor(max_steps=4, max_length=16, tokenizer=simple_tokenizer, model=_nan_model(), sampling_method=method)
    with pytest.raises(ValueError, match="logits for the prompt hold NaN/Inf"):
        predictor.predict(id_lists_to_tensors(prepare_prefix_ids_arlm([[7, 8]], PAD, BOS, truncate=None, add_bos="output")))


def test_sampler_names_nan_logits():
    with pytest.raises(ValueError, match="logits hold NaN/Inf"):
        Sampler("sample")(torch.full((1, 5), float("nan")))


def test_special_ids_outside_the_model_vocabulary_are_named(simple_tokenizer):
    model = RotaryTransformerARLMModel(**dict(TINY_MODEL_KWARGS, num_embeddings=3)).eval()
    predictor = ARLMPredictor(max_steps=4, max_length=16, tokenizer=simple_tokenizer, model=model, sampling_method="greedy")
    with pytest.raises(ValueError, match=r"tokenizer eos_token_id=3 is outside the model's vocabulary \[0, 3\)"):
        predictor.predict(id_lists_to_tensors(prepare_prefix_ids_arlm([[1, 2]], PAD, truncate=None)))


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty \(0 bytes\)"),
    (b"step,loss\n1,2.0\n", r"is not a PyTorch checkpoint \(16 bytes, no zip archive; a text file or another format\?\)"),
])
def test_empty_or_text_file_as_checkpoint_is_named(tmp_path, content, message):
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path} {message}"):
        read_checkpoint(path)


def test_checkpoint_of_another_depth_names_the_missing_weight_and_the_setting():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from arlm.harness_arlm import check_state_dict_shapes

    saved = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS)
    deeper = RotaryTransformerARLMModel(**dict(TINY_MODEL_KWARGS, num_layers=2))
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in saved.state_dict().items()},
        "hyper_parameters": {"model": {"num_layers": 1, "num_embeddings": "${tokenizer:full_vocab_size}"}},
    }
    module = SimpleNamespace(
        state_dict=lambda: {f"model.{k}": v for k, v in deeper.state_dict().items()},
        config=OmegaConf.create({"model": {"num_layers": 2, "num_embeddings": 57}}),
    )
    with pytest.raises(ValueError, match=r"another model size: the configured model has model\.model\.layers\.1\..*which the checkpoint lacks\. The model settings differ: model\.num_layers: checkpoint 1, configured 2\. Fix: pass the checkpoint's values \(model\.num_layers=1\)"):
        check_state_dict_shapes(checkpoint, module)


def test_resume_prefers_a_newer_last_checkpoint_over_a_stale_on_exception_one(tmp_path):
    import os

    from arlm.runtime.checkpoint_io import load_newest_valid, save_atomically

    weights = {"w": torch.zeros(2)}
    save_atomically({"state_dict": weights, "global_step": 5}, tmp_path / "on_exception.ckpt")
    save_atomically({"state_dict": weights, "global_step": 20}, tmp_path / "last.ckpt")
    os.utime(tmp_path / "on_exception.ckpt", (1, 1))
    used, checkpoint = load_newest_valid(tmp_path / "on_exception.ckpt")
    assert used == tmp_path / "last.ckpt" and checkpoint["global_step"] == 20


@pytest.mark.parametrize("kwargs, message", [
    (dict(padding_idx=True), "padding_idx must be in \\[0, vocab_size=57\\), got True"),
    (dict(dropout=False), "dropout must be in \\[0, 1\\), got False"),
    (dict(d_model=True), "d_model must be a positive integer, got True"),
    (dict(rotary_dim=16.0), "rotary_dim must be even"),
])
def test_flags_and_floats_are_not_taken_for_integers(kwargs, message):
    """``bool`` subclasses ``int``: without the check ``padding_idx=True`` would mean id 1."""
    with pytest.raises(ValueError, match=message):
        DecoderConfig(**dict(dict(vocab_size=57, d_model=32, n_layers=1, n_heads=2), **kwargs))


def test_numpy_integers_are_integers():
    """A size read from an array (``np.int64``) is as good as a Python ``int`` everywhere."""
    config = DecoderConfig(vocab_size=np.int64(57), d_model=np.int64(32), n_layers=1, n_heads=np.int64(2), padding_idx=np.int64(0))
    assert config.head_dim == 16 and config.rotary_dim == 16
    assert Sampler("sample_top_k", top_k=np.int64(5)).top_k == 5
    assert ARLMPredictor(max_steps=np.int64(4), max_length=np.int64(16)).max_steps == 4
    assert all(type(v) is int for v in (config.vocab_size, config.d_model, config.n_heads, config.padding_idx, config.rotary_dim))
