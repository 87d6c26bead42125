"""Run safety and plumbing for the xLM jobs: what keeps a run from destroying or misreading files.

:mod:`~arlm.runtime.atomic_files` writes files and directories whole or not at all (every writer
of the package uses it), through temporaries :mod:`~arlm.runtime.partial_files` names and removes
when their writer died; :mod:`~arlm.runtime.checkpoint_io` is the one checkpoint writer and the
Lightning ``CheckpointIO`` plugin (atomic saves, the newest valid checkpoint on load);
:mod:`~arlm.runtime.preflight` refuses, before a job starts, unusable directories and config
values (the pydantic schema of :mod:`~arlm.runtime.config_schema`), sizes that cannot fit and a
fresh start over a run's checkpoints, with the one refusal type ``JobRefused``;
:mod:`~arlm.runtime.run_lock` keeps two runs out of one checkpoint directory;
:mod:`~arlm.runtime.multirun` gives each job of a sweep its own run directory;
:mod:`~arlm.runtime.stopped_run` makes a run stopped by a signal or a NaN loss exit non-zero and
resume where it stopped, and :mod:`~arlm.runtime.final_checkpoint` a finished one end with a
checkpoint of its last step; :mod:`~arlm.runtime.resume` reconciles a resumed run with its command;
:mod:`~arlm.runtime.cpu_precision` keeps fp32 matmuls exact on the CPU;
:mod:`~arlm.runtime.step_speed` makes the training step cheaper with the same results (fused AdamW,
foreach EMA and gradient norm); :mod:`~arlm.runtime.fsdp2_strategy` is ``trainer_strategy=fsdp2``
(Lightning's ``ModelParallelStrategy``, sharded checkpoint directories written atomically) and
:mod:`~arlm.runtime.fsdp2_sharding` how it shards the network; :mod:`~arlm.runtime.consolidate`
turns any checkpoint (a sharded directory) into one file.
"""
