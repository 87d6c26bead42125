"""Resuming on another number of ranks is refused with both counts and the two ways on."""

import pytest

from arlm.runtime.resume import WORLD_SIZE_KEY, ResumeWorldSizeError, check_resume_world_size


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
