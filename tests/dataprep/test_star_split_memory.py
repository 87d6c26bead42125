"""A STAR split too big for this machine's memory is refused after a sample of rows, naming the key."""

import time

import pytest

from arlm.dataprep.star import generate_star_split
from arlm.network.memory_budget import MemoryBudgetError, python_object_bytes


def test_a_star_split_too_big_is_refused_after_a_sample_of_rows():
    start = time.perf_counter()
    with pytest.raises(MemoryBudgetError, match=r"star_split_sizes.train=1000000000 \(star-small: .* bytes each.*Fix: lower star_split_sizes.train"):
        generate_star_split("star-small", "train", 10**9, 42)
    assert time.perf_counter() - start < 5


def test_a_small_star_split_is_unchanged_by_the_check():
    rows = generate_star_split("star-small", "validation", 100, 42)
    assert len(rows) == 100 and rows == generate_star_split("star-small", "validation", 100, 42)
    assert python_object_bytes(rows[0]) > 200
