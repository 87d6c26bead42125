"""Atomic manual caches and locally generated STAR data (no CLI, no network)."""

import json
import os
import random
import subprocess
import sys

import datasets
import numpy as np
import pytest
from xlm.datamodule import SimpleSpaceTokenizer

from arlm.dataprep.cache import MANIFEST, AtomicCacheDatasetManager, DataNotPreparedError, write_cache_atomically, write_manifest
from arlm.dataprep.star import METADATA_FILE, SPLITS, StarDatasetManager, generate_star_split, split_seed

SIZES = {"train": 12, "validation": 4, "test": 5}


def _star_manager(split="train", sizes=SIZES, seed=42):
    return StarDatasetManager(
        collator=None, full_name=f"dhruveshpatel/star-small/{split}", full_name_debug="dhruveshpatel/star-small/train",
        dataloader_kwargs={"batch_size": 2}, preprocess_function="xlm.tasks.star.preprocess_fn",
        columns_to_remove=["edge_list", "source", "goal", "path"], split_sizes=sizes, seed=seed,
    )


def test_star_generation_is_deterministic_and_splits_differ():
    a = generate_star_split("star-small", "test", 5, seed=42)
    assert a == generate_star_split("star-small", "test", 5, seed=42)
    assert a != generate_star_split("star-small", "validation", 5, seed=42)
    assert a != generate_star_split("star-small", "test", 5, seed=7)
    assert all(isinstance(v, int) for row in a for v in row["path"])


def test_star_generation_follows_upstream_settings():
    for graph in generate_star_split("star-small", "train", 20, seed=0):
        assert len(graph["path"]) == 5 and len(graph["edge_list"]) == 12  # pathlength 5, degree 3
        assert graph["path"][0] == graph["source"] and graph["path"][-1] == graph["goal"]
        assert max(max(e) for e in graph["edge_list"]) < 20
    for graph in generate_star_split("star-hard", "train", 20, seed=0):
        assert 6 <= len(graph["path"]) <= 12 and max(max(e) for e in graph["edge_list"]) < 56


def test_star_generation_restores_the_global_random_state():
    random.seed(3)
    np.random.seed(3)
    expected = (random.random(), np.random.rand())
    random.seed(3)
    np.random.seed(3)
    generate_star_split("star-medium", "train", 10, seed=42)
    assert (random.random(), np.random.rand()) == expected


def test_bad_star_arguments_are_named():
    with pytest.raises(ValueError, match="unknown STAR level 'star-tiny'"):
        generate_star_split("star-tiny", "train", 1, 0)
    with pytest.raises(ValueError, match=r"lacks \['test'\]"):
        _star_manager(sizes={"train": 1, "validation": 1})


def test_star_manager_prepares_a_loadable_cache_with_its_recipe(tmp_path):
    tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    manager = _star_manager("test")
    manager.prepare_data(str(tmp_path), tokenizer)
    cache = tmp_path / "dhruveshpatel" / "star-small" / "test"
    ds = datasets.load_from_disk(str(cache))
    assert len(ds) == 5 and {"prompt_token_ids", "input_token_ids"} <= set(ds.column_names)
    assert len(ds[0]["prompt_token_ids"]) == 26 and len(ds[0]["input_token_ids"]) == 8
    assert json.loads((cache / METADATA_FILE).read_text()) == {
        "level": "star-small", "split": "test", "size": 5, "seed": 42, "stream_seed": 44,
        "tokenizer": f"SimpleSpaceTokenizer of {tokenizer.full_vocab_size} ids",
    }
    assert [p.name for p in cache.parent.iterdir() if "partial" in p.name] == []


def test_star_cache_made_with_other_sizes_is_an_error_not_a_silent_reuse(tmp_path):
    tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    _star_manager("test").prepare_data(str(tmp_path), tokenizer)
    with pytest.raises(ValueError, match="was generated with .*'size': 5.* but this run asks for .*'size': 9"):
        _star_manager("test", sizes={**SIZES, "test": 9}).prepare_data(str(tmp_path), tokenizer)


def test_failed_write_leaves_nothing_and_a_retry_succeeds(tmp_path):
    final = tmp_path / "ds" / "train"

    def half_write(tmp):
        (tmp / "part-0").write_text("half")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of save_to_disk

    with pytest.raises(KeyboardInterrupt):
        write_cache_atomically(final, half_write)
    assert not final.exists() and list(final.parent.iterdir()) == []
    write_cache_atomically(final, lambda tmp: (tmp / "ok").write_text("1"))
    assert (final / "ok").read_text() == "1"


def test_partial_directories_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".train.partial-{dead.stdout.strip()}-abcd"
    live = tmp_path / f".train.partial-{os.getpid()}-abcd"
    stale.mkdir()
    live.mkdir()
    write_cache_atomically(tmp_path / "train", lambda tmp: None)
    assert not stale.exists() and live.exists() and (tmp_path / "train").is_dir()


