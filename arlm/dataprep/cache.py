"""``AtomicCacheDatasetManager``: xlm-core's DatasetManager with crash-safe manual caches.

xlm-core decides whether a dataset is prepared by checking that its cache directory exists, so a
``prepare_data`` killed half-way through ``save_to_disk`` would leave a directory that every later
run trusts. Here the dataset is written with :func:`arlm.runtime.atomic_files.write_directory_atomically`
(a hidden sibling ``.<split>.partial-<pid>-<token>@<host>`` renamed into place only when complete): the
cache directory either holds a whole dataset or does not exist, and re-running ``prepare_data``
recovers (removing the temporaries of dead runs).

Missing data and failed downloads raise :class:`DataNotPreparedError`, which names the cache
directory that was looked for and how to fill it.

A complete cache records what it holds in ``arlm_cache_manifest.json`` (every file written and
its size), written inside the temporary directory before the rename. :func:`cache_problem`
compares a cache with it (caches written before the manifest existed: their arrow files are
read through); ``prepare_data`` deletes a corrupt cache and rebuilds it, and loading one
raises :class:`CorruptCacheError` naming the directory and the fix.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import datasets
import pyarrow as pa
import torch
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler
from xlm import flags
from xlm.datamodule import DatasetManager
from xlm.utils.rank_zero import RankedLogger

from arlm.runtime.atomic_files import AtomicWriteError, TargetExistsError, write_directory_atomically
from arlm.runtime.partial_files import temporary_path

logger = RankedLogger(__name__, rank_zero_only=True)

MANIFEST = "arlm_cache_manifest.json"


class DataNotPreparedError(FileNotFoundError):
    """A dataset is neither in the manual cache nor obtainable from its source."""


class CorruptCacheError(DataNotPreparedError):
    """A prepared-data cache directory exists but does not hold what was written there."""


def write_manifest(directory: Path) -> None:
    """Record every file of ``directory`` (recursively) and its size in :data:`MANIFEST`."""
    files = {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()}
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def _arrow_problem(path: Path) -> Optional[str]:
    try:
        with pa.memory_map(str(path)) as source:
            pa.ipc.open_stream(source).read_all()
    except (OSError, pa.ArrowException) as error:
        return f"{path.name} is unreadable ({error})"
    return None


def cache_problem(directory: Path) -> Optional[str]:
    """Why the cache in ``directory`` is incomplete or corrupt, or None if it is whole."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError) as error:
            return f"{MANIFEST} is unreadable ({error})"
        for name, size in files.items():
            path = directory / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, {size} were written"
        return None
    state = directory / "state.json"
    if not state.is_file():
        return "state.json is missing (not a saved dataset)"
    try:
        data_files = [entry["filename"] for entry in json.loads(state.read_text())["_data_files"]]
    except (ValueError, KeyError, TypeError) as error:
        return f"state.json is unreadable ({error})"
    for name in data_files:
        if not (directory / name).is_file():
            return f"{name} is missing"
        problem = _arrow_problem(directory / name)
        if problem:
            return problem
    return None


def _fix(cache_dir: Path) -> str:
    return (
        f"Fix: run `xlm job_type=prepare_data experiment=<experiment>` with the same DATA_DIR (it "
        f"detects the damage and rebuilds the cache), or delete {cache_dir.resolve()}."
    )


