"""``arlm.runtime.preflight``: bad config values are listed with the key, the value and what is expected."""

import math
import os

import pytest
from omegaconf import OmegaConf

from arlm.runtime.preflight import ConfigValueError, check_config, check_output_dir, config_problems


@pytest.mark.parametrize("cfg, expected", [
    ({"global_batch_size": -16}, "global_batch_size=-16 (int) must be a positive integer"),
    ({"per_device_batch_size": 0}, "per_device_batch_size=0 (int) must be a positive integer"),
    ({"block_size": "abc"}, "block_size='abc' (str) must be a positive integer"),
    ({"trainer": {"max_steps": 2.5}}, "trainer.max_steps=2.5 (float) must be a positive integer"),
    ({"trainer": {"val_check_interval": 1.5}}, "trainer.val_check_interval=1.5 must be a positive integer"),
    ({"generation": {"max_batches": True}}, "generation.max_batches=True (bool) must be a positive integer"),
    ({"num_dataloader_workers": -1}, "num_dataloader_workers=-1 (int) must be an integer >= 0"),
    ({"optimizer": {"lr": math.nan}}, "optimizer.lr=nan must be a positive finite number"),
    ({"eval": {"split": "train"}}, "eval.split='train' must be one of ['validation', 'test']"),
    ({"generation": {"use_ema": "maybe"}}, "generation.use_ema='maybe' must be true or false"),
    ({"trainer": {"gradient_clip_val": -1}}, "trainer.gradient_clip_val=-1 must be a finite number >= 0"),
    ({"lr_scheduler": {"num_warmup_steps": -5}}, "lr_scheduler.num_warmup_steps=-5 (int) must be an integer >= 0"),
    ({"seed": "abc"}, "seed='abc' (str) must be an integer >= 0"),
    ({"input_block_size": -3}, "input_block_size=-3 (int) must be an integer >= 0"),
    ({"job_name": ""}, "job_name='' must be a non-empty name without '/'"),
    ({"job_name": "\\${job_name}"}, "job_name='${job_name}' holds '${', which Hydra's own settings"),
    ({"job_name": "r" * 256}, "is 256 bytes long, more than the 255 a directory name may have"),
    ({"job_name": "x\n## Install"}, "job_name='x\\n## Install' must be a non-empty name without '/' or control characters"),
    ({"lr_scheduler": {"name": "foo"}}, "lr_scheduler.name='foo' must be one of ['linear', 'cosine', "),
    ({"dataloader_prefetch_factor": -1}, "dataloader_prefetch_factor=-1 (int) must be a positive integer"),
])
def test_bad_values_are_named(cfg, expected):
    assert any(expected in problem for problem in config_problems(OmegaConf.create(cfg)))
    with pytest.raises(ConfigValueError, match="Invalid configuration"):
        check_config(OmegaConf.create(cfg))


def test_good_values_pass(tmp_path):
    check_config(OmegaConf.create({
        "global_batch_size": 16, "per_device_batch_size": 16, "block_size": 36, "num_dataloader_workers": 0,
        "trainer": {"max_steps": 10, "val_check_interval": 0.5}, "optimizer": {"lr": 1e-3}, "eval": {"split": "test"},
    }))


def test_checkpoint_directory_names_a_file_in_it(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"x")
    (problem,) = config_problems(OmegaConf.create({"eval": {"ckpt_path": str(tmp_path)}}))
    assert problem == f"eval.ckpt_path={tmp_path} is a directory, not a checkpoint file; it holds ['last.ckpt'], e.g. pass {tmp_path / 'last.ckpt'}"


def test_a_sharded_directory_resumes_and_the_loaders_of_files_are_told_what_to_pass(tmp_path):
    sharded = tmp_path / "last.ckpt"
    sharded.mkdir()
    (sharded / "__0_0.distcp").write_bytes(b"x")
    assert config_problems(OmegaConf.create({"resume_checkpoint_path": str(sharded)})) == []
    (problem,) = config_problems(OmegaConf.create({"eval": {"ckpt_path": str(sharded)}}))
    assert problem == f"eval.ckpt_path={sharded} is a sharded checkpoint directory, and this job loads a file. Fix: pass {sharded / 'meta.pt'}, which names the whole directory"
    (problem,) = config_problems(OmegaConf.create({"model_only_checkpoint_path": str(sharded)}))
    assert f"Fix: consolidate it into one file (python -m arlm.runtime.consolidate {sharded} weights.ckpt)" in problem


