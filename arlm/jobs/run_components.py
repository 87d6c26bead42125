"""A run's tokenizer and datamodule, built as xlm-core's own jobs build them, for arlm's jobs."""

from typing import Any, Callable, Optional, Tuple

import hydra
from omegaconf import DictConfig, OmegaConf


def _point_resolver(name: str, resolve: Callable[[str], Any]) -> None:
    OmegaConf.clear_resolver(name)
    OmegaConf.register_new_resolver(name, resolve)


def run_components(cfg: DictConfig, with_datamodule: bool) -> Tuple[Any, Optional[Any]]:
    """``(tokenizer, datamodule or None)``: ``cfg.global_components`` (and ``cfg.datamodule``)
    instantiated, with the ``global_components``, ``tokenizer`` (and ``datamodule``) resolvers of
    the config pointing at them, so that ``${tokenizer:full_vocab_size}`` resolves as in training."""
    components = hydra.utils.instantiate(cfg.global_components)
    _point_resolver("global_components", lambda name: components[name])
    datamodule = hydra.utils.instantiate(cfg.datamodule) if with_datamodule else None
    tokenizer = components["tokenizer"] if datamodule is None else datamodule.tokenizer
    _point_resolver("tokenizer", lambda name: getattr(tokenizer, name))
    if datamodule is not None:
        _point_resolver("datamodule", lambda name: getattr(datamodule, name))
    return tokenizer, datamodule
