"""Resuming safely after a divergence: no NaN resume point, and the configured learning rate wins.

xlm-core's ``OnExceptionCheckpoint`` saves ``on_exception.ckpt`` on every exception, and resuming
prefers that file. After a NaN/Inf loss that checkpoint is the diverged state, so the corrected
command diverges again. Here:

* :class:`NonFiniteLossError` replaces the harness's bare "NaN loss encountered" with the step,
  the learning rate in use and the settings to change;
* the ``on_exception.ckpt`` written for it is marked (:data:`arlm.runtime.checkpoint_io.NON_FINITE_STOP_KEY`,
  set by ``ARLMHarness.on_save_checkpoint``), and resuming skips marked checkpoints, so the next
  run resumes from the last periodic checkpoint (``last.ckpt``);
* :func:`reconcile_learning_rate` makes a resumed run use the learning rate of the command, not
  the one stored in the checkpoint's optimizer and scheduler, and reports the change;
* :func:`check_resume_step` refuses a resume point past the command's ``trainer.max_steps``, which
  would train nothing and report the checkpoint's model as this run's;
* :func:`fresh_start_problem` refuses ``resume_from_checkpoint=false`` where the run's
  checkpoint directory already holds checkpoints: starting at step 0 there would overwrite them.
"""

import math
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import OmegaConf
from xlm.utils.rank_zero import RankedLogger

from arlm.network.value_checks import is_int
from arlm.runtime.checkpoint_load import checkpoints_in

logger = RankedLogger(__name__, rank_zero_only=True)

NON_FINITE_PREFIXES = ("NaN loss encountered", "Inf loss (")


def is_non_finite_loss_error(error: BaseException) -> bool:
    """True for the ``RuntimeError`` xlm-core's ``Harness`` raises on a NaN or Inf training loss."""
    return isinstance(error, NonFiniteLossError) or str(error).startswith(NON_FINITE_PREFIXES)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the message names the step and what to change."""

    @classmethod
    def from_harness(cls, harness: Any, error: BaseException) -> "NonFiniteLossError":
        cfg = harness.config
        lr = OmegaConf.select(cfg, "optimizer.lr", default="?")
        warmup = OmegaConf.select(cfg, "lr_scheduler.num_warmup_steps", default="?")
        clip = OmegaConf.select(cfg, "trainer.gradient_clip_val", default=None)
        try:
            current = harness.trainer.optimizers[0].param_groups[0]["lr"]
        except (AttributeError, IndexError, RuntimeError):
            current = "?"
        return cls(
            f"{error}. Training stopped; on_exception.ckpt is marked as diverged and resuming skips "
            f"it, so re-running the command resumes from the last periodic checkpoint ({harness.config.checkpointing_dir}/last.ckpt) "
            f"with the settings of the new command. Learning rate at the failure: {current}. Fix: "
            f"lower optimizer.lr (now {lr}), raise lr_scheduler.num_warmup_steps (now {warmup}), "
            f"set trainer.gradient_clip_val (now {clip}); check the data of this step if it persists."
        )


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


def fresh_start_problem(job_type: Any, resume: Any, checkpointing_dir: Any) -> Optional[str]:
    """Why a ``train`` job with ``resume_from_checkpoint=false`` must not start, or None.

    Such a job trains from step 0 and writes its checkpoints (``last.ckpt``, the periodic and
    ``best`` ones) under ``checkpointing_dir`` with the names an earlier run there used, so that
    run's ``*.ckpt`` files would be overwritten one by one. Other jobs, resuming jobs and an empty
    or missing directory are fine."""
    if job_type != "train" or resume is not False or checkpointing_dir is None:
        return None
    directory = Path(str(checkpointing_dir))
    existing = [path.name for path in checkpoints_in(directory)]
    if not existing:
        return None
    shown = ", ".join(existing[:4]) + (f" and {len(existing) - 4} more" if len(existing) > 4 else "")
    return (
        f"checkpointing_dir={directory} already holds checkpoints of an earlier run ({shown}); "
        f"resume_from_checkpoint=false starts at step 0 and would overwrite them. Fix: leave out "
        f"resume_from_checkpoint=false to continue that run, start a new run under another job_name=..., "
        f"or move those checkpoints away first"
    )
