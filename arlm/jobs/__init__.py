"""The one home of what this package adds to the ``xlm`` CLI, as a directory xLM can discover.

* :mod:`arlm.jobs.generate`: ``xlm job_type=generate_arlm``;
* :mod:`arlm.jobs.export_hf`: ``xlm job_type=export_hf``;
* :mod:`arlm.jobs.hub_preflight`: the Hydra callback that checks xlm-core's own
  ``job_type=push_to_hub`` before it starts (set in ``configs/model_type/arlm.yaml``).

The two job types are registered in ``configs/commands.yaml``, which xLM reads as this folder's
``configs/commands.yaml`` (a link to it). xlm-core 0.3.1 lists an installed model package twice
internally (``discover_external_models`` adds it both as a directory and as a package), so a
``commands.yaml`` inside ``arlm/configs`` would be read twice and stop every ``xlm`` call with
``ExternalModelConflictError: Duplicate command name``. The job types are therefore registered
through directory discovery of this folder (model name ``arlm_jobs``): the repository's
``xlm_models.json`` points here, and with an installed wheel
``export XLM_MODELS_PATH=$(python -m arlm.jobs)`` does the same from anywhere.
"""

from pathlib import Path

JOBS_DIR = Path(__file__).resolve().parent
