"""Under ``xlm -m`` (a Hydra multirun), every job of a sweep gets its own run directory.

A run lives in ``logs/<job_name>/``: its checkpoints, its resume point, its run lock. ``job_name``
names the experiment, not the swept values, so the jobs of ``xlm -m ... optimizer.lr=0.001,0.01``
would share one directory: job 1 would resume job 0's finished checkpoint, train nothing at its own
learning rate and report job 0's model as its own. :class:`MultirunJobNames` (a Hydra callback,
registered by ``model_type/arlm``) appends to each job's ``job_name`` the overrides that the sweep
varies (on the command line or in ``hydra.sweeper.params``), in Hydra's ``override_dirname`` form:
``<job_name>__optimizer.lr=0.01``.

So re-running the same sweep resumes each job from its own checkpoints, a value added to the
sweep starts a new run, and ``xlm -m job_type=eval ... optimizer.lr=0.001,0.01`` evaluates each
job of the training sweep. A sweep over keys that do not name a run (:data:`NOT_RUN_KEYS`:
``job_type``, ``job_name`` itself, and the ``eval``, ``generation``, ``export_hf`` and ``paths``
settings) leaves ``job_name`` alone, and so do keys named in
``hydra.job.config.override_dirname.exclude_keys``; a swept value with ``/`` in it is refused
(it cannot be part of a directory name), and so is a fixed ``paths.output_dir`` or
``checkpointing_dir`` that would put every job's checkpoints in one place again, decided on the
composed config (set on the command line or in an experiment file alike; one that interpolates
``job_name``, ``hydra:job.override_dirname`` / ``hydra:job.num``, or a per-job run directory, is
per job and passes). Single runs (without ``-m``) are not changed.

Mechanism (Hydra's public configuration, nothing patched): before the sweep starts, the
multirun's task overrides get ``job_name='<its value>__${hydra:job.override_dirname}'`` and its
Hydra overrides ``hydra.job.config.override_dirname.exclude_keys=[<every key not swept>]``;
Hydra composes every job from these.
"""

from typing import Any, Iterable, List

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from arlm.runtime.preflight import JobRefused

NOT_RUN_KEYS = ("job_type", "job_name")
NOT_RUN_PREFIXES = ("eval.", "generation.", "export_hf.", "paths.", "hydra.")


def _names_a_run(key: str) -> bool:
    return key not in NOT_RUN_KEYS and not key.startswith(NOT_RUN_PREFIXES)


def _quoted(text: str) -> str:
    """``text`` as a single-quoted Hydra override value (interpolations inside are kept)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_nameable(override: Any) -> None:
    """Refuse a swept value that cannot be part of a directory name (it holds ``/``)."""
    values = list(override.sweep_string_iterator()) if override.is_choice_sweep() else []
    bad = [value for value in values if "/" in value]
    if bad:
        key = override.key_or_group
        raise JobRefused(
            f"SweepRefused: xlm -m sweeps {key} over {bad[0]!r}, which holds '/': it cannot be part of each "
            f"job's job_name (its run directory logs/<job_name>/). Fix: leave {key} out of the job names with "
            f"'hydra.job.config.override_dirname.exclude_keys=[{key}]' (the jobs then share one run "
            f"directory, and a train job resumes the one before it), or run the jobs one by one"
        )


RUN_DIRECTORY_KEYS = ("paths.output_dir", "checkpointing_dir")
PER_JOB_INTERPOLATIONS = ("job_name", "hydra:job.override_dirname", "hydra:job.num")


def check_run_directories_per_job(config: DictConfig, swept: List[str]) -> None:
    """Refuse a sweep over ``swept`` whose composed ``config`` (the command line, the experiment
    file, any ``--config-dir``) fixes one ``paths.output_dir`` or ``checkpointing_dir`` for every
    job: job 1 would resume job 0's checkpoints. A value is per job when it interpolates one of
    :data:`PER_JOB_INTERPOLATIONS`, or a run directory key that is per job
    (``checkpointing_dir=${paths.output_dir}/ck``); a swept key is per job."""
    raw = OmegaConf.to_container(OmegaConf.masked_copy(config, ["paths", "checkpointing_dir"]), resolve=False)
    values = {"paths.output_dir": (raw.get("paths") or {}).get("output_dir"), "checkpointing_dir": raw.get("checkpointing_dir")}
    per_job = set(swept) & set(RUN_DIRECTORY_KEYS)
    for _ in RUN_DIRECTORY_KEYS:  # a key may interpolate another: settle in as many rounds as there are keys
        per_job |= {key for key, value in values.items() if _interpolates(value, [*PER_JOB_INTERPOLATIONS, *per_job])}
    for key in RUN_DIRECTORY_KEYS:
        value = values[key]
        if key in per_job or value is None:
            continue
        raise JobRefused(
            f"SweepRefused: xlm -m sweeps {', '.join(swept)}, but {key}={value} is one directory for every job: "
            f"each train job would resume the checkpoints of the one before it and train nothing of its own. "
            f"Fix: leave {key} out (each job then gets <LOG_DIR>/<job_name>__<its swept values>), or make it per "
            f"job with an interpolation, e.g. '{key}={str(value).rstrip('/')}/${{job_name}}'"
        )


def _interpolates(value: Any, names: Iterable[str]) -> bool:
    return isinstance(value, str) and any(f"${{{name}}}" in value for name in names)


def swept_run_keys(task_overrides: List[str], excluded: Iterable[str] = ()) -> List[str]:
    """The keys (or config groups) that ``task_overrides`` sweep over and that name a run, less
    ``excluded``; :class:`~arlm.runtime.preflight.JobRefused` for one whose values cannot be part of a directory name."""
    parsed = OverridesParser.create().parse_overrides(task_overrides)
    swept = [o for o in parsed if o.is_sweep_override() and _names_a_run(o.key_or_group) and o.key_or_group not in excluded]
    for override in swept:
        _check_nameable(override)
    return [o.key_or_group for o in swept]


class MultirunJobNames(Callback):
    """Hydra callback: under ``-m``, each job's ``job_name`` ends with the values it sweeps."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("params") or {}
        given = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        task = [f"{key}={value}" for key, value in params.items()] + given
        user_excluded = set(config.hydra.job.config.override_dirname.exclude_keys)
        swept = swept_run_keys(task, user_excluded)
        if not swept:
            return
        check_run_directories_per_job(config, swept)
        parsed = OverridesParser.create().parse_overrides(task)
        keys = {o.key_or_group for o in parsed}
        excluded = user_excluded | (keys - set(swept)) | {"job_name"}
        job_name = OmegaConf.to_container(OmegaConf.masked_copy(config, ["job_name"]), resolve=False)["job_name"]
        config.hydra.overrides.hydra.append(
            f"hydra.job.config.override_dirname.exclude_keys=[{','.join(_quoted(k) for k in sorted(excluded))}]"
        )
        config.hydra.overrides.task.append("job_name=" + _quoted(f"{job_name}__${{hydra:job.override_dirname}}"))
