"""``python -m arlm.jobs`` prints the directory to put on ``XLM_MODELS_PATH`` for arlm's job types."""

from arlm.jobs import xlm_models_dir

print(xlm_models_dir())
