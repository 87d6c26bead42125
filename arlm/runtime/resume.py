"""What a resumed run must agree with: the command's learning rate and its ``trainer.max_steps``.

* :func:`reconcile_learning_rate` makes a resumed run use the learning rate of the command, not
  the one stored in the checkpoint's optimizer and scheduler, and reports the change (a run
  resumed after a divergence is usually re-run with a lower one);
* :func:`check_resume_step` refuses a resume point past the command's ``trainer.max_steps``, which
  would train nothing and report the checkpoint's model as this run's;
* :func:`check_resume_world_size` refuses to resume on another number of ranks than the one that
  wrote the checkpoint (:data:`WORLD_SIZE_KEY`), whose data loader position is kept per rank.

Which checkpoint a run resumes from (never one written at a NaN/Inf stop) is
:func:`arlm.runtime.checkpoint_io.load_newest_valid`; a fresh start over a run's checkpoints is
refused before the job (:func:`arlm.runtime.preflight.fresh_start_problem`).
"""

import math
from typing import Any, Dict, Optional

from omegaconf import OmegaConf
from xlm.utils.rank_zero import RankedLogger

from arlm.network.value_checks import is_int

logger = RankedLogger(__name__, rank_zero_only=True)

def _configured_lr(cfg: Any) -> Optional[float]:
    value = OmegaConf.select(cfg, "optimizer.lr", default=None)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def reconcile_learning_rate(checkpoint: Dict[str, Any], cfg: Any) -> Optional[str]:
    """Rescale the checkpoint's optimizer and scheduler to ``cfg.optimizer.lr``; return the report.

    The scheduler's ``base_lrs`` (the peak rate it was built with) are compared with the configured
    rate; where they differ, ``base_lrs``, the optimizer's ``initial_lr``/``lr`` and the
    scheduler's last rates are scaled by ``configured / stored``, so the schedule continues at its
    step with the new peak. Returns None when nothing differs.
    """
    new_lr = _configured_lr(cfg)
    schedulers = checkpoint.get("lr_schedulers") or []
    optimizers = checkpoint.get("optimizer_states") or []
    if new_lr is None or not schedulers or not optimizers:
        return None
    scheduler = schedulers[0]
    base_lrs = scheduler.get("base_lrs") or []
    if not base_lrs or all(math.isclose(old, new_lr, rel_tol=1e-9) for old in base_lrs):
        return None
    old_lrs = list(base_lrs)
    factors = [new_lr / old if old else 1.0 for old in old_lrs]
    scheduler["base_lrs"] = [new_lr for _ in old_lrs]
    if "_last_lr" in scheduler:
        scheduler["_last_lr"] = [lr * f for lr, f in zip(scheduler["_last_lr"], factors)]
    for group, factor in zip(optimizers[0].get("param_groups", []), factors):
        group["lr"] = group["lr"] * factor
        group["initial_lr"] = new_lr
    message = (
        f"Resuming at step {checkpoint.get('global_step')}: the checkpoint's optimizer was configured with "
        f"lr={old_lrs[0]:g}, this command sets optimizer.lr={new_lr:g}; the schedule continues with {new_lr:g}"
    )
    logger.warning(message)
    return message


class ResumePastMaxStepsError(ValueError):
    """The resume point lies beyond the ``trainer.max_steps`` of the command."""


def check_resume_step(checkpoint: Dict[str, Any], max_steps: Optional[int], source: Any) -> None:
    """Raise :class:`ResumePastMaxStepsError` if ``checkpoint`` (read from ``source``) was saved at
    a global step beyond ``max_steps`` (``None`` or -1: no limit). A checkpoint at exactly
    ``max_steps`` is a finished run re-run with its own command, which only runs the test pass."""
    step = checkpoint.get("global_step")
    if not is_int(step) or not is_int(max_steps) or max_steps < 0 or step <= max_steps:
        return
    raise ResumePastMaxStepsError(
        f"{source} is at global step {step}, past trainer.max_steps={max_steps} of this command: resuming "
        f"it would train nothing and report the step-{step} model as this run's. Fix: raise trainer.max_steps "
        f"above {step} to train on from it, or start a new run under another job_name=... (the checkpoints "
        f"of the run at step {step} are kept)"
    )


WORLD_SIZE_KEY = "arlm_world_size"
"""Checkpoint entry: the number of ranks (processes over all nodes) of the run that wrote it."""


class ResumeWorldSizeError(ValueError):
    """The resume point was written by another number of ranks than this run has."""


def check_resume_world_size(checkpoint: Dict[str, Any], world_size: int, source: Any) -> None:
    """Raise :class:`ResumeWorldSizeError` if ``checkpoint`` (read from ``source``) records another
    number of ranks than ``world_size``. Its data loader state (each rank's position in the epoch,
    its sampler's) only means something for the same number of ranks; torch's stateful loader
    would fail on it deep inside, or resume on other rows. A checkpoint that records none (written
    before the entry existed) is let through."""
    recorded = checkpoint.get(WORLD_SIZE_KEY)
    if not is_int(recorded) or recorded == world_size:
        return
    raise ResumeWorldSizeError(
        f"{source} was written by a run of {recorded} rank(s) and this run has {world_size}: the data loader's "
        f"position in the epoch is stored per rank and cannot be carried over to another number of ranks. Fix: "
        f"resume with {recorded} rank(s) (trainer.devices x trainer.num_nodes = {recorded}), or start a new run "
        f"from its weights: python -m arlm.runtime.consolidate {source} weights.ckpt, then "
        f"model_only_checkpoint_path=weights.ckpt job_name=<a new name>"
    )


def drop_other_sampler_position(checkpoint: Dict[str, Any], source: Any) -> bool:
    """Remove from ``checkpoint`` the training loader's position when another sampler wrote it, and
    warn; True if removed. Runs of one process written before training rows were drawn by one
    seeded distributed sampler (docs/distributed.md) stored a ``RandomSampler``'s iterator, which
    torch's stateful loader cannot load into that sampler (a bare ``AssertionError`` when saving the
    next checkpoint). Such a run resumes at its step with the epoch's rows drawn afresh."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
    loaders = fit_loop.get("combined_loader") or []
    if not any(isinstance(state.get("_sampler_iter_state"), dict) and "sampler_iter_state" in state["_sampler_iter_state"]
               for state in loaders if isinstance(state, dict)):
        return False
    del fit_loop["combined_loader"]
    logger.warning(
        f"{source} holds the position of an older sampler in the training data; resuming at its step "
        f"with the rows of this epoch drawn afresh by the run's seeded sampler"
    )
    return True
