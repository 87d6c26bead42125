"""Whether a checkpoint was trained on the data a command configures.

A job that loads a checkpoint (eval, ``generate_arlm``, resume) builds its data from its own
config. Data generated from a seed (STAR: ``star_seed``, ``star_split_sizes``) or encoded by a
tokenizer is other data when those differ: a checkpoint trained with ``star_seed=42`` and scored
with ``star_seed=40`` may be scored on graphs it was trained on. xlm-core saves the composed config
with every checkpoint, so its ``hyper_parameters`` hold the recipe the weights were trained on.

:func:`data_recipe` reads the recipe of a config, as data: each dataset manager's
:data:`RECIPE_KEYS` and the tokenizer node. :func:`check_same_data` refuses a different seed or
tokenizer, naming each setting, both values and the overrides that fix it, and warns of other split
sizes (each split is its own stream, so more or fewer rows of it are still that split). A value recorded as an unresolved
interpolation (``${...}``), or absent on one side, counts as unknown and is not compared.
"""

import warnings
from typing import Any, Dict, List, Mapping, Optional

RECIPE_KEYS = ("seed", "split_sizes")
"""The settings of a dataset manager that choose which rows it makes."""
WARNED_KEYS = ("split_sizes",)
"""Settings whose difference only takes more or fewer rows of the same streams: a warning."""
TOKENIZER_KEY = "global_components.tokenizer"


class DataRecipeMismatchError(ValueError):
    """The checkpoint was trained on other data than the configured job uses."""


def _plain(value: Any) -> Any:
    """A config value as plain data (an OmegaConf node, resolved, or a recorded dict)."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _known(value: Any) -> bool:
    if isinstance(value, str):
        return not value.startswith("${")
    if isinstance(value, dict):
        return all(_known(v) for v in value.values())
    return value is not None


def data_recipe(config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``{"datamodule.dataset_managers.<stage>.<name>.<key>": value, "global_components.tokenizer":
    {...}}`` of ``config`` (a recorded ``hyper_parameters`` dict or a composed config); settings
    not set, or not resolvable, are left out."""
    if not isinstance(config, Mapping) and not hasattr(config, "get"):
        return {}
    recipe: Dict[str, Any] = {}
    managers = _get(_get(config, "datamodule"), "dataset_managers")
    for stage, named in (_plain(managers) or {}).items():
        for name, manager in (named or {}).items():
            for key in RECIPE_KEYS:
                value = manager.get(key) if isinstance(manager, dict) else None
                if _known(value):
                    recipe[f"datamodule.dataset_managers.{stage}.{name}.{key}"] = value
    tokenizer = _plain(_get(_get(config, "global_components"), "tokenizer"))
    if isinstance(tokenizer, dict):
        recipe[TOKENIZER_KEY] = {k: v for k, v in tokenizer.items() if _known(v)}
    return recipe


def _get(node: Any, key: str) -> Any:
    try:
        return node.get(key) if node is not None else None
    except Exception:  # an interpolation that cannot be resolved here
        return None


def recipe_differences(recorded: Mapping[str, Any], configured: Mapping[str, Any]) -> List[str]:
    """``"<key>: trained with <recorded>, configured <configured>"`` for each setting both know."""
    return [
        f"{key}: trained with {recorded[key]!r}, configured {configured[key]!r}"
        for key in sorted(set(recorded) & set(configured))
        if recorded[key] != configured[key]
    ]


def check_same_data(recorded_config: Optional[Mapping[str, Any]], configured: Any, source: str) -> None:
    """Raise :class:`DataRecipeMismatchError` when the seeds or tokenizer ``configured`` names
    differ from those the checkpoint ``source`` records (``recorded_config``: its
    ``hyper_parameters``); warn when only split sizes differ."""
    recorded, ours = data_recipe(recorded_config), data_recipe(configured)
    sizes = [key for key in recorded if key.endswith(WARNED_KEYS)]
    resized = recipe_differences({k: recorded[k] for k in sizes}, ours)
    if resized:
        warnings.warn(f"{source} was trained with other split sizes than this job configures ({'; '.join(resized)})")
    differences = recipe_differences({k: v for k, v in recorded.items() if k not in sizes}, ours)
    if differences:
        raise DataRecipeMismatchError(
            f"{source} was trained on other data than this job configures ({'; '.join(differences)}): "
            f"its scores or outputs here could come from its own training rows, or from text encoded "
            f"another way. Fix: run with the settings it was trained with (e.g. star_seed=..., the same "
            f"tokenizer), or pass a checkpoint trained on this data"
        )
