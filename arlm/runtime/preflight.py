"""Everything checked before a job starts, and the one way a job is refused (:class:`JobRefused`).

:class:`Preflight` (a Hydra callback, registered by ``model_type/arlm``) runs, in order:

* before Hydra makes the run directory (``on_run_start`` / ``on_multirun_start``), ``job_name``
  (:func:`~arlm.runtime.config_schema.job_name_problem`: it names that directory), then the
  directories the job writes (:func:`directory_problems`: a ``LOG_DIR`` that is a file, lies under
  a file, is a dangling link, read-only or full; ``DATA_DIR`` for ``prepare_data``), which would
  otherwise end in a raw ``NotADirectoryError`` naming neither the variable nor the fix;
* before every job, the config values (:func:`config_problems`: the schema of
  :mod:`arlm.runtime.config_schema`, then the sizes that cannot work, :func:`length_problems` and
  :func:`memory_problems`), and a fresh start over a run's checkpoints
  (:func:`fresh_start_problem`), and a resume from another run's checkpoint into a job directory
  holding its own (:func:`foreign_resume_problem`).

Hydra turns an ``Exception`` raised by a callback into a warning and goes on, so every refusal
before a job (these, the run lock, a sweep, ``push_to_hub``'s checks) is a :class:`JobRefused`: a
``SystemExit`` with status 1 and the message.
"""

import os
from pathlib import Path
from typing import Any, List, Optional, Tuple

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from arlm.checkpoints.network import model_arguments, network_of
from arlm.checkpoints.read import checkpoints_in
from arlm.checkpoints.sharded import sharded_directory
from arlm.model_arlm import xlm_argument
from arlm.network.memory_budget import FP32_BYTES, TRAINING_COPIES, fit_problem, host_memory_bytes, rope_table_bytes
from arlm.network.value_checks import is_int
from arlm.runtime.config_schema import is_unset, job_name_problem, schema_problems, select

MIN_FREE_BYTES = 1 << 20
"""Less free space than this on the filesystem of a directory to write is taken as full."""
DIRECTORIES = (("paths.log_dir", "LOG_DIR"), ("paths.data_dir", "DATA_DIR"))


class JobRefused(SystemExit):
    """A job refused before it starts: exit status 1 with the message (a ``SystemExit``, which
    Hydra and xlm-core let through, unlike an ``Exception`` raised by a callback)."""


class ConfigValueError(ValueError):
    """A config key holds a value of the wrong kind or range."""


def _existing_ancestor(path: str) -> Tuple[str, Optional[str]]:
    """The deepest existing ancestor of ``path`` (or ``path``), and the problem on the way there:
    a dangling symbolic link, or a file where a directory has to be made."""
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        current = os.path.dirname(current)
    if os.path.islink(current) and not os.path.exists(current):
        return current, f"{current} is a symbolic link to {os.readlink(current)}, which does not exist"
    if not os.path.isdir(current):
        if current == os.path.abspath(path):
            return current, f"{current} is a file, not a directory"
        return current, f"{current} is a file, so {path} cannot be created under it"
    return current, None


def directory_problem(path: Any, name: str, must_write: bool) -> Optional[str]:
    """What keeps the job from using ``path`` (the value of ``name``) as a directory, or None."""
    text = str(path)
    if not text.strip():
        return f"{name} is empty. Fix: set it to a directory path (unset it for the default)"
    if text.startswith("~"):
        return f"{name}={text} starts with '~', which is not expanded here. Fix: use an absolute path ($HOME/...)"
    ancestor, problem = _existing_ancestor(text)
    if problem is not None:
        return f"{name}={text}: {problem}. Fix: point {name} at a directory (new or existing)"
    if not must_write:
        return None
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return (
            f"{name}={text}: {ancestor} is not writable (permissions, or a read-only filesystem). "
            f"Fix: point {name} at a writable directory"
        )
    stats = os.statvfs(ancestor)
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        return f"{name}={text}: the filesystem of {ancestor} is full ({free} bytes free). Fix: free space, or point {name} at another filesystem"
    return None


def directory_problems(cfg: DictConfig) -> List[str]:
    """One message per directory of :data:`DIRECTORIES` the job cannot use (``DATA_DIR`` must be
    writable only for ``job_type=prepare_data``: other jobs may read a cache from a read-only place)."""
    problems = []
    for key, variable in DIRECTORIES:
        path = select(cfg, key)
        if path is None:
            continue
        must_write = key == "paths.log_dir" or cfg.get("job_type") == "prepare_data"
        problem = directory_problem(path, f"{variable} ({key})", must_write)
        if problem is not None:
            problems.append(problem)
    return problems


def _positive_int(cfg: DictConfig, key: str) -> Optional[int]:
    value = select(cfg, key)
    return int(value) if is_int(value) and value > 0 else None


