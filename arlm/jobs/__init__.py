"""The one home of what this package adds to the ``xlm`` CLI.

* :mod:`arlm.jobs.generate`: ``xlm job_type=generate_arlm``;
* :mod:`arlm.jobs.export_hf`: ``xlm job_type=export_hf``;
* :mod:`arlm.jobs.hub_preflight`: the Hydra callback that checks xlm-core's own
  ``job_type=push_to_hub`` before it starts (set in ``configs/model_type/arlm.yaml``);
* :mod:`arlm.jobs.run_components`: a run's tokenizer and datamodule, built for these jobs as
  xlm-core's own jobs build them.

The two job types are listed in ``configs/commands.yaml``. xLM reads that file only as
``<model directory>/configs/commands.yaml`` of a directory named in an ``xlm_models.json``: it
lists an installed package twice (xlm-core 0.3.1), so a package's own ``commands.yaml`` would stop
every ``xlm`` call with ``Duplicate command name``. The one ``xlm-models/xlm_models.json``
registers them as the model ``arlm_jobs`` = ``..``, the directory above it, whose ``configs/``
holds ``commands.yaml``: the checkout, where xLM reads ``./xlm-models`` when run from its root,
or ``hydra_plugins/arlm`` inside an installed wheel, which mirrors it. Anywhere else,
``export XLM_MODELS_PATH=$(python -m arlm.jobs)`` points xLM at it. (The Hydra configs themselves
need no variable: see ``hydra_plugins/arlm_search_path.py``.)
"""

from importlib.util import find_spec
from pathlib import Path

XLM_MODELS_PACKAGE = "hydra_plugins.arlm.xlm_models"


def xlm_models_dir() -> Path:
    """The directory holding arlm's ``xlm_models.json``: the checkout's ``xlm-models/`` for an
    editable install, the wheel's ``hydra_plugins/arlm/xlm_models/`` otherwise."""
    try:
        spec = find_spec(XLM_MODELS_PACKAGE)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise ModuleNotFoundError(
            f"{XLM_MODELS_PACKAGE} is not installed: arlm is imported from a bare checkout. Install "
            "it (pip install -e <checkout>) or use XLM_MODELS_PATH=<checkout>/xlm-models"
        )
    return Path(spec.submodule_search_locations[0])
