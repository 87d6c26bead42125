"""Data plumbing for xLM's DatasetManager: atomic caches and locally generated STAR data."""
