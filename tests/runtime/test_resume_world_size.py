"""Resuming on another number of ranks is refused with both counts and the two ways on."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities import rank_zero_only

from arlm.runtime.resume import WORLD_SIZE_KEY, ResumeWorldSizeError, check_resume_world_size, drop_other_sampler_position


def test_another_number_of_ranks_is_refused_naming_both_counts_and_the_fixes():
    with pytest.raises(ResumeWorldSizeError) as refusal:
        check_resume_world_size({WORLD_SIZE_KEY: 2}, 1, "run/last.ckpt")
    message = str(refusal.value)
    assert message.startswith("run/last.ckpt was written by a run of 2 rank(s) and this run has 1")
    assert "trainer.devices x trainer.num_nodes = 2" in message
    assert "python -m arlm.runtime.consolidate run/last.ckpt weights.ckpt" in message


@pytest.mark.parametrize("checkpoint", [{WORLD_SIZE_KEY: 4}, {}, {WORLD_SIZE_KEY: "4"}])
def test_the_same_count_or_none_recorded_resumes(checkpoint):
    check_resume_world_size(checkpoint, 4, "last.ckpt")


def test_an_older_samplers_position_is_dropped_and_the_new_samplers_kept(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 0, raising=False)  # set by the Trainer in a run
    old = torch.load(Path(__file__).parents[1] / "fixtures" / "star_easy_tiny_c4c0ecd.ckpt", map_location="cpu", weights_only=False)
    assert drop_other_sampler_position(old, "old.ckpt") is True
    assert "combined_loader" not in old["loops"]["fit_loop"]["state_dict"]
    new_state = {"_sampler_iter_state": {"samples_yielded": 8, "sampler_state": {"yielded": 8}}}
    new = {"loops": {"fit_loop": {"state_dict": {"combined_loader": [new_state]}}}}
    assert drop_other_sampler_position(new, "new.ckpt") is False
    assert new["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [new_state]
