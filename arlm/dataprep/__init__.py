"""Data plumbing for xLM's DatasetManager: :mod:`~arlm.dataprep.cache` (crash-safe manual caches)
and :mod:`~arlm.dataprep.star` (STAR generated locally with xlm-core's own generators)."""
