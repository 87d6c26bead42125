"""Checkpoint files: what they hold and whether a job can use them, with one set of messages.

:mod:`~arlm.checkpoints.read` is the one reader (every kind accepted: Lightning ``.ckpt``,
model-only ``.safetensors`` or torch files, sharded checkpoint directories consolidated on the CPU
by :mod:`~arlm.checkpoints.sharded`; read as data, never run);
:mod:`~arlm.checkpoints.checks` says whether contents can be used (finite raw and EMA weights, a
resume point, weights that fit a model); :mod:`~arlm.checkpoints.network` compares the network a
checkpoint records with the configured one, :mod:`~arlm.checkpoints.data_recipe` the data (seeds,
tokenizer) it was trained on with the configured data. No Lightning, Hydra or xlm-core here, so the export
reads checkpoints as training does; the one writer is :mod:`arlm.runtime.checkpoint_io`.
"""
