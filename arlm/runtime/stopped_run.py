"""A run stopped part-way (SIGTERM, Ctrl+C, a NaN loss, an error) never looks finished, and resumes where it stopped.

xlm-core's ``OnExceptionCheckpoint`` (``callbacks.on_exception_checkpoint``) writes
``on_exception.ckpt`` when an exception stops the Trainer, and resuming prefers that file. With
Lightning 2.5 three things went wrong around it:

* Lightning turns SIGTERM into ``SIGTERMException``, a ``SystemExit`` without a code, so a
  pre-empted ``xlm job_type=train`` exited 0: to ``&&``, Slurm and CI it looked finished.
* Stopped during validation, the model still held the EMA weights that xlm-core's
  ``EMACallback`` swaps in for validation, so the checkpoint stored them as the training weights.
* The loop state saved during validation says the step's validation is over (Lightning restarts
  "on last" and skips it), so the re-run never made that step's metrics or ``best.ckpt``.

:class:`StoppedRunCheckpoint` is xlm-core's callback with these fixed; ``ARLMHarness`` puts it in
place of the Trainer's ``OnExceptionCheckpoint`` (:func:`replace_on_exception_checkpoint`, through
Lightning's ``configure_callbacks``), so every arlm job gets it whatever its callbacks config. When an exception stops the
Trainer it puts the training weights back if validation or test had the EMA weights in, writes
``on_exception.ckpt`` as xlm-core does (not during the sanity check, not before step 2), and, if
the stop came during the validation of a training run, marks that validation as pending
(:data:`VALIDATION_PENDING_KEY`, and the loop state Lightning reads as "restarted in the middle
of validation"), so the re-run validates that step again from its first batch before it trains
on. Then, for a signal, it logs what happened and sets the exit status: 143 (128 + 15) for
SIGTERM; Lightning itself exits 1 after Ctrl+C. In a distributed run (several processes) it also
takes SIGTERM over from Lightning, whose handler hangs the processes now and then
(:meth:`StoppedRunCheckpoint._stop_together`): all stop at the same batch, the checkpoint is written
once and every process exits 143. An error while writing the checkpoint replaces the
stop (exit 1, naming the file), so a non-zero status never hides a missing checkpoint.

A NaN/Inf training loss stops the run with :class:`NonFiniteLossError` (the step, the learning rate
in use and the settings to change, instead of the harness's bare "NaN loss encountered"); the
``on_exception.ckpt`` written for it is marked
(:data:`arlm.checkpoints.checks.NON_FINITE_STOP_KEY`, set by ``ARLMHarness.on_save_checkpoint``),
so resuming skips it and the corrected command resumes from the last periodic checkpoint.
"""

import signal
from typing import Any, Dict, List, Optional, Sequence

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf
from xlm.utils.ema import EMACallback
from xlm.utils.on_exception_checkpoint import OnExceptionCheckpoint
from xlm.utils.rank_zero import RankedLogger

logger = RankedLogger(__name__, rank_zero_only=True)

VALIDATION_PENDING_KEY = "arlm_validation_pending"
VAL_PROGRESS_KEY = "epoch_loop.val_loop.batch_progress"
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM
STAGE_NAMES = {"train": "training", "sanity_check": "the sanity check", "validate": "validation", "test": "test", "predict": "prediction"}
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


def stop_signal(exception: BaseException) -> Optional[str]:
    """``"SIGTERM"`` or ``"SIGINT"`` when ``exception`` is how Lightning reports that signal, else None."""
    if isinstance(exception, SIGTERMException):
        return "SIGTERM"
    if isinstance(exception, KeyboardInterrupt):
        return "SIGINT"
    return None


def mark_validation_pending(checkpoint: Dict[str, Any]) -> None:
    """Make ``checkpoint`` (saved while the validation of step ``global_step`` ran) resume into that
    validation, from its first batch.

    Lightning 2.5 re-enters an interrupted validation on resume when the validation loop's total
    progress shows a batch started but not processed (``RESTARTED_MID_EVALUATION``); a stop between
    batches leaves all four counters equal, which it reads as "validation finished". The counters
    of the batches of this validation are taken back and one unprocessed batch is recorded, and the
    loop's current progress is zeroed, so the data are read from the start again.
    """
    progress = checkpoint["loops"]["fit_loop"][VAL_PROGRESS_KEY]
    before = progress["total"]["completed"] - progress["current"]["completed"]
    progress["total"] = {"ready": before + 1, "started": before + 1, "processed": before, "completed": before}
    progress["current"] = {"ready": 0, "started": 0, "processed": 0, "completed": 0}
    progress["is_last_batch"] = False
    checkpoint[VALIDATION_PENDING_KEY] = checkpoint.get("global_step")


