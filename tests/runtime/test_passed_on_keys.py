"""Round-4 cryptic classes checked without the CLI (the CLI: tests/e2e/test_cryptic_cli.py):
values of xlm-core keys arlm passes on, ``generation.device``, and model-only weight files."""

import struct

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from arlm.jobs.generate import resolve_device
from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.runtime.preflight import config_problems
from arlm.harness_arlm import check_model_only_weights

TINY = dict(num_embeddings=27, d_model=32, num_layers=1, nhead=2, rotary_emb_dim=16)


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"trainer": {"accumulate_grad_batches": 0}}, "trainer.accumulate_grad_batches=0 (int) must be a positive integer"),
        ({"seed": 99999999999}, "seed=99999999999 (int) must be an integer >= 0 and <= 4294967295"),
        ({"seed": -1}, "seed=-1 (int) must be an integer >= 0"),
        ({"star_seed": "abc"}, "star_seed='abc' (str) must be an integer >= 0"),
        ({"star_seed": 2**32 - 1}, "star_seed=4294967295"),
        ({"star_split_sizes": {"validation": 0}}, "star_split_sizes.validation=0 (int) must be a positive integer"),
        ({"callbacks": {"ema": {"decay": 1.5}}}, "callbacks.ema.decay=1.5 must be a number in (0, 1)"),
        ({"callbacks": {"ema": {"decay": 0}}}, "callbacks.ema.decay=0 must be a number in (0, 1)"),
        ({"callbacks": {"ema": {"decay": True}}}, "callbacks.ema.decay=True must be a number in (0, 1)"),
        ({"callbacks": {"ema": {"apply_ema_at_train_end": "no"}}}, "callbacks.ema.apply_ema_at_train_end='no' must be true or false"),
        ({"predictor": {"p": 0}}, "predictor.p=0 must be a number in (0, 1]"),
        ({"predictor": {"temperature": -1.0}}, "predictor.temperature=-1.0 must be a positive finite number"),
        ({"predictor": {"top": 0}}, "predictor.top=0 (int) must be a positive integer"),
        ({"predictor": {"max_length": 10}, "block_size": 36}, "predictor.max_length=10 is shorter than the rows of the data"),
        ({"generation": {"device": "gpu"}}, "generation.device='gpu' is not a device name"),
        ({"generation": {"device": "tpu"}}, "generation.device='tpu' is not a device name"),
        ({"generation": {"device": "meta"}}, "generation.device='meta' is not a device name"),
        ({"generation": {"device": "cuda:x"}}, "generation.device='cuda:x' is not a device name"),
    ],
)
def test_passed_on_keys_are_refused_naming_the_key(override, expected):
    problems = config_problems(OmegaConf.create({"job_name": "run", **override}))
    assert any(expected in problem for problem in problems), problems


def test_valid_values_pass():
    cfg = {"job_name": "run", "seed": 2**32 - 1, "star_seed": 0, "callbacks": {"ema": {"decay": 0.9999}},
           "predictor": {"p": 1, "max_length": 36}, "block_size": 36, "generation": {"device": "cpu"}}
    assert config_problems(OmegaConf.create(cfg)) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_a_cuda_index_without_cuda_is_refused_by_the_job_too():
    with pytest.raises(ValueError, match=r"generation.device='cuda:9' but CUDA is not available here"):
        resolve_device("cuda:9")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_index_beyond_the_devices_is_refused():
    with pytest.raises(ValueError, match=r"this machine has \d+ CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.fixture
def weights(tmp_path):
    model = RotaryTransformerARLMModel(**TINY)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model, path


def _check(model, path, key="model_only_checkpoint_path", **extra):
    cfg = OmegaConf.create(extra)
    OmegaConf.update(cfg, key, str(path), force_add=True)
    check_model_only_weights(model, cfg)


def test_good_weights_pass(weights):
    _check(*weights)


@pytest.mark.parametrize("damage, expected", [
    (lambda data: data[: len(data) // 2], "incomplete metadata"),
    (lambda data: struct.pack("<Q", 2**62) + data[8:], "header too large"),
    (lambda data: b"", "header too small"),
])
def test_unreadable_safetensors_are_named_with_the_key(weights, damage, expected):
    model, path = weights
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=rf"eval.model_only_checkpoint_path={path} cannot be read as model weights: .*{expected}"):
        _check(model, path, key="eval.model_only_checkpoint_path")


def test_weights_of_another_size_name_the_first_weight(weights, tmp_path):
    model, path = weights
    other = RotaryTransformerARLMModel(**{**TINY, "d_model": 64, "rotary_emb_dim": 16})
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, path)
    with pytest.raises(ValueError, match=r"does not fit the configured model: [a-z_.]+weight has shape \(27, 64\) in the file but \(27, 32\) in the configured model"):
        _check(model, path)


def test_missing_weights_are_refused_only_when_strict(weights):
    model, path = weights
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "layers.0.mlp" not in k}
    save_file(state, path)
    with pytest.raises(ValueError, match="the file lacks"):
        _check(model, path)
    _check(model, path, strict_model_only_load=False)


def test_a_lightning_checkpoint_given_as_model_only_weights_says_where_it_goes(weights, tmp_path):
    model, _ = weights
    path = tmp_path / "last.pt"
    torch.save({"state_dict": model.state_dict(), "global_step": 4}, path)
    with pytest.raises(ValueError, match="is a Lightning checkpoint .* goes to ckpt_path"):
        _check(model, path, key="generation.model_only_checkpoint_path")


def test_from_pretrained_names_a_truncated_file(tmp_path):
    model = RotaryTransformerARLMModel(**TINY)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{tmp_path}: its model.safetensors cannot be read"):
        RotaryTransformerARLMModel.from_pretrained(tmp_path)
