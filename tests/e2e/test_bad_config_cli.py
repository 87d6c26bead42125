"""Bad values of common keys are refused before any work, naming the key, the value and the fix."""

import pytest

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, offline_env, run_xlm

pytestmark = pytest.mark.slow

TRAIN = ["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]


@pytest.mark.parametrize("override, expected", [
    ("global_batch_size=-16", "global_batch_size=-16 (int) must be a positive integer"),
    ("global_batch_size=0", "global_batch_size=0 (int) must be a positive integer"),
    ("per_device_batch_size=0", "per_device_batch_size=0 (int) must be a positive integer"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0 must be a positive integer"),
    ("trainer.max_steps=abc", "trainer.max_steps='abc' (str) must be a positive integer"),
    ("optimizer.lr=-1", "optimizer.lr=-1 must be a positive finite number"),
    ("lr_scheduler.name=foo", "lr_scheduler.name='foo' must be one of ['linear', 'cosine', "),
    ("dataloader_prefetch_factor=-1", "dataloader_prefetch_factor=-1 (int) must be a positive integer"),
])
def test_non_positive_or_non_integer_keys_are_refused(star_data_dir, tmp_path, override, expected):
    proc = run_xlm([*TRAIN, override], cwd=REPO_ROOT, env=offline_env(star_data_dir, tmp_path / "logs"), check=False)
    assert proc.returncode != 0
    assert f"ConfigValueError: Invalid configuration: {expected}" in proc.stdout
    assert not list((tmp_path / "logs").glob("*/checkpoints"))


@pytest.mark.parametrize("job, override", [
    (TRAIN, "resume_from_checkpoint=no"),
    (TRAIN, "compile=0"),
    (["job_type=generate_arlm", "experiment=star_easy_arlm", *STAR_SIZES], "+generation.use_ema=off"),
])
def test_a_boolean_key_refuses_a_string_or_a_number(star_data_dir, tmp_path, job, override):
    proc = run_xlm([*job, override], cwd=REPO_ROOT, env=offline_env(star_data_dir, tmp_path / "logs"), check=False)
    key = override.lstrip("+").split("=")[0]
    assert proc.returncode != 0
    assert f"ConfigValueError: Invalid configuration: {key}=" in proc.stdout
    assert "must be true or false" in proc.stdout and f"Fix: {key}=true or {key}=false" in proc.stdout
    assert "Loading model" not in proc.stdout and not list((tmp_path / "logs").glob("*/checkpoints"))


def test_negative_generation_max_batches_is_refused(star_data_dir, tmp_path):
    proc = run_xlm(["job_type=generate_arlm", "experiment=star_easy_arlm", *STAR_SIZES, "+generation.max_batches=-1"],
                   cwd=REPO_ROOT, env=offline_env(star_data_dir, tmp_path / "logs"), check=False)
    assert proc.returncode != 0
    assert "generation.max_batches=-1 (int) must be a positive integer" in proc.stdout


def test_generation_output_dir_that_is_a_file_is_refused_before_generating(star_data_dir, tmp_path):
    existing = tmp_path / "out.jsonl"
    existing.write_text("keep me\n")
    proc = run_xlm(["job_type=generate_arlm", "experiment=star_easy_arlm", *STAR_SIZES, f"+generation.output_dir={existing}"],
                   cwd=REPO_ROOT, env=offline_env(star_data_dir, tmp_path / "logs"), check=False)
    assert proc.returncode != 0
    assert f"generation.output_dir={existing} is an existing file, not a directory" in proc.stdout
    assert "Loading model" not in proc.stdout
    assert existing.read_text() == "keep me\n"


@pytest.mark.parametrize("block_size", [10, 30])
def test_block_size_too_small_for_star_fails_before_training(star_data_dir, tmp_path, block_size):
    proc = run_xlm([*TRAIN, f"block_size={block_size}", "trainer.max_steps=4"], cwd=REPO_ROOT,
                   env=offline_env(star_data_dir, tmp_path / "logs"), check=False)
    assert proc.returncode != 0
    assert f"block_size={block_size} is too small: an example needs 36 tokens (prompt 26 + separator 1 + target 8 + EOS 1)" in proc.stdout
    assert "Fix: set block_size to at least 36" in proc.stdout
    assert not list((tmp_path / "logs").glob("*/checkpoints/*.ckpt"))


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty (0 bytes)"),
    (b"not a checkpoint\n", "is not a PyTorch checkpoint (17 bytes, no zip archive; a text file or another format?)"),
])
def test_empty_or_text_file_given_to_eval_as_checkpoint_is_named(star_data_dir, tmp_path, content, expected):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(content)
    proc = run_xlm(["job_type=eval", "experiment=star_easy_arlm", *STAR_SIZES, f"+eval.ckpt_path={bad}"],
                   cwd=REPO_ROOT, env=offline_env(star_data_dir, tmp_path / "logs"), check=False)
    assert proc.returncode != 0
    assert f"CheckpointError: {bad} {expected}" in proc.stdout


@pytest.mark.parametrize("overrides, expected", [
    (["+export_hf.format=onnx"], "ConfigValueError: Invalid configuration: export_hf.format='onnx' must be one of ['hf', 'gguf']"),
    (["+export_hf.format=gguf", "+export_hf.gguf_dtype=q4_0"],
     "ConfigValueError: Invalid configuration: export_hf.gguf_dtype='q4_0' must be one of ['f32', 'f16', 'q8_0']"),
    (["+export_hf.gguf_dtype=f16"], "export_hf.gguf_dtype is for format=gguf; add +export_hf.format=gguf"),
    (["+export_hf.format=gguf", "+export_hf.architecture=arlow"], "export_hf.architecture='arlow' is for format=hf"),
], ids=["unknown_format", "unknown_dtype", "dtype_without_gguf", "arlow_with_gguf"])
def test_export_format_keys_are_refused_before_anything_is_read(star_data_dir, tmp_path, overrides, expected):
    proc = run_xlm(["job_type=export_hf", "experiment=star_easy_arlm", *STAR_SIZES, f"+export_hf.checkpoint_path={tmp_path / 'none.ckpt'}",
                    f"+export_hf.output_dir={tmp_path / 'out'}", *overrides],
                   cwd=REPO_ROOT, env=offline_env(star_data_dir, tmp_path / "logs"), check=False)
    assert proc.returncode != 0 and expected in proc.stdout, proc.stdout[-2000:]
    assert not (tmp_path / "out").exists()
