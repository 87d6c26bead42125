"""STAR path-finding data generated locally with xlm-core's own star-graph generators.

Upstream publishes STAR as the hub datasets ``dhruveshpatel/star-{small,medium,hard}``, made by
``xlm/commands/generate_star_graphs.py``. :class:`StarDatasetManager` produces the same kind of
data on the spot instead of downloading it: the generator class and settings of each level are
upstream's (:data:`STAR_LEVELS`), and so are the default split sizes (:data:`UPSTREAM_SPLIT_SIZES`).
Each split is drawn from its own stream, seeded by :func:`split_seed`, so a split's content depends
only on (level, split, size, seed): never on the order in which caches are built; and no two
(seed, split) pairs share a stream, so the test split of one ``star_seed`` is never the training
split of another.

The generated rows go through xlm-core's usual path (``preprocess_fn`` of ``datasets/star.yaml``,
then the manual cache at ``<DATA_DIR>/dhruveshpatel/<level>/<split>``), written atomically. A
``star_generation.json`` next to the data records how it was made; asking for other sizes or
another seed than an existing cache holds is an error rather than a silent reuse.
"""

import json
import logging
import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import datasets
import numpy as np
from xlm.datamodule import parse_hf_dataset_full_name
from xlm.tasks.star import AsymmetricVariableArmlengthStarGraphGenerator, SimpleStarGraphGenerator

from arlm.dataprep.cache import AtomicCacheDatasetManager, write_cache_atomically
from arlm.network.memory_budget import check_fits, host_memory_bytes, mean_python_object_bytes
from arlm.network.value_checks import is_int

log = logging.getLogger(__name__)

STAR_LEVELS: Dict[str, Dict[str, Any]] = {
    "star-small": {
        "generator": SimpleStarGraphGenerator,
        "kwargs": {"degree": 3, "pathlength": 5, "vocab_size": 20},
    },
    "star-medium": {
        "generator": AsymmetricVariableArmlengthStarGraphGenerator,
        "kwargs": {"degree": 3, "min_pathlength": 3, "max_pathlength": 6, "min_plan_length": 2, "vocab_size": 20},
    },
    "star-hard": {
        "generator": AsymmetricVariableArmlengthStarGraphGenerator,
        "kwargs": {"degree": 5, "min_pathlength": 6, "max_pathlength": 12, "min_plan_length": 5, "vocab_size": 56},
    },
}
SPLITS = ("train", "validation", "test")
UPSTREAM_SPLIT_SIZES = {"train": 50000, "validation": 100, "test": 5000}
METADATA_FILE = "star_generation.json"
SIZE_SAMPLE_ROWS = 64
"""Rows generated and measured before the rest, to estimate the memory of the whole split."""
ROW_COPIES = 2
"""The rows are held twice at the peak: as Python objects and as the Arrow table made from them."""
PROGRESS_EVERY = 100_000
DEFAULT_SEED = 42


def split_seed(seed: int, split: str) -> int:
    """The seed of the stream of ``split`` at ``seed``: one to one over (seed, split) pairs.

    ``3 * seed + index`` (index: the split's place in :data:`SPLITS`), with the streams of
    :data:`DEFAULT_SEED` kept at 42, 43, 44 (the seeds all earlier versions used, so its data is
    unchanged) by exchanging them with 126, 127, 128 (seed 14's streams). Earlier versions used
    ``seed + index``, under which ``star_seed=40``'s test split was ``star_seed=42``'s training split.
    """
    stream = len(SPLITS) * seed + SPLITS.index(split)
    kept, moved = DEFAULT_SEED, len(SPLITS) * DEFAULT_SEED
    if moved <= stream < moved + len(SPLITS):
        return stream - moved + kept
    if kept <= stream < kept + len(SPLITS):
        return stream - kept + moved
    return stream


def _legacy_split_seed(seed: int, split: str) -> int:
    """The stream seed of caches written before :func:`split_seed` (they record none)."""
    return seed + SPLITS.index(split)


