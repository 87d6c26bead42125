"""What a checkpoint must agree on before a job uses it: the network it was trained as, a resume
step within ``trainer.max_steps``, and finite EMA weights when resume picks it automatically."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from arlm.checkpoints.read import CheckpointError
from arlm.runtime.checkpoint_io import load_newest_valid
from arlm.checkpoints.network import NetworkMismatchError, check_same_network, network_differences, warn_if_other_network
from arlm.runtime.preflight import fresh_start_problem
from arlm.runtime.resume import ResumePastMaxStepsError, check_resume_step

OLD_CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "star_easy_tiny_c4c0ecd.ckpt"
TARGET = "arlm.model_arlm.RotaryTransformerARLMModel"
SAVED = {
    "_target_": TARGET, "num_embeddings": "${tokenizer:full_vocab_size}", "d_model": 32, "num_layers": 1,
    "nhead": 2, "padding_idx": "${tokenizer:pad_token_id}", "dim_feedforward": 128, "dropout": 0.0,
    "activation": "relu", "layer_norm_eps": 1e-05, "rotary_emb_dim": 16, "max_length": 36,
    "force_flash_attn": False, "final_layer_without_normalization": False,
}


def test_same_network_passes_with_defaults_derived_and_harmless_keys_changed():
    configured = OmegaConf.create({
        **SAVED, "num_embeddings": 27, "padding_idx": 0, "max_length": 512, "dropout": 0.1,
        "dim_feedforward": None, "num_kv_heads": 2, "norm": "layernorm", "rope_theta": 10000, "bias": True,
    })
    assert network_differences(SAVED, configured) == []
    check_same_network(SAVED, configured, "ckpt")


def test_the_recorded_config_of_the_old_checkpoint_matches_its_own_network():
    saved = torch.load(OLD_CHECKPOINT, map_location="cpu", weights_only=True)["hyper_parameters"]["model"]
    check_same_network(saved, {**SAVED, "num_embeddings": 27, "padding_idx": 0}, OLD_CHECKPOINT)


@pytest.mark.parametrize("changes, expected, fix", [
    ({"activation": "gelu", "rotary_emb_dim": 8},
     "model.activation: checkpoint relu, configured gelu; model.rotary_emb_dim: checkpoint 16, configured 8",
     "model.activation=relu model.rotary_emb_dim=16"),
    ({"rope_theta": 500.0}, "model.rope_theta: checkpoint 10000.0, configured 500.0", "model.rope_theta=10000.0"),
    ({"final_layer_without_normalization": True},
     "model.final_layer_without_normalization: checkpoint False, configured True",
     "model.final_layer_without_normalization=false"),
    ({"nhead": 4}, "model.nhead: checkpoint 2, configured 4", "model.nhead=2"),
    ({"layer_norm_eps": 1e-6}, "model.layer_norm_eps: checkpoint 1e-05, configured 1e-06", "model.layer_norm_eps=1e-05"),
])
def test_another_network_is_refused_naming_each_key_both_values_and_the_fix(changes, expected, fix):
    with pytest.raises(NetworkMismatchError) as error:
        check_same_network(SAVED, OmegaConf.create({**SAVED, **changes}), "/run/last.ckpt")
    message = str(error.value)
    assert message.startswith("/run/last.ckpt was trained as another network than the configured one: " + expected)
    assert f"Fix: pass the checkpoint's values ({fix})" in message


def test_no_recorded_config_or_another_model_class_is_not_compared():
    assert network_differences(None, SAVED) == []
    assert network_differences({**SAVED, "_target_": "other.Model", "activation": "gelu"}, SAVED) == []


def test_resume_step_beyond_max_steps_is_refused():
    check_resume_step({"global_step": 40}, 40, "last.ckpt")  # a finished run re-run: test pass only
    check_resume_step({"global_step": 40}, -1, "last.ckpt")
    with pytest.raises(ResumePastMaxStepsError, match=(
        r"last.ckpt is at global step 40, past trainer.max_steps=10 of this command: resuming it would "
        r"train nothing .* Fix: raise trainer.max_steps above 40 .* another job_name=")):
        check_resume_step({"global_step": 40}, 10, "last.ckpt")


def test_a_fresh_start_over_existing_checkpoints_is_refused(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    assert fresh_start_problem("train", False, checkpoints) is None  # not made yet
    checkpoints.mkdir()
    (checkpoints / "notes.txt").write_text("kept")
    assert fresh_start_problem("train", False, checkpoints) is None  # no checkpoint in it
    for name in ("last.ckpt", "best.ckpt", "0-2.ckpt", "0-4.ckpt", "0-6.ckpt"):
        (checkpoints / name).write_bytes(b"x")
    problem = fresh_start_problem("train", False, checkpoints)
    assert problem.startswith(f"checkpointing_dir={checkpoints} already holds checkpoints of an earlier run "
                              "(0-2.ckpt, 0-4.ckpt, 0-6.ckpt, best.ckpt and 1 more)")
    assert "would overwrite them. Fix: leave out resume_from_checkpoint=false" in problem
    assert fresh_start_problem("train", True, checkpoints) is None  # resumes them
    assert fresh_start_problem("eval", False, checkpoints) is None  # writes no checkpoint


def _checkpoint(step, ema_value=1.0):
    return {
        "global_step": step, "state_dict": {"model.w": torch.ones(2)},
        "ema": {"decay": 0.9, "num_updates": step, "shadow_params": [torch.full((2,), ema_value)], "collected_params": []},
    }


def test_automatic_resume_skips_a_checkpoint_whose_ema_is_nan(tmp_path, caplog):
    torch.save(_checkpoint(2), tmp_path / "0-2.ckpt")
    torch.save(_checkpoint(4, float("nan")), tmp_path / "last.ckpt")
    path, checkpoint = load_newest_valid(tmp_path / "last.ckpt")
    assert path == tmp_path / "0-2.ckpt" and checkpoint["global_step"] == 2
    assert f"{tmp_path / 'last.ckpt'} holds NaN/Inf EMA weights (ema.shadow_params[0])" in caplog.text
    torch.save(_checkpoint(2, float("inf")), tmp_path / "0-2.ckpt")
    with pytest.raises(CheckpointError, match="No usable checkpoint in .*EMA weights"):
        load_newest_valid(tmp_path / "last.ckpt")


def test_an_explicitly_named_checkpoint_with_nan_ema_still_loads_its_raw_weights(tmp_path):
    torch.save(_checkpoint(4, float("nan")), tmp_path / "diverged.ckpt")
    assert load_newest_valid(tmp_path / "diverged.ckpt")[1]["global_step"] == 4


def test_export_warns_naming_the_configured_settings_it_does_not_use():
    with pytest.warns(UserWarning, match=(
            r"ck records another network than the configured model \(model.activation: checkpoint relu, "
            r"configured gelu\); the network it records is the one exported")):
        warn_if_other_network(SAVED, {**SAVED, "activation": "gelu"}, "ck")