def job_memory_bytes(cfg: DictConfig) -> Optional[int]:
    """Memory a job can use at most: this machine's, plus that of every visible CUDA device times
    ``trainer.num_nodes`` for training (a sharded model spreads over them)."""
    host = host_memory_bytes()
    if host is None:
        return None
    if cfg.get("job_type") != "train" or not torch.cuda.is_available():
        return host
    devices = sum(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    return host + devices * (_positive_int(cfg, "trainer.num_nodes") or 1)


def memory_problems(cfg: DictConfig) -> List[str]:
    """One message per size of ``cfg`` that cannot fit in :func:`job_memory_bytes`: the RoPE
    tables and the weights of the configured network (its :class:`~arlm.network.config.DecoderConfig`;
    training keeps :data:`~arlm.network.memory_budget.TRAINING_COPIES` fp32 copies of each
    parameter), and a training batch (logits over the vocabulary and one hidden state per layer
    per token). An unknown vocabulary (``${tokenizer:...}`` before the tokenizer exists) counts
    as one id."""
    node = select(cfg, "model")
    network = network_of(model_arguments(node)) if isinstance(node, DictConfig) else None
    limit = job_memory_bytes(cfg)
    if network is None or limit is None:
        return []

    def named(*fields: str) -> str:
        return ", ".join("model.{}={}".format(*xlm_argument(field, getattr(network, field))) for field in fields)

    where, problems, training = "memory on this machine", [], cfg.get("job_type") == "train"
    vocab = network.vocab_size if is_int(select(cfg, "model.num_embeddings")) else 0
    parameters, copies = network.parameter_count, TRAINING_COPIES if training else 1
    problems.append(fit_problem(
        f"{named('max_positions')} (block_size + input_block_size unless set; RoPE tables of that many "
        f"positions x {named('rotary_dim')})", rope_table_bytes(network.max_positions, network.rotary_dim), limit, where,
        "set block_size (or model.max_length) to the longest sequence of the data",
    ))
    problems.append(fit_problem(
        f"The model ({parameters:,} parameters from {named(*(['vocab_size'] if vocab else []), 'd_model', 'n_layers', 'd_ff')}"
        + (", as fp32 weights, gradients and AdamW's two moments)" if copies > 1 else ")"),
        parameters * FP32_BYTES * copies, limit, where, "lower model.d_model, model.num_layers or model.dim_feedforward",
    ))
    batch, block = _positive_int(cfg, "per_device_batch_size"), _positive_int(cfg, "block_size")
    if training and batch and block:
        problems.append(fit_problem(
            f"A training batch of per_device_batch_size={batch} x block_size={block} tokens ("
            + (f"logits over {vocab} ids and " if vocab else "")
            + f"{network.n_layers} hidden states of model.d_model={network.d_model} per token)",
            batch * block * (vocab + network.n_layers * network.d_model) * FP32_BYTES, limit, where,
            "lower block_size to the longest sequence of the data, or per_device_batch_size",
        ))
    return [problem for problem in problems if problem is not None]


def length_problems(cfg: DictConfig) -> List[str]:
    """``predictor.max_length`` (prompt and answer) shorter than a row of the data, ``block_size +
    input_block_size`` (its default): every longer prompt would be cut or left no room to answer."""
    max_length, block = _positive_int(cfg, "predictor.max_length"), _positive_int(cfg, "block_size")
    if max_length is None or block is None:
        return []
    rows = block + (_positive_int(cfg, "input_block_size") or 0)
    if max_length >= rows:
        return []
    return [
        f"predictor.max_length={max_length} is shorter than the rows of the data (block_size + input_block_size "
        f"= {rows} tokens, prompt and answer). Fix: leave predictor.max_length at its default; cap the "
        f"generated tokens with predictor.max_steps instead"
    ]


CHECKPOINT_PREFIXES = {"eval": "eval", "generate_arlm": "generation"}
"""The jobs that fall back to ``<checkpointing_dir>/best.ckpt``, then ``last.ckpt``, and their config group."""


def sharded_fallback_problems(cfg: DictConfig) -> List[str]:
    """``eval``/``generate_arlm`` given no checkpoint, whose run left sharded checkpoint directories
    only (FSDP2): xlm-core's fallback takes files, so it would report no checkpoint at all."""
    prefix = CHECKPOINT_PREFIXES.get(str(select(cfg, "job_type", "")))
    directory = select(cfg, "checkpointing_dir")
    keys = ("ckpt_path", "checkpoint_path", "model_only_checkpoint_path")
    if prefix is None or is_unset(directory) or any(not is_unset(select(cfg, f"{prefix}.{k}")) for k in keys):
        return []
    candidates = [os.path.join(str(directory), name) for name in ("best.ckpt", "last.ckpt")]
    if any(os.path.isfile(path) for path in candidates):
        return []
    sharded = [path for path in candidates if sharded_directory(Path(path)) is not None]
    if not sharded:
        return []
    return [
        f"{sharded[0]} is a sharded checkpoint directory (trainer_strategy=fsdp2) and {prefix}'s automatic choice "
        f"of best.ckpt / last.ckpt takes files. Fix: pass +{prefix}.ckpt_path={os.path.join(sharded[0], 'meta.pt')}"
    ]


def config_problems(cfg: DictConfig) -> List[str]:
    """Every value of ``cfg`` that breaks the schema, one message each; when they are valid, the
    sizes that cannot work."""
    problems = schema_problems(cfg)
    return problems if problems else length_problems(cfg) + memory_problems(cfg) + sharded_fallback_problems(cfg)


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` listing :func:`config_problems`."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigValueError("Invalid configuration: " + "; ".join(problems))


def check_output_dir(path: Any, key: str = "generation.output_dir") -> None:
    """Raise :class:`ConfigValueError` if ``path`` exists and is not a directory (checked before work)."""
    if path is None:
        return
    if os.path.exists(str(path)) and not os.path.isdir(str(path)):
        raise ConfigValueError(f"{key}={path} is an existing file, not a directory. Fix: pass a directory path (new or existing)")
    ancestor = os.path.dirname(os.path.abspath(str(path)))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ConfigValueError(f"{key}={path} cannot be created: {ancestor} is a file. Fix: pass a directory path")


def _checkpoints_shown(directory: Path) -> Optional[str]:
    """The names of the checkpoints in ``directory`` (the first four, and how many more), or None when it holds none."""
    existing = [path.name for path in checkpoints_in(directory)]
    if not existing:
        return None
    return ", ".join(existing[:4]) + (f" and {len(existing) - 4} more" if len(existing) > 4 else "")


def fresh_start_problem(job_type: Any, resume: Any, checkpointing_dir: Any) -> Optional[str]:
    """Why a ``train`` job with ``resume_from_checkpoint=false`` must not start, or None.

    Such a job trains from step 0 and writes its checkpoints (``last.ckpt``, the periodic and
    ``best`` ones) under ``checkpointing_dir`` with the names an earlier run there used, so that
    run's ``*.ckpt`` files would be overwritten one by one. Other jobs, resuming jobs and an empty
    or missing directory are fine."""
    if job_type != "train" or resume is not False or checkpointing_dir is None:
        return None
    directory = Path(str(checkpointing_dir))
    shown = _checkpoints_shown(directory)
    if shown is None:
        return None
    return (
        f"checkpointing_dir={directory} already holds checkpoints of an earlier run ({shown}); "
        f"resume_from_checkpoint=false starts at step 0 and would overwrite them. Fix: leave out "
        f"resume_from_checkpoint=false to continue that run, start a new run under another job_name=..., "
        f"or move those checkpoints away first"
    )


def foreign_resume_problem(job_type: Any, resume_path: Any, checkpointing_dir: Any) -> Optional[str]:
    """Why a ``train`` job resuming another directory's checkpoint (``resume_checkpoint_path``)
    must not start, or None: when its own ``checkpointing_dir`` already holds checkpoints, the two
    runs would mix there (Lightning rotates the job's own periodic checkpoints out and saves the
    new run as ``last-v1`` / ``best-v1`` beside the old ``last`` / ``best``, which resume and eval
    then pick). A checkpoint of the job's own directory, or an empty directory, is fine."""
    if job_type != "train" or not isinstance(resume_path, str) or not resume_path or checkpointing_dir is None:
        return None
    directory = Path(str(checkpointing_dir))
    if Path(resume_path).resolve().parent == directory.resolve():
        return None
    shown = _checkpoints_shown(directory)
    if shown is None:
        return None
    return (
        f"resume_checkpoint_path={resume_path} is another run's checkpoint, but checkpointing_dir={directory} "
        f"holds this job's own ({shown}); training on from it there would mix the two runs (this job's "
        f"checkpoints replaced, the new ones saved as last-v1 / best-v1 beside the old last / best). Fix: "
        f"continue from it under a new job_name=..., or leave resume_checkpoint_path out to continue this job's own run"
    )


class Preflight(Callback):
    """Hydra callback: :func:`directory_problems` before Hydra makes the run directory,
    :func:`check_config`, :func:`fresh_start_problem` and :func:`foreign_resume_problem` before every job."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_unusable_directories(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_unusable_directories(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_config(config)
        except ConfigValueError as error:
            raise JobRefused(f"{type(error).__name__}: {error}") from None
        problem = fresh_start_problem(
            select(config, "job_type"), select(config, "resume_from_checkpoint"), select(config, "checkpointing_dir"),
        )
        if problem is not None:
            raise JobRefused(f"CheckpointsWouldBeOverwritten: {problem}")
        problem = foreign_resume_problem(
            select(config, "job_type"), select(config, "resume_checkpoint_path"), select(config, "checkpointing_dir"),
        )
        if problem is not None:
            raise JobRefused(f"CheckpointsWouldMix: {problem}")


def _refuse_unusable_directories(config: DictConfig) -> None:
    problems = directory_problems(config)
    name = select(config, "job_name")  # None: unset or not resolvable yet, refused before the job
    job_name = None if name is None else job_name_problem("job_name", name)
    if job_name is not None:
        raise JobRefused(f"ConfigValueError: {job_name}")
    if problems:
        raise JobRefused("DirectoryError: " + "; ".join(problems))
