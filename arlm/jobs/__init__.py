"""The ``xlm`` job types of this package (``generate_arlm``), as a directory xLM can discover.

xlm-core 0.3.1 lists an installed model package twice internally (``discover_external_models``
adds it both as a directory and as a package), so a ``commands.yaml`` inside ``arlm/configs``
would be read twice and stop every ``xlm`` call with ``ExternalModelConflictError: Duplicate
command name``. The job types are therefore registered through directory discovery of this
folder (model name ``arlm_jobs``): the repository's ``xlm_models.json`` points here, and with an
installed wheel ``export XLM_MODELS_PATH=$(python -m arlm.jobs)`` does the same from anywhere.
"""

from pathlib import Path

JOBS_DIR = Path(__file__).resolve().parent
