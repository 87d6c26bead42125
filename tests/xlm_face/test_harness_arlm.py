"""Vocabulary checks of ARLMHarness and the helpers of the generate_arlm job."""

import pytest
import torch
from omegaconf import OmegaConf

from arlm.harness_arlm import ARLMHarness, check_checkpoint_vocabulary, check_model_covers_tokenizer
from arlm.jobs.generate import check_checkpoint_argument, exact_match_summary, resolve_device
from arlm.model_arlm import RotaryTransformerARLMModel
from tests.conftest import TINY_MODEL_KWARGS, VOCAB_SIZE


def _model(vocab):
    return RotaryTransformerARLMModel(**{**TINY_MODEL_KWARGS, "num_embeddings": vocab})


def test_model_covering_the_tokenizer_passes(simple_tokenizer):
    check_model_covers_tokenizer(_model(VOCAB_SIZE), simple_tokenizer)
    check_model_covers_tokenizer(_model(VOCAB_SIZE + 7), simple_tokenizer)  # spare rows are fine


def test_model_smaller_than_tokenizer_is_refused(simple_tokenizer):
    with pytest.raises(ValueError, match=f"model.num_embeddings=40 is smaller .* {VOCAB_SIZE} ids.*at least {VOCAB_SIZE}"):
        check_model_covers_tokenizer(_model(40), simple_tokenizer)


def test_checkpoint_vocabulary_must_match_the_model(simple_tokenizer):
    model = _model(VOCAB_SIZE)
    check_checkpoint_vocabulary({"model.lm_head.weight": torch.zeros(VOCAB_SIZE, 32)}, model, simple_tokenizer)
    with pytest.raises(ValueError, match=f"vocabulary of 27 ids, but the configured model has {VOCAB_SIZE}"):
        check_checkpoint_vocabulary({"model.lm_head.weight": torch.zeros(27, 32)}, model, simple_tokenizer)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="generation.device='gpu0' is not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here; use generation.device=cpu"):
            resolve_device("cuda")


def test_missing_checkpoint_argument_is_named(tmp_path):
    cfg = OmegaConf.create({"checkpointing_dir": "logs/x/checkpoints", "generation": {"ckpt_path": str(tmp_path / "no.ckpt")}})
    with pytest.raises(FileNotFoundError, match=r"generation.ckpt_path=.*no.ckpt does not exist.*logs/x/checkpoints/best.ckpt"):
        check_checkpoint_argument(cfg)
    (tmp_path / "no.ckpt").write_bytes(b"")
    check_checkpoint_argument(cfg)
    check_checkpoint_argument(OmegaConf.create({"checkpointing_dir": "c"}))


def test_exact_match_summary():
    rows = [{"generated_text": "1 2", "truth": "1 2"}, {"generated_text": "1 3", "truth": "1 2"}]
    assert exact_match_summary(rows) == "; exact match 1/2 (50.0%)"
    assert exact_match_summary([{"generated_text": "x", "truth": ""}]) == ""


def test_loading_a_checkpoint_needs_the_commands_config_and_never_the_recorded_one(tmp_path):
    """The module is built from the command's composed config; the ``_target_``s a checkpoint
    records are data, never instantiated (every xlm-core job passes ``cfg``)."""
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": {"_target_": "os.system"}}}, path)
    with pytest.raises(TypeError, match=r"needs cfg=<the composed config of the command>: the module is built from it, never"):
        ARLMHarness.load_from_checkpoint(path)


@pytest.mark.parametrize("target", ["builtins.open", "io.open", "torch.save", "numpy.savetxt"])
def test_a_checkpoint_naming_a_file_writer_writes_nothing_through_either_loader(tmp_path, target):
    """Round 4, case 1: a crafted ``hyper_parameters`` that would truncate a file when
    instantiated, through Lightning's ``load_from_checkpoint`` and xlm-core's ``from_checkpoint``."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    payload = {"_target_": target, "_args_": [str(victim), "w"]}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": payload, "lightning_module": payload}}, path)
    for load in (ARLMHarness.load_from_checkpoint, ARLMHarness.from_checkpoint):
        with pytest.raises(TypeError, match="never from the _target_s a checkpoint records"):
            load(path)
    assert victim.read_text() == "keep me"
