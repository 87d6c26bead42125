"""``xlm -m`` sweeps give every job its own run directory: job 1 of ``optimizer.lr=0.001,0.01``
trains at its own learning rate instead of resuming job 0's finished checkpoint, and an eval sweep
over the same values evaluates each job's own checkpoints."""

from pathlib import Path

import pytest

from arlm.checkpoints.read import read_checkpoint
from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, offline_env, run_xlm

pytestmark = pytest.mark.slow
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]
JOB_NAME = "star_easy__arlm_seq2seq__rotary_transformer_tiny_arlm__debug-False"


def test_each_job_of_a_sweep_trains_and_is_evaluated_in_its_own_run_directory(star_data_dir, tmp_path):
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    out = run_xlm(["-m", "job_type=train", *STAR, *TINY_TRAIN, "optimizer.lr=0.001,0.01"], cwd=REPO_ROOT, env=env).stdout
    assert "Restoring states from the checkpoint" not in out
    for lr in (0.001, 0.01):
        last = logs / f"{JOB_NAME}__optimizer.lr={lr}" / "checkpoints" / "last.ckpt"
        checkpoint = read_checkpoint(last).contents
        assert checkpoint["global_step"] == 4
        assert checkpoint["hyper_parameters"]["optimizer"]["lr"] == lr
        assert checkpoint["optimizer_states"][0]["param_groups"][0]["initial_lr"] == lr
    assert not (logs / JOB_NAME / "checkpoints").exists()

    out = run_xlm(["-m", "job_type=eval", *STAR, "+trainer.limit_val_batches=1", "optimizer.lr=0.001,0.01"],
                  cwd=REPO_ROOT, env=env).stdout
    for lr in (0.001, 0.01):
        assert f"Loading model from full checkpoint: {logs / f'{JOB_NAME}__optimizer.lr={lr}' / 'checkpoints'}" in out


def test_a_sweep_over_settings_that_do_not_name_a_run_keeps_the_job_name(star_data_dir, tmp_path):
    logs = tmp_path / "logs"
    env = offline_env(star_data_dir, logs)
    run_xlm(["job_type=train", *STAR, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    out = run_xlm(["-m", "job_type=eval", *STAR, "+trainer.limit_val_batches=1", "+eval.split=validation,test"],
                  cwd=REPO_ROOT, env=env).stdout
    assert out.count(f"Loading model from full checkpoint: {logs / JOB_NAME / 'checkpoints'}") == 2
    assert sorted(p.name for p in Path(logs).iterdir()) == [JOB_NAME]


def test_a_sweep_with_one_output_dir_for_every_job_is_refused_before_any_job(star_data_dir, tmp_path):
    """Before, both jobs wrote ``<shared>/checkpoints`` and job 1 resumed job 0's finished run."""
    shared = tmp_path / "shared"
    env = offline_env(star_data_dir, tmp_path / "logs")
    proc = run_xlm(["-m", "job_type=train", *STAR, *TINY_TRAIN, "optimizer.lr=0.001,0.01", f"paths.output_dir={shared}"],
                   cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert f"SweepRefused: xlm -m sweeps optimizer.lr, but paths.output_dir={shared} is one directory for every job" in proc.stdout
    assert not shared.exists()


def _experiment_dir(tmp_path, name, body):
    """A ``--config-dir`` holding ``experiment/<name>.yaml``: star_easy_arlm plus ``body``."""
    experiments = tmp_path / "configs" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / f"{name}.yaml").write_text(f"# @package _global_\ndefaults:\n  - star_easy_arlm\n  - _self_\n{body}")
    return tmp_path / "configs"


def test_a_fixed_output_dir_in_an_experiment_file_is_refused_and_a_per_job_checkpointing_dir_is_not(star_data_dir, tmp_path):
    """Round 4, case 4: decided on the composed config of the sweep, not on its command line."""
    shared = tmp_path / "shared"
    env = offline_env(star_data_dir, tmp_path / "logs")
    config_dir = _experiment_dir(tmp_path, "fixed_out", f"paths:\n  output_dir: {shared}\n")
    sweep = ["-m", "job_type=train", *STAR_SIZES, *TINY_MODEL, *TINY_TRAIN, "optimizer.lr=0.001,0.01"]
    proc = run_xlm([f"--config-dir={config_dir}", *sweep, "experiment=fixed_out"], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert f"SweepRefused: xlm -m sweeps optimizer.lr, but paths.output_dir={shared} is one directory for every job" in proc.stdout
    assert not shared.exists()
    # seed=abc stops job 0 at its own preflight, cheaply, once the sweep's check has let it start
    proc = run_xlm([*sweep, "experiment=star_easy_arlm", "checkpointing_dir=${paths.output_dir}/ck", "seed=abc"],
                   cwd=REPO_ROOT, env=env, check=False)
    assert "SweepRefused" not in proc.stdout and "seed='abc' (str) must be an integer" in proc.stdout, proc.stdout[-3000:]