def write_cache_atomically(cache_dir: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_dir)`` to fill the new, empty directory ``tmp_dir``, add :data:`MANIFEST` to
    it and rename it to ``cache_dir`` (:func:`arlm.runtime.atomic_files.write_directory_atomically`).

    ``cache_dir`` must not exist yet. If another process completes ``cache_dir`` first, its copy
    is kept and ours is discarded. On any error (or interrupt) the temporary directory is
    removed; a hard kill leaves it behind under a hidden name, and the next write cleans it.

    Raises:
        DataNotPreparedError: the filesystem is full; it names the cache and the fix.
    """
    cache_dir = Path(cache_dir)

    def write_with_manifest(tmp_dir: Path) -> None:
        write(tmp_dir)
        write_manifest(tmp_dir)

    try:
        write_directory_atomically(cache_dir, write_with_manifest)
    except TargetExistsError:
        logger.info(f"Another process wrote the prepared-data cache {cache_dir.resolve()} meanwhile; keeping its copy")
    except AtomicWriteError as error:
        if not error.no_space:
            raise
        raise DataNotPreparedError(
            f"Could not write the prepared-data cache {cache_dir.resolve()}: {error.reason}. The partial "
            f"copy was removed. Fix: free space on that filesystem "
            f"or set DATA_DIR to a filesystem with room, then re-run"
        ) from error


class AtomicCacheDatasetManager(DatasetManager):
    """Drop-in ``xlm.datamodule.DatasetManager`` (same constructor) with atomic cache writes, and
    the same training batches on one process as on N ranks (:meth:`get_dataloader`)."""

    _manual_cache_dir: Optional[str] = None

    def prepare_data(self, manual_cache_dir: str, tokenizer, num_proc=None, load: bool = False):
        self._manual_cache_dir = manual_cache_dir
        return super().prepare_data(manual_cache_dir, tokenizer, num_proc=num_proc, load=load)

    def _manually_cache(self, ds: datasets.Dataset, manual_cache_dir: str) -> None:
        cache_dir = self._get_cache_dir(manual_cache_dir)
        write_cache_atomically(
            cache_dir, lambda tmp: ds.save_to_disk(str(tmp), num_shards=self.iterable_dataset_shards)
        )

    def _check_cache(self, manual_cache_dir: str) -> bool:
        """True if the cache exists and is whole; a corrupt one is moved aside and removed."""
        cache_dir = self._get_cache_dir(manual_cache_dir)
        if not cache_dir.exists():
            return False
        problem = cache_problem(cache_dir)
        if problem is None:
            return True
        logger.warning(f"the prepared-data cache {cache_dir.resolve()} is corrupt ({problem}); rebuilding it")
        aside = temporary_path(cache_dir)
        os.rename(cache_dir, aside)
        shutil.rmtree(aside, ignore_errors=True)
        return False

    def setup(self, stage: str, manual_cache_dir: str, *args: Any, **kwargs: Any) -> None:
        """xlm-core's ``setup``; if a datasets map cache (``cache-*.arrow``, rebuilt on demand) in
        the cache directory is unreadable, it is deleted and ``setup`` retried once."""
        try:
            return super().setup(stage, manual_cache_dir, *args, **kwargs)
        except (OSError, pa.ArrowException) as error:
            cache_dir = self._get_load_cache_dir(manual_cache_dir)
            broken = [p for p in sorted(cache_dir.glob("cache-*.arrow")) if _arrow_problem(p)]
            if not broken:
                raise CorruptCacheError(
                    f"Reading the prepared-data cache {cache_dir.resolve()} of {self.full_name!r} failed: "
                    f"{type(error).__name__}: {error}. {_fix(cache_dir)}"
                ) from error
            for path in broken:
                path.unlink()
            message = f"deleted unreadable datasets map caches {[p.name for p in broken]} in {cache_dir.resolve()}; rebuilding them"
            logger.warning(message)
            return super().setup(stage, manual_cache_dir, *args, **kwargs)

    def get_dataloader(self, type: str, is_ddp: bool, rank: int, world_size: int) -> Any:
        """xlm-core's loader, except for training over a map-style dataset. xlm-core samples with a
        ``RandomSampler`` on one process and with a ``StatefulDistributedSampler`` seeded from the
        random state at that moment under DDP, which differs between one process and N (Lightning
        re-seeds distributed ranks after the model is built). Here both use the distributed
        sampler seeded with the run's seed (``torch.initial_seed()``: what ``seed_everything``
        set), over ``world_size`` ranks or one, so every step's global batch holds the same rows
        whatever the number of ranks (``tests/e2e/test_distributed_cli.py``), and the loader's
        position is in the checkpoint on one process too."""
        if type != "train" or self.is_iterable_dataset or flags.DEBUG_OVERFIT:
            return super().get_dataloader(type, is_ddp, rank, world_size)
        replicas, position = (world_size, rank) if is_ddp else (1, 0)
        sampler = StatefulDistributedSampler(
            self.dataset, num_replicas=replicas, rank=position, seed=torch.initial_seed(), shuffle=True
        )
        return StatefulDataLoader(self.dataset, collate_fn=self.collator, sampler=sampler, **self.dataloader_kwargs)

    def _download(self, num_proc: Optional[int] = None) -> datasets.Dataset:
        try:
            return super()._download(num_proc=num_proc)
        except Exception as error:
            cache_dir = self._get_cache_dir(self._manual_cache_dir or "data")
            raise DataNotPreparedError(
                f"Dataset {self.full_name!r} is not in the prepared-data cache "
                f"({cache_dir.resolve()}) and could not be loaded from its source: "
                f"{type(error).__name__}: {error}. Fix: run `xlm job_type=prepare_data "
                f"experiment=<experiment>` once with network access (unset HF_HUB_OFFLINE / "
                f"HF_DATASETS_OFFLINE), or set DATA_DIR to the directory that already holds "
                f"the prepared data."
            ) from error

    def _load_from_cache(self, manual_cache_dir: str) -> datasets.Dataset:
        cache_dir = self._get_load_cache_dir(manual_cache_dir)
        if not cache_dir.is_dir():
            raise DataNotPreparedError(
                f"No prepared data for {self.full_name!r} at {cache_dir.resolve()} "
                f"(DATA_DIR={manual_cache_dir!r}). Fix: run `xlm job_type=prepare_data "
                f"experiment=<experiment>` with the same DATA_DIR, or set DATA_DIR to the "
                f"directory that holds the prepared data."
            )
        problem = cache_problem(cache_dir)
        if problem is not None:
            raise CorruptCacheError(f"The prepared-data cache {cache_dir.resolve()} of {self.full_name!r} is corrupt: {problem}. {_fix(cache_dir)}")
        try:
            return super()._load_from_cache(manual_cache_dir)
        except (OSError, pa.ArrowException) as error:
            raise CorruptCacheError(
                f"The prepared-data cache {cache_dir.resolve()} of {self.full_name!r} cannot be read: "
                f"{type(error).__name__}: {error}. {_fix(cache_dir)}"
            ) from error
