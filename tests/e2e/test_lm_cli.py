"""The language-modelling path (OWT, LM1B configs) through the real ``xlm`` CLI on offline fixtures.

Each run prepares the cache from a local copy in the hub format, trains a few steps with the LM
collator, validates (loss, perplexity) and writes unconditional samples from the predictor.
"""

import json

import pytest

from tests.e2e.fixtures_data import train_tokenizer, write_text_fixture
from tests.e2e.xlm_cli import TINY_MODEL, offline_env, run_xlm

pytestmark = pytest.mark.slow
CASES = {
    "owt_arlm": ("dhruveshpatel/owt-gpt2-1024-split", {"train": 300, "validation": 200}),
    "lm1b_arlm": ("billion-word-benchmark/lm1b", {"train": 300, "test": 200}),
}


@pytest.mark.parametrize("experiment", sorted(CASES))
def test_lm_experiment_prepares_trains_and_samples(experiment, tmp_path):
    dataset, splits = CASES[experiment]
    tokenizer_dir = train_tokenizer(write_text_fixture(tmp_path, dataset, splits), tmp_path / "tokenizer")
    env = offline_env(tmp_path / "data", tmp_path / "logs")
    args = [
        f"experiment={experiment}", "global_components.tokenizer._target_=xlm.datamodule.GPT2TokenizerFast.from_pretrained",
        f"global_components.tokenizer.pretrained_model_name_or_path={tokenizer_dir}",
        "model=rotary_transformer_tiny_arlm", *TINY_MODEL, "block_size=32",
        "per_device_batch_size=4", "global_batch_size=4", "num_dataloader_workers=0", "num_dataset_workers=1",
        "dataloader_prefetch_factor=null",
    ]
    run_xlm(["job_type=prepare_data", *args], cwd=tmp_path, env=env)
    for split in splits:
        assert (tmp_path / "data" / dataset / split / "dataset_info.json").is_file()
    out = run_xlm(
        ["job_type=train", *args, "trainer.max_steps=4", "trainer.val_check_interval=2",
         "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0"],
        cwd=tmp_path, env=env,
    ).stdout
    assert "Could not run test" not in out
    # best.ckpt is chosen on val/lm/accumulated_loss, so it exists only if validation logged it.
    assert list((tmp_path / "logs").glob("*/checkpoints/best.ckpt"))
    samples = sorted((tmp_path / "logs").glob("*/runs/*/predictions/val/unconditional_prediction/*.jsonl"))
    assert samples, "no unconditional samples were written"
    rows = [json.loads(line) for line in open(samples[-1])]
    assert len(rows) == 4 and all(r["generated_text"].strip() for r in rows)