def test_output_dir_that_is_a_file(tmp_path):
    existing = tmp_path / "f"
    existing.write_text("")
    with pytest.raises(ConfigValueError, match="is an existing file, not a directory"):
        check_output_dir(existing)
    with pytest.raises(ConfigValueError, match=f"cannot be created: {existing} is a file"):
        check_output_dir(existing / "sub" / "dir")
    check_output_dir(tmp_path / "new" / "dir")


def test_data_dir_that_is_a_file(tmp_path):
    existing = tmp_path / "data"
    existing.write_text("")
    (problem,) = config_problems(OmegaConf.create({"datamodule": {"manual_cache_dir": str(existing)}}))
    assert problem == f"the prepared-data directory (DATA_DIR / datamodule.manual_cache_dir) {existing} is a file, not a directory"


def test_run_lock_refuses_a_second_holder_and_an_unusable_lock_path(tmp_path):
    from arlm.runtime.preflight import JobRefused
    from arlm.runtime.run_lock import RunInProgressError, RunLock, RunLockCallback

    first = RunLock(tmp_path, "job")
    first.acquire()
    with pytest.raises(RunInProgressError, match=f"Another run with job_name=job is running \\(pid {os.getpid()}, started"):
        RunLock(tmp_path, "job").acquire()
    first.release()
    RunLock(tmp_path, "job").acquire()

    blocked = tmp_path / "blocked"
    (blocked / "run.lock").mkdir(parents=True)
    cfg = OmegaConf.create({"job_type": "train", "job_name": "j", "paths": {"output_dir": str(blocked)}})
    with pytest.raises(JobRefused, match="Cannot take the run lock"):
        RunLockCallback().on_job_start(config=cfg)


def test_run_lock_is_left_to_rank_zero(tmp_path, monkeypatch):
    from arlm.runtime.run_lock import RunLock, RunLockCallback

    holder = RunLock(tmp_path, "job")
    holder.acquire()
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg = OmegaConf.create({"job_type": "train", "job_name": "job", "paths": {"output_dir": str(tmp_path)}})
    RunLockCallback().on_job_start(config=cfg)


BOOLEAN_KEYS = [
    "generation.use_ema", "resume_from_checkpoint", "compile", "strict_model_only_load", "skip_init_weights",
    "dataloader_pin_memory", "dataloader_persistent_workers", "export_hf.overwrite", "export_hf.apply_ema",
    "post_training.apply_ema", "datamodule.rewrite_manual_cache", "model.force_flash_attn",
    "model.final_layer_without_normalization",
]


@pytest.mark.parametrize("key", BOOLEAN_KEYS)
@pytest.mark.parametrize("value", ["no", "0", "off", "yes", "true", 1, 0])
def test_a_boolean_key_refuses_strings_and_numbers(key, value):
    cfg = OmegaConf.create({})
    OmegaConf.update(cfg, key, value, force_add=True)
    (problem,) = config_problems(cfg)
    assert problem.startswith(f"{key}={value!r} must be true or false, got {type(value).__name__} {value!r};")
    assert problem.endswith(f"Fix: {key}=true or {key}=false")


@pytest.mark.parametrize("key", BOOLEAN_KEYS)
@pytest.mark.parametrize("value", [True, False, None])
def test_a_boolean_key_takes_true_false_or_null(key, value):
    cfg = OmegaConf.create({})
    OmegaConf.update(cfg, key, value, force_add=True)
    assert config_problems(cfg) == []


def test_unknown_keys_and_unresolvable_values_are_left_alone():
    cfg = OmegaConf.create({
        "model": {"num_embeddings": "${tokenizer:full_vocab_size}", "anything": "no"},
        "trainer": {"accelerator": "auto", "max_steps": "${oc.env:ARLM_NO_SUCH_VARIABLE}"},
        "xlm_core_key": {"flag": "no"},
    })
    assert config_problems(cfg) == []


def test_job_name_must_be_set():
    assert config_problems(OmegaConf.create({"job_name": None})) == [
        "job_name=None must be a non-empty name without '/' or control characters such as a newline (it names logs/<job_name>/)"
    ]


def test_export_format_keys_take_the_choices_the_job_and_the_gguf_writer_have():
    from arlm.export.gguf import GGUF_DTYPES
    from arlm.jobs.export_hf import EXPORT_FORMATS

    for name, choices in (("format", EXPORT_FORMATS), ("gguf_dtype", GGUF_DTYPES)):
        for value in choices:
            assert config_problems(OmegaConf.create({"export_hf": {name: value}})) == []
        (problem,) = config_problems(OmegaConf.create({"export_hf": {name: "other"}}))
        assert problem == f"export_hf.{name}='other' must be one of {list(choices)}"
