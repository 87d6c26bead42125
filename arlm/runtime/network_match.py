"""Whether a checkpoint was trained as the network a command configures.

Tensor shapes do not tell: weights trained with another activation, rotary width, RoPE base,
norm epsilon, number of heads or final norm load into the configured network without a shape
error and then compute another function. xlm-core saves the whole composed config with every
checkpoint, so ``checkpoint["hyper_parameters"]["model"]`` holds the constructor arguments of
:class:`arlm.model_arlm.RotaryTransformerARLMModel` it was trained with.
:func:`check_same_network` compares those that define what the weights compute
(:data:`NETWORK_KEYS`) with the configured ``model:`` node and refuses a difference, naming each
key, both values and the overrides that fix it. Every job that loads a checkpoint's weights into
the configured network calls it: resume, eval and ``generate_arlm`` (``ARLMHarness``).
``export_hf`` (:mod:`arlm.hf.export`) builds the network the checkpoint records instead, which
exports exactly what was trained whatever the command configures, so it only warns
(:func:`warn_if_other_network`).

Not compared: ``num_embeddings`` and ``padding_idx`` (the tokenizer's; the vocabulary size is
checked on the weights), ``max_length`` (it only bounds the positions), ``dropout`` (training
only) and ``force_flash_attn`` (the kernel, not the function). A key the checkpoint does not
record (a checkpoint older than the key) counts as the constructor's default; one recorded as an
unresolved interpolation (``${...}``) is not compared.
"""

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.network.value_checks import is_number

NETWORK_KEYS = (
    "d_model", "num_layers", "nhead", "num_kv_heads", "dim_feedforward", "activation", "norm",
    "layer_norm_eps", "rotary_emb_dim", "rope_theta", "bias", "final_layer_without_normalization",
    "tie_word_embeddings",
)
MODEL_TARGET = f"{RotaryTransformerARLMModel.__module__}.{RotaryTransformerARLMModel.__name__}"
CONSTRUCTOR_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(RotaryTransformerARLMModel.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}
UNKNOWN = object()


class NetworkMismatchError(ValueError):
    """The checkpoint was trained as another network than the configured one."""


@dataclass(frozen=True)
class NetworkDifference:
    """One network key whose value differs between the checkpoint and the configured model."""

    key: str
    checkpoint: Any
    configured: Any

    def __str__(self) -> str:
        return f"model.{self.key}: checkpoint {self.checkpoint}, configured {self.configured}"

    @property
    def override(self) -> str:
        """The command-line override that gives the configured model the checkpoint's value."""
        value = self.checkpoint
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        return f"model.{self.key}={text}"


def _value(model_config: Mapping[str, Any], key: str) -> Any:
    """``model_config[key]``, the constructor's default when absent, :data:`UNKNOWN` when it is an
    unresolved interpolation or cannot be resolved here."""
    try:
        value = model_config[key] if key in model_config else CONSTRUCTOR_DEFAULTS.get(key, UNKNOWN)
    except Exception:  # an interpolation whose resolver is not registered in this process
        return UNKNOWN
    return UNKNOWN if isinstance(value, str) and "${" in value else value


def network_settings(model_config: Mapping[str, Any]) -> Dict[str, Any]:
    """The :data:`NETWORK_KEYS` of a ``model:`` node, the constructor's defaults filled in; a key
    whose value is unknown (see :func:`_value`) is left out."""
    settings = {key: _value(model_config, key) for key in NETWORK_KEYS}
    return {key: value for key, value in settings.items() if value is not UNKNOWN}


def _effective(settings: Mapping[str, Any], key: str) -> Any:
    """The value the model builds for ``key``: ``num_kv_heads=None`` is ``nhead`` and
    ``dim_feedforward=None`` is ``4 * d_model``."""
    value = settings[key]
    if value is None and key == "num_kv_heads":
        return settings.get("nhead", UNKNOWN)
    if value is None and key == "dim_feedforward" and is_number(settings.get("d_model")):
        return 4 * settings["d_model"]
    return value


def _same(a: Any, b: Any) -> bool:
    if is_number(a) and is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def _is_arlm_model(model_config: Optional[Mapping[str, Any]]) -> bool:
    return model_config is not None and model_config.get("_target_", MODEL_TARGET) == MODEL_TARGET


def network_differences(
    checkpoint_model: Optional[Mapping[str, Any]], configured_model: Optional[Mapping[str, Any]]
) -> List[NetworkDifference]:
    """The :data:`NETWORK_KEYS` whose values differ, in that order; none when either side is
    missing or is not an arlm model config."""
    if not (_is_arlm_model(checkpoint_model) and _is_arlm_model(configured_model)):
        return []
    saved, current = network_settings(checkpoint_model), network_settings(configured_model)
    differences = []
    for key in NETWORK_KEYS:
        if key not in saved or key not in current or (saved[key] is None and current[key] is None):
            continue  # unknown, or derived alike on both sides from a key compared on its own
        before, now = _effective(saved, key), _effective(current, key)
        if before is not UNKNOWN and now is not UNKNOWN and not _same(before, now):
            differences.append(NetworkDifference(key, before, now))
    return differences


def recorded_model_config(checkpoint: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The ``model:`` node xlm-core saved with a checkpoint (``hyper_parameters["model"]``), if any."""
    model = (checkpoint.get("hyper_parameters") or {}).get("model")
    return model if isinstance(model, dict) else None


def describe(differences: List[NetworkDifference]) -> str:
    """``"model.a: checkpoint x, configured y; ..."`` (:class:`NetworkDifference` each)."""
    return "; ".join(map(str, differences))


def fix_for(differences: List[NetworkDifference]) -> str:
    """The fix for ``differences``: the overrides that configure the checkpoint's network."""
    overrides = " ".join(d.override for d in differences)
    return f"Fix: pass the checkpoint's values ({overrides}) or use the model config it was trained with"


def check_same_network(
    checkpoint_model: Optional[Mapping[str, Any]], configured_model: Optional[Mapping[str, Any]], source: Any
) -> None:
    """Raise :class:`NetworkMismatchError` if ``source`` (a checkpoint, named in the message) was
    trained as another network than ``configured_model``: each differing key, both values, and
    the overrides that configure the checkpoint's network."""
    differences = network_differences(checkpoint_model, configured_model)
    if differences:
        raise NetworkMismatchError(
            f"{source} was trained as another network than the configured one: {describe(differences)}. Its "
            f"weights would load without a shape error and compute another function. {fix_for(differences)}"
        )


def warn_if_other_network(
    checkpoint_model: Optional[Mapping[str, Any]], configured_model: Optional[Mapping[str, Any]], source: Any
) -> None:
    """For jobs that rebuild the network from the checkpoint's own settings (``export_hf``): warn,
    naming each difference, that the configured model's settings are not used."""
    differences = network_differences(checkpoint_model, configured_model)
    if differences:
        warnings.warn(
            f"{source} records another network than the configured model ({describe(differences)}); the "
            f"network it records is the one exported"
        )
