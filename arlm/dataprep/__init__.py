"""Data plumbing for xLM's DatasetManager: :mod:`~arlm.dataprep.cache` (crash-safe manual caches)
and :mod:`~arlm.dataprep.star` (STAR generated locally with xlm-core's own generators); :mod:`~arlm.dataprep.datamodule` is xlm-core's ``TextDataModule`` that also
distributes the data under ``trainer_strategy=fsdp2``."""
