"""Config sizes that cannot fit in this machine's memory are refused before the job, named by key."""

import pytest
from omegaconf import OmegaConf

from arlm.runtime.preflight import memory_problems


@pytest.mark.parametrize(
    "overrides, expected",
    [({"model": {"max_length": 10**9}}, "model.max_length=1000000000"),
     ({"model": {"d_model": 200000}}, "model.d_model=200000"),
     ({"block_size": 10**8, "model": {"max_length": 64}}, "block_size=100000000")],
)
def test_config_sizes_that_cannot_fit_are_named_by_key(overrides, expected):
    cfg = OmegaConf.create({
        "job_type": "train", "per_device_batch_size": 16, "block_size": 36,
        "model": {"num_embeddings": "${tokenizer:full_vocab_size}", "d_model": 64, "num_layers": 8, "nhead": 4,
                  "max_length": 36, "rotary_emb_dim": 16},
    })
    assert memory_problems(cfg) == []
    problems = memory_problems(OmegaConf.merge(cfg, overrides))
    assert len(problems) >= 1 and expected in problems[0] and "Fix:" in problems[0]
