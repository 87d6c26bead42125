"""On the CPU, training, eval and generate_arlm run fp32 matmuls in fp32, although xlm-core sets
``torch.set_float32_matmul_precision("medium")`` (bf16 matmuls through oneDNN there) before it
builds the model: a callback in the real ``xlm`` process records the precision in effect at every
stage, and the jobs say that they changed it."""

import json
import textwrap

import pytest

from tests.e2e.xlm_cli import (
    REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, checkpoint_dir, offline_env, run_xlm,
)

pytestmark = pytest.mark.slow
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]
CHANGED = "float32 matmul precision 'medium' -> 'highest' on the CPU"
PROBE = textwrap.dedent('''
    """Records torch's float32 matmul precision at each stage of the run in $PRECISION_LOG."""
    import json
    import os

    import torch
    from lightning.pytorch.callbacks import Callback


    class PrecisionProbe(Callback):
        def _record(self, hook):
            with open(os.environ["PRECISION_LOG"], "a") as f:
                f.write(json.dumps([hook, torch.get_float32_matmul_precision()]) + "\\n")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._record("train_batch")

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            self._record("validation_batch")

        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            self._record("test_batch")
''')


def test_train_eval_and_generate_use_exact_fp32_matmuls(star_data_dir, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "precision_probe.py").write_text(PROBE)
    log = tmp_path / "precision.jsonl"
    env = offline_env(
        star_data_dir, tmp_path / "logs", {"PYTHONPATH": str(tmp_path / "site"), "PRECISION_LOG": str(log)}
    )
    out = run_xlm(
        ["job_type=train", *STAR, *TINY_TRAIN, "+callbacks.precision_probe._target_=precision_probe.PrecisionProbe"],
        cwd=REPO_ROOT, env=env,
    ).stdout
    assert CHANGED in out
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {hook for hook, _ in records} == {"train_batch", "validation_batch", "test_batch"}
    assert {precision for _, precision in records} == {"highest"}

    ckpt = checkpoint_dir(tmp_path / "logs") / "last.ckpt"
    assert CHANGED in run_xlm(["job_type=eval", *STAR, f"+eval.ckpt_path={ckpt}"], cwd=REPO_ROOT, env=env).stdout
    out = run_xlm(
        ["job_type=generate_arlm", *STAR, f"+generation.ckpt_path={ckpt}", "+generation.max_batches=1",
         f"+generation.output_dir={tmp_path / 'generations'}"],
        cwd=REPO_ROOT, env=env,
    ).stdout
    assert CHANGED in out
