"""Which swept keys name the jobs of an ``xlm -m`` sweep (the CLI behaviour: tests/e2e/test_multirun_cli.py)."""

import pytest
from omegaconf import OmegaConf

from arlm.runtime.multirun import MultirunJobNames, swept_run_keys
from arlm.runtime.preflight import JobRefused


def test_swept_keys_that_name_a_run():
    task = ["job_type=train", "experiment=star_easy_arlm", "optimizer.lr=0.001,0.01", "+trainer.limit_val_batches=1,2",
            "model=rotary_transformer_tiny_arlm,rotary_transformer_small_arlm", "seed=range(1,3)"]
    assert swept_run_keys(task) == ["optimizer.lr", "trainer.limit_val_batches", "model", "seed"]
    assert swept_run_keys(task, excluded=["seed", "model"]) == ["optimizer.lr", "trainer.limit_val_batches"]


def test_swept_keys_that_do_not_name_a_run():
    task = ["job_type=train,eval", "job_name=a,b", "+eval.split=validation,test", "+generation.max_batches=1,2",
            "paths.log_dir=x,y", "optimizer.lr=0.001"]
    assert swept_run_keys(task) == []


def test_a_swept_value_with_a_slash_is_refused_naming_the_key_and_the_fix():
    with pytest.raises(JobRefused, match=(
            r"sweeps resume_checkpoint_path over '/runs/a.ckpt', which holds '/'.*"
            r"Fix: leave resume_checkpoint_path out of the job names with "
            r"'hydra.job.config.override_dirname.exclude_keys=\[resume_checkpoint_path\]'")):
        swept_run_keys(["resume_checkpoint_path=/runs/a.ckpt,/runs/b.ckpt"])
    assert swept_run_keys(["resume_checkpoint_path=/runs/a.ckpt,/runs/b.ckpt"], excluded=["resume_checkpoint_path"]) == []


def _multirun_config(task, params=None, composed=None):
    """The config ``on_multirun_start`` gets: composed (``composed``: what the command line and
    the experiment set, sweeps left out), with the task overrides and the sweeper's params."""
    return OmegaConf.create({
        "job_name": "${tags.dataset}__run",
        "paths": {"log_dir": "logs", "output_dir": "${paths.log_dir}/${job_name}"},
        "checkpointing_dir": "${paths.output_dir}/checkpoints",
        **(composed or {}),
        "hydra": {"overrides": {"task": task, "hydra": []}, "sweeper": {"params": params},
                  "job": {"config": {"override_dirname": {"exclude_keys": ["seed"]}}}},
    })


def test_the_callback_names_each_job_by_the_swept_values_of_the_command_line_and_the_sweeper_params():
    task = ["job_type=train", "experiment=x", "optimizer.lr=0.001,0.01", "model.max_length=${oc.env:NO_SUCH_VARIABLE}"]
    config = _multirun_config(task, {"seed": "1,2", "model": "a,b"})
    MultirunJobNames().on_multirun_start(config)
    assert OmegaConf.to_container(config.hydra.overrides.task, resolve=False)[-1] == "job_name='${tags.dataset}__run__${hydra:job.override_dirname}'"
    assert OmegaConf.to_container(config.hydra.overrides.hydra) == [
        "hydra.job.config.override_dirname.exclude_keys=['experiment','job_name','job_type','model.max_length','seed']"
    ]


def test_the_callback_leaves_a_sweep_without_run_keys_alone():
    config = _multirun_config(["job_type=train,eval", "+eval.split=validation,test"])
    MultirunJobNames().on_multirun_start(config)
    assert OmegaConf.to_container(config.hydra.overrides.task) == ["job_type=train,eval", "+eval.split=validation,test"]
    assert OmegaConf.to_container(config.hydra.overrides.hydra) == []


@pytest.mark.parametrize("composed, key, value", [
    ({"paths": {"log_dir": "logs", "output_dir": "/runs/mine"}}, "paths.output_dir", "/runs/mine"),
    ({"checkpointing_dir": "/runs/ckpts"}, "checkpointing_dir", "/runs/ckpts"),
])
def test_a_run_directory_fixed_for_every_job_of_a_sweep_is_refused(composed, key, value):
    """Set on the command line or in an experiment file alike: the composed config decides."""
    config = _multirun_config(["job_type=train", "optimizer.lr=0.001,0.01"], composed=composed)
    with pytest.raises(JobRefused, match=(
            rf"sweeps optimizer.lr, but {key}={value} is one directory for every job: each train job would "
            rf"resume the checkpoints of the one before it.*e.g. '{key}={value}/\$\{{job_name\}}'")):
        MultirunJobNames().on_multirun_start(config)


@pytest.mark.parametrize("composed", [
    {"paths": {"output_dir": "/runs/${job_name}"}}, {"paths": {"output_dir": "/runs/${hydra:job.num}"}},
    {"checkpointing_dir": "${paths.output_dir}/ck"},
])
def test_a_run_directory_per_job_passes(composed):
    config = _multirun_config(["job_type=train", "optimizer.lr=0.001,0.01"], composed=composed)
    MultirunJobNames().on_multirun_start(config)
    assert OmegaConf.to_container(config.hydra.overrides.task, resolve=False)[-1].startswith("job_name=")


def test_a_checkpointing_dir_under_a_fixed_output_dir_is_refused_naming_the_output_dir():
    config = _multirun_config(["job_type=train", "optimizer.lr=0.001,0.01"], composed={
        "paths": {"output_dir": "/runs/mine"}, "checkpointing_dir": "${paths.output_dir}/ck"})
    with pytest.raises(JobRefused, match=r"paths.output_dir=/runs/mine is one directory for every job"):
        MultirunJobNames().on_multirun_start(config)
