"""Run safety and plumbing for the xLM jobs: what keeps a run from destroying or misreading files.

:mod:`~arlm.runtime.atomic_files` writes files and directories whole or not at all (every writer
of the package uses it).
:mod:`~arlm.runtime.checkpoint_load` reads one checkpoint without running code from it;
:mod:`~arlm.runtime.checkpoint_io` is the Lightning ``CheckpointIO`` plugin (atomic saves, the
newest valid checkpoint on load, shape checks); :mod:`~arlm.runtime.resume` reconciles a resumed
run with its configuration; :mod:`~arlm.runtime.run_lock` keeps two runs out of one checkpoint
directory; :mod:`~arlm.runtime.config_checks` refuses bad Hydra values before a job starts;
:mod:`~arlm.runtime.cpu_precision` keeps fp32 matmuls exact on the CPU.
"""