def _plain(value: Any) -> Any:
    """numpy scalars (and lists of them) -> Python ints, so that Arrow gets plain int64 columns."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def generate_star_split(level: str, split: str, size: int, seed: int) -> List[Dict[str, Any]]:
    """``size`` graphs ``{edge_list, source, goal, path}`` of STAR ``level`` for ``split``.

    Deterministic in its arguments. The global ``random`` / ``numpy`` generators (which
    xlm-core's generators use) are reseeded for the call and restored afterwards.
    """
    if level not in STAR_LEVELS:
        raise ValueError(f"unknown STAR level {level!r}; expected one of {sorted(STAR_LEVELS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown STAR split {split!r}; expected one of {list(SPLITS)}")
    if not is_int(size) or size < 1:
        raise ValueError(f"STAR split size must be an integer >= 1, got {size!r} for {level}/{split}")
    settings = STAR_LEVELS[level]
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        stream = split_seed(seed, split)
        random.seed(stream)
        np.random.seed(stream)
        generator = settings["generator"](count=size, **settings["kwargs"])
        rows: List[Dict[str, Any]] = []
        for graph in generator.graphs():
            rows.append({key: _plain(value) for key, value in graph.items()})
            if len(rows) == min(SIZE_SAMPLE_ROWS, size):
                _check_split_fits(level, split, size, mean_python_object_bytes(rows))
            if len(rows) % PROGRESS_EVERY == 0:
                log.info(f"STAR {level}/{split}: {len(rows):,} of {size:,} graphs generated")
        return rows
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _check_split_fits(level: str, split: str, size: int, row_bytes: float) -> None:
    """Refuse a split whose rows cannot fit in this machine's memory (estimated from the first rows)."""
    check_fits(
        f"star_split_sizes.{split}={size} ({level}: {size:,} graphs x about {row_bytes:.0f} bytes each, "
        f"held as Python rows and as an Arrow table)",
        int(size * row_bytes * ROW_COPIES), host_memory_bytes(), "memory on this machine",
        f"lower star_split_sizes.{split} (upstream uses {UPSTREAM_SPLIT_SIZES[split]})",
    )
    if size >= PROGRESS_EVERY:
        log.info(f"STAR {level}/{split}: generating {size:,} graphs (about {row_bytes * size * ROW_COPIES / 2**30:.1f} GiB at the peak)")


class StarDatasetManager(AtomicCacheDatasetManager):
    """DatasetManager for ``dhruveshpatel/star-*/<split>`` that generates instead of downloading.

    Args (besides xlm-core's ``DatasetManager`` arguments):
        split_sizes: rows per split, keys ``train``, ``validation``, ``test`` (default upstream's).
        seed: base seed of the generation streams.
    """

    def __init__(self, *args: Any, split_sizes: Optional[Mapping[str, int]] = None, seed: int = 42, **kwargs: Any):
        super().__init__(*args, **kwargs)
        sizes = dict(UPSTREAM_SPLIT_SIZES if split_sizes is None else split_sizes)
        missing = [s for s in SPLITS if s not in sizes]
        if missing:
            raise ValueError(f"star split_sizes {sizes} lacks {missing}; give a size for each of {list(SPLITS)}")
        bad = {s: sizes[s] for s in SPLITS if not is_int(sizes[s]) or sizes[s] < 1}
        if bad:
            raise ValueError(f"star_split_sizes must be positive integers, got {bad} (e.g. star_split_sizes.train=50000)")
        self.split_sizes = {s: int(sizes[s]) for s in SPLITS}
        self.seed = int(seed)
        level, split = self._level_and_split()
        if level not in STAR_LEVELS or split not in SPLITS:
            raise ValueError(
                f"StarDatasetManager cannot generate {self.full_name!r}: expected "
                f"dhruveshpatel/<{'|'.join(STAR_LEVELS)}>/<{'|'.join(SPLITS)}>"
            )

    def _level_and_split(self):
        hub_path, _, split = parse_hf_dataset_full_name(self.full_name)
        return hub_path.split("/")[-1], split

    def prepare_data(self, manual_cache_dir: str, tokenizer: Any, *args: Any, **kwargs: Any):
        self._tokenizer = tokenizer
        return super().prepare_data(manual_cache_dir, tokenizer, *args, **kwargs)

    def _metadata(self) -> Dict[str, Any]:
        level, split = self._level_and_split()
        meta = {
            "level": level, "split": split, "size": self.split_sizes[split], "seed": self.seed,
            "stream_seed": split_seed(self.seed, split),
        }
        tokenizer = getattr(self, "_tokenizer", None)
        if tokenizer is not None:  # the cache holds token ids: another vocabulary is other data
            size = getattr(tokenizer, "full_vocab_size", None) or len(tokenizer)
            meta["tokenizer"] = f"{type(tokenizer).__name__} of {size} ids"
        return meta

    def _download(self, num_proc: Optional[int] = None) -> datasets.Dataset:
        meta = self._metadata()
        rows = generate_star_split(meta["level"], meta["split"], meta["size"], meta["seed"])
        return datasets.Dataset.from_list(rows)

    def _manually_cache(self, ds: datasets.Dataset, manual_cache_dir: str) -> None:
        def write(tmp: Path) -> None:
            ds.save_to_disk(str(tmp), num_shards=self.iterable_dataset_shards)
            (tmp / METADATA_FILE).write_text(json.dumps(self._metadata(), indent=2))

        write_cache_atomically(self._get_cache_dir(manual_cache_dir), write)

    def _check_cache(self, manual_cache_dir: str) -> bool:
        cache_dir = self._get_cache_dir(manual_cache_dir)
        if not super()._check_cache(manual_cache_dir):
            return False
        meta_file = cache_dir / METADATA_FILE
        if meta_file.is_file():
            found = json.loads(meta_file.read_text())
            if "stream_seed" not in found and isinstance(found.get("seed"), int):
                found["stream_seed"] = _legacy_split_seed(found["seed"], found.get("split", "train"))
            wanted = self._metadata()
            if "tokenizer" not in found or "tokenizer" not in wanted:  # unknown on one side: not compared
                found.pop("tokenizer", None)
                wanted.pop("tokenizer", None)
            if found != wanted:
                raise ValueError(
                    f"The STAR cache at {cache_dir.resolve()} was generated with {found}, but this "
                    f"run asks for {wanted}. Fix: delete {cache_dir.resolve()} (it is regenerated), "
                    f"use another DATA_DIR, or set star_split_sizes / star_seed (and the tokenizer) to match the cache."
                )
        return True
