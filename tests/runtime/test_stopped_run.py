"""The loop state written when validation is interrupted makes Lightning re-enter that validation.

The end-to-end proof (a real SIGTERM, the re-run's metrics and final weights) is
``tests/e2e/test_signals_cli.py``; here the rewritten counters are checked against Lightning's own
reading of them.
"""

from lightning.pytorch.loops.progress import _BatchProgress

from arlm.runtime.stopped_run import VAL_PROGRESS_KEY, VALIDATION_PENDING_KEY, mark_validation_pending, stop_signal


def _stopped_between_batches():
    """Validation progress when SIGTERM stopped the second validation of an epoch after 1 of its
    batches (4 batches of the first validation done): every counter equal, as Lightning leaves it."""
    return {
        "global_step": 8,
        "loops": {"fit_loop": {VAL_PROGRESS_KEY: {
            "total": {"ready": 5, "started": 5, "processed": 5, "completed": 5},
            "current": {"ready": 1, "started": 1, "processed": 1, "completed": 1},
            "is_last_batch": False,
        }}},
    }


def test_marked_progress_reads_as_restarted_mid_evaluation_from_the_first_batch():
    checkpoint = _stopped_between_batches()
    mark_validation_pending(checkpoint)
    progress = _BatchProgress()
    progress.load_state_dict(checkpoint["loops"]["fit_loop"][VAL_PROGRESS_KEY])
    total = progress.total
    # Lightning's _EvaluationLoop.update_restart_stage: RESTARTED_MID_EVALUATION
    assert total.started == total.ready and total.processed == total.started - 1 and total.completed == total.processed
    assert total.completed == 4, "the batches of earlier validations stay counted"
    progress.reset_on_restart()
    assert progress.current.ready == 0, "the data would not be read from the first batch"
    assert checkpoint[VALIDATION_PENDING_KEY] == 8


def test_unmarked_progress_reads_as_finished():
    total = _stopped_between_batches()["loops"]["fit_loop"][VAL_PROGRESS_KEY]["total"]
    assert total["processed"] == total["started"], "Lightning would see it mid-evaluation without the mark"


def test_stop_signal_names_sigterm_and_ctrl_c_only():
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from arlm.runtime.atomic_files import WriteInterrupted

    assert stop_signal(SIGTERMException()) == "SIGTERM"
    assert stop_signal(KeyboardInterrupt()) == "SIGINT"
    assert stop_signal(WriteInterrupted("x")) == "SIGINT"
    assert stop_signal(RuntimeError("boom")) is None
