"""``python -m arlm.jobs`` prints the directory to put on ``XLM_MODELS_PATH`` for arlm's job types."""

from arlm.jobs import JOBS_DIR

print(JOBS_DIR)