class StoppedRunCheckpoint(OnExceptionCheckpoint):
    """xlm-core's ``OnExceptionCheckpoint`` that keeps the training weights, redoes an interrupted
    validation on resume and gives a signal stop a non-zero exit status (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._evaluating_with_ema: Optional[str] = None
        self._stopping: Optional[Dict[str, bool]] = None
        self._sigterm_received = False
        self._lightning_sigterm_handler: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """With several processes, take SIGTERM over from Lightning (see :meth:`_stop_together`);
        Lightning installs its handler after ``on_fit_start``, before this hook."""
        if trainer.world_size > 1:
            self._sigterm_received = False
            self._lightning_sigterm_handler = signal.signal(signal.SIGTERM, self._note_sigterm)

    def _note_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterm_received = True

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._give_sigterm_back()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._give_sigterm_back()

    def _give_sigterm_back(self) -> None:
        if self._lightning_sigterm_handler is not None:
            signal.signal(signal.SIGTERM, self._lightning_sigterm_handler)
            self._lightning_sigterm_handler = None

    def _stop_together(self, trainer: Trainer) -> None:
        """Stop every process of a distributed run at the same batch once any of them got SIGTERM.

        Lightning's own SIGTERM handler runs a collective (a broadcast) inside the handler, at
        whatever point each process is, and stops each process at the end of the batch in which
        its own signal arrived: the processes then wait in different collectives (a barrier of the
        checkpoint save against the next step's broadcast) and hang. Here the handler only notes
        the signal; every process asks the others at the same points (after each training and
        validation batch, one all-reduce of a flag) and all raise ``SIGTERMException`` together,
        so the checkpoint is written once, by rank 0, and every process exits with status 143."""
        if self._lightning_sigterm_handler is None:
            return
        if trainer.strategy.reduce_boolean_decision(self._sigterm_received, all=False):
            raise SIGTERMException()

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self._stop_together(trainer)

    def on_validation_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            self._stop_together(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._evaluating_with_ema = "validation"

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._evaluating_with_ema = None

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._evaluating_with_ema = "test"

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._evaluating_with_ema = None

    def _put_training_weights_back(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """End the EMA swap of an interrupted validation or test as its end hook would have.

        Lightning runs checkpoint callbacks after all others, so when this callback's start hook
        ran, ``EMACallback``'s had already stored the training weights and copied the EMA ones in."""
        stage, self._evaluating_with_ema = self._evaluating_with_ema, None
        for callback in trainer.callbacks:
            if isinstance(callback, EMACallback) and callback.ema is not None:
                end_hook = callback.on_validation_end if stage == "validation" else callback.on_test_end
                end_hook(trainer, pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._give_sigterm_back()
        if self._evaluating_with_ema is not None:
            self._put_training_weights_back(trainer, pl_module)
        validating = trainer.state.fn == TrainerFn.FITTING and trainer.validating and not trainer.sanity_checking
        self._stopping = {"validation_pending": validating, "written": False}
        try:
            super().on_exception(trainer, pl_module, exception)
            written = self._stopping["written"]
        finally:
            self._stopping = None
        name = stop_signal(exception)
        if name is not None:
            self._report_stop(trainer, name, written, str(exception))
        if isinstance(exception, SIGTERMException):
            exception.code = SIGTERM_EXIT_STATUS  # a SystemExit: Python exits with its code once it leaves the Trainer

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: Dict[str, Any]) -> None:
        if self._stopping is None:
            return
        if self._stopping["validation_pending"]:
            mark_validation_pending(checkpoint)
        self._stopping["written"] = True

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: Dict[str, Any]) -> None:
        step = checkpoint.get(VALIDATION_PENDING_KEY)
        if step is not None:
            logger.warning(f"Resuming at step {step}, whose validation was interrupted: it runs again before training goes on")

    def _report_stop(self, trainer: Trainer, name: str, written: bool, detail: str) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        where = STAGE_NAMES.get(trainer.state.stage.value if trainer.state.stage else None, "setup")
        if written:
            outcome = f"{self.ckpt_path} holds the state of step {trainer.global_step}; re-run the same command to resume from it"
            outcome += " (the interrupted validation runs again first)" if fitting and trainer.validating else ""
        elif fitting:
            outcome = "no checkpoint was written (none before step 2 or during the sanity check); re-running starts afresh"
        else:
            outcome = "re-run the command to evaluate again"
        status = SIGTERM_EXIT_STATUS if name == "SIGTERM" else 1
        detail = f" ({detail})" if detail else ""
        logger.warning(f"Stopped by {name} during {where} at step {trainer.global_step}{detail}: {outcome}. Exit status {status}.")


def replace_on_exception_checkpoint(callbacks: Sequence[Callback]) -> List[Callback]:
    """``[StoppedRunCheckpoint]`` with the directory and file name of xlm-core's
    ``OnExceptionCheckpoint`` in ``callbacks``, to return from ``configure_callbacks`` (Lightning
    then drops the callback it subclasses); ``[]`` when there is none or it is already replaced."""
    for callback in callbacks:
        if type(callback) is OnExceptionCheckpoint:
            return [StoppedRunCheckpoint(dirpath=callback.dirpath, filename=callback.filename)]
    return []
