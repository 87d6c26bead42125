"""Hydra's plugin scan puts arlm's configs on the search path of every Hydra run where arlm is installed.

The configs are the package ``hydra_plugins.arlm.configs``: the checkout's top-level ``configs/``
for an editable install (setuptools maps the package there; nothing is copied or linked), the
wheel's copy otherwise. xLM's own route, ``<installed package>/configs``, cannot serve an editable
install: ``arlm/configs`` does not exist in the checkout. Hydra runs scanned plugins before the
ones xLM registers, so the entry comes after xLM's primary configs (which win over same-named
files) and before xLM's ``configs/common`` and the model directories xLM discovers.
This module imports neither arlm nor torch: Hydra imports it in every application it runs.

The job types (``configs/commands.yaml``) are xLM's business, not Hydra's: see :mod:`arlm.jobs`.
"""

from importlib.util import find_spec
from typing import Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

CONFIGS_PACKAGE = "hydra_plugins.arlm.configs"


def installed_configs_dir() -> Optional[str]:
    """The directory of :data:`CONFIGS_PACKAGE`, or ``None`` where arlm is not installed.

    ``None`` is the case of a bare checkout on ``PYTHONPATH``, which makes this module importable
    but not the package; there xLM finds the configs through an ``xlm_models.json``.
    """
    try:
        spec = find_spec(CONFIGS_PACKAGE)
    except ModuleNotFoundError:
        return None
    return None if spec is None else spec.submodule_search_locations[0]


class ArlmSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        configs = installed_configs_dir()
        if configs is not None:
            search_path.append(provider="arlm", path=f"file://{configs}")
