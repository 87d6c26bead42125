"""A checkpoint of another model size, or of another network of the same size, fails early in
every job, naming the first mismatch and the fix."""

import json
from pathlib import Path

import pytest

from arlm.checkpoints.read import read_checkpoint
from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, checkpoint_dir, offline_env, run_xlm

pytestmark = pytest.mark.slow

WIDER = [arg if not arg.startswith("model.d_model=") else "model.d_model=64" for arg in TINY_MODEL]
EXPECTED = ("The checkpoint is for another model size: model.", "in the checkpoint but",
            "model.d_model: checkpoint 32, configured 64", "model.d_model=32")
# Same shapes as the trained relu / rotary-16 network: only the recorded settings tell them apart.
OTHER_NETWORK = ["model.activation=gelu", "model.rotary_emb_dim=8"]
JOBS = [
    ["job_type=eval", "+trainer.limit_val_batches=1"],
    ["job_type=generate_arlm", "+generation.device=cpu", "+generation.max_batches=1"],
    ["job_type=train", *TINY_TRAIN],
]


@pytest.fixture(scope="module")
def env(star_data_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("mismatch") / "logs"
    environment = offline_env(star_data_dir, logs)
    run_xlm(["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, *TINY_TRAIN], cwd=REPO_ROOT, env=environment)
    return environment


@pytest.mark.parametrize("job", JOBS)
def test_other_model_size_is_named_with_the_fix(env, job):
    proc = run_xlm([*job, "experiment=star_easy_arlm", *STAR_SIZES, *WIDER], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    for text in EXPECTED:
        assert text in proc.stdout
    assert proc.stdout.count("size mismatch for") == 0


@pytest.mark.parametrize("job", JOBS)
def test_other_activation_and_rotary_size_are_named_with_the_fix(env, job):
    """Before, eval, generate_arlm and resume ran the relu / rotary-16 weights as a gelu /
    rotary-8 network without a word."""
    checkpoints = checkpoint_dir(Path(env["LOG_DIR"]))
    before = {p.name: read_checkpoint(p).contents["global_step"] for p in checkpoints.glob("*.ckpt")}
    proc = run_xlm([*job, "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, *OTHER_NETWORK], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert ("was trained as another network than the configured one: model.activation: checkpoint relu, "
            "configured gelu; model.rotary_emb_dim: checkpoint 16, configured 8") in proc.stdout
    assert "Fix: pass the checkpoint's values (model.activation=relu model.rotary_emb_dim=16)" in proc.stdout
    assert {p.name: read_checkpoint(p).contents["global_step"] for p in checkpoints.glob("*.ckpt")} == before


def test_export_hf_exports_the_recorded_network_and_names_the_configured_differences(env, tmp_path):
    """export_hf builds the network the checkpoint records (what was trained), whatever the
    command configures; the configured settings it does not use are named."""
    checkpoints = checkpoint_dir(Path(env["LOG_DIR"]))
    proc = run_xlm(["job_type=export_hf", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, *OTHER_NETWORK,
                    f"+export_hf.checkpoint_path={checkpoints / 'last.ckpt'}", f"+export_hf.output_dir={tmp_path / 'hf'}"],
                   cwd=REPO_ROOT, env=env)
    assert ("records another network than the configured model (model.activation: checkpoint relu, configured "
            "gelu; model.rotary_emb_dim: checkpoint 16, configured 8); the network it records is the one exported") in proc.stdout
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["hidden_act"] == "relu"


@pytest.mark.parametrize("job", JOBS)
def test_a_checkpoint_scored_or_resumed_on_another_star_seed_is_refused(env, job, tmp_path):
    """Round 4, case 5: eval and generate_arlm with another star_seed scored the checkpoint with
    exit 0 (before the stream seeds, on its own training graphs); resume trained on other data."""
    checkpoints = checkpoint_dir(Path(env["LOG_DIR"]))
    before = {p.name: read_checkpoint(p).contents["global_step"] for p in checkpoints.glob("*.ckpt")}
    other_data = {**env, "DATA_DIR": str(tmp_path / "data")}
    proc = run_xlm([*job, "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, "star_seed=40"], cwd=REPO_ROOT, env=other_data, check=False)
    assert proc.returncode != 0
    assert "was trained on other data than this job configures (datamodule.dataset_managers." in proc.stdout
    assert ".seed: trained with 42, configured 40" in proc.stdout and "Fix: run with the settings it was trained with" in proc.stdout
    assert {p.name: read_checkpoint(p).contents["global_step"] for p in checkpoints.glob("*.ckpt")} == before


def test_resuming_another_run_s_checkpoint_into_a_job_holding_its_own_is_refused(env, tmp_path):
    """Round 4, case 6: the job's own 0-4.ckpt was deleted and the new run saved as last-v1 /
    best-v1, beside the old run's last.ckpt / best.ckpt that resume and eval go on picking."""
    other = checkpoint_dir(Path(env["LOG_DIR"])) / "last.ckpt"
    own = Path(env["LOG_DIR"]) / "mine" / "checkpoints"
    own.mkdir(parents=True)
    (own / "0-4.ckpt").write_bytes(other.read_bytes())
    proc = run_xlm(["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, *TINY_TRAIN, "job_name=mine",
                    f"resume_checkpoint_path={other}"], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert f"resume_checkpoint_path={other} is another run's checkpoint, but checkpointing_dir={own} holds this job's own (0-4.ckpt)" in proc.stdout
    assert sorted(p.name for p in own.iterdir()) == ["0-4.ckpt"]
