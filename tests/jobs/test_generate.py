"""``xlm job_type=generate_arlm``: what it does before it builds anything."""

import pytest
import torch
from omegaconf import OmegaConf

from arlm.jobs.generate import generate_arlm


def test_seed_zero_seeds_the_generator(tmp_path, monkeypatch):
    """``seed=0`` is a seed like any other (it was read as "no seed")."""
    seeds = []
    monkeypatch.setattr(torch, "manual_seed", seeds.append)
    cfg = OmegaConf.create({"seed": 0, "checkpointing_dir": str(tmp_path), "generation": {"ckpt_path": str(tmp_path / "missing.ckpt")}})
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        generate_arlm(cfg)
    assert seeds == [0]