def test_missing_cache_names_path_and_fix(tmp_path):
    manager = AtomicCacheDatasetManager(
        collator=None, full_name="TinyGSM/TinyGSM/train", full_name_debug="TinyGSM/TinyGSM/train",
        dataloader_kwargs={"batch_size": 2},
    )
    with pytest.raises(DataNotPreparedError, match=r"No prepared data for 'TinyGSM/TinyGSM/train' at .*TinyGSM/TinyGSM/train.*job_type=prepare_data"):
        manager.setup("fit", str(tmp_path), tokenizer=None, block_size=8, is_ddp=False, rank=0, world_size=1)


def _truncate(path, keep=0.5):
    with open(path, "r+b") as f:
        f.truncate(int(path.stat().st_size * keep))


@pytest.mark.parametrize("with_manifest", [True, False])
def test_corrupt_cache_is_detected_named_and_rebuilt(simple_tokenizer, tmp_path, with_manifest):
    from arlm.dataprep.cache import MANIFEST, CorruptCacheError, cache_problem

    manager = _star_manager()
    manager.prepare_data(str(tmp_path), simple_tokenizer)
    cache_dir = manager._get_cache_dir(str(tmp_path))
    assert cache_problem(cache_dir) is None
    if not with_manifest:  # a cache written before manifests existed
        (cache_dir / MANIFEST).unlink()
    _truncate(cache_dir / "data-00000-of-00001.arrow")
    assert "data-00000-of-00001.arrow" in cache_problem(cache_dir)
    with pytest.raises(CorruptCacheError, match=f"{cache_dir.resolve()}.*is corrupt.*job_type=prepare_data"):
        manager._load_from_cache(str(tmp_path))

    manager.prepare_data(str(tmp_path), simple_tokenizer)
    assert cache_problem(cache_dir) is None
    assert len(datasets.load_from_disk(str(cache_dir))) == SIZES["train"]
    assert not list(cache_dir.parent.glob(".*.partial-*"))


def test_star_split_sizes_must_be_positive():
    with pytest.raises(ValueError, match=r"star_split_sizes must be positive integers, got \{'train': 0\}"):
        _star_manager(sizes=dict(SIZES, train=0))


def test_full_disk_while_caching_names_the_cache_and_leaves_nothing(tmp_path):
    import errno

    def write(tmp):
        (tmp / "part.arrow").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DataNotPreparedError, match=f"Could not write the prepared-data cache {tmp_path / 'train'}.*No space left"):
        write_cache_atomically(tmp_path / "train", write)
    assert list(tmp_path.iterdir()) == []


def _graphs(rows):
    return {json.dumps(row, sort_keys=True) for row in rows}


def test_star_splits_never_share_a_stream_across_seeds_and_the_default_seed_is_unchanged():
    """Round 4, case 5: star_seed=40's test split was star_seed=42's training split."""
    streams = [split_seed(seed, split) for seed in range(0, 400) for split in SPLITS]
    assert len(set(streams)) == len(streams) and min(streams) >= 0
    assert [split_seed(42, split) for split in SPLITS] == [42, 43, 44]  # the data of earlier versions
    train_42 = _graphs(generate_star_split("star-small", "train", 32, seed=42))
    for seed in (40, 41, 14):
        for split in ("validation", "test"):
            assert not train_42 & _graphs(generate_star_split("star-small", split, 32, seed=seed)), (seed, split)


@pytest.mark.parametrize("seed, reused", [(42, True), (7, False)])
def test_a_cache_written_before_the_stream_seeds_is_reused_only_when_its_data_is_the_same(tmp_path, seed, reused):
    tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    _star_manager("test", seed=seed).prepare_data(str(tmp_path), tokenizer)
    meta = tmp_path / "dhruveshpatel" / "star-small" / "test" / METADATA_FILE
    old = json.loads(meta.read_text())
    del old["stream_seed"]
    meta.write_text(json.dumps(old))
    (meta.parent / MANIFEST).unlink()
    write_manifest(meta.parent)  # as the earlier version wrote it: whole, not corrupt
    if reused:
        _star_manager("test", seed=seed).prepare_data(str(tmp_path), tokenizer)
    else:
        with pytest.raises(ValueError, match="'stream_seed': 9.* but this run asks for .*'stream_seed': 23"):
            _star_manager("test", seed=seed).prepare_data(str(tmp_path), tokenizer)


def test_a_cache_made_with_another_vocabulary_is_named_as_the_cause(tmp_path):
    """Round 4, cryptic: a smaller vocab_size over an existing cache failed on token ids, not
    naming the cache; its recipe now records the tokenizer."""
    _star_manager("test").prepare_data(str(tmp_path), SimpleSpaceTokenizer.for_numbers(20))
    smaller = SimpleSpaceTokenizer.for_numbers(10)
    with pytest.raises(ValueError, match=(
            rf"The STAR cache at .*test was generated with .*'tokenizer': 'SimpleSpaceTokenizer of \d+ ids'.* but this run "
            rf"asks for .*'tokenizer': 'SimpleSpaceTokenizer of {smaller.full_vocab_size} ids'.*Fix: delete")):
        _star_manager("test").prepare_data(str(tmp_path), smaller)
