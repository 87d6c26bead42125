"""Whether a checkpoint was trained as the network a command configures.

Tensor shapes do not tell: weights trained with another activation, rotary width, RoPE base,
norm epsilon, number of heads or final norm load into the configured network without a shape
error and then compute another function. xlm-core saves the composed config with every
checkpoint, so its ``hyper_parameters["model"]`` holds the constructor arguments of the network it
was trained as. Both ``model:`` nodes are read as data into the
:class:`~arlm.network.config.DecoderConfig` they describe
(:func:`arlm.model_arlm.decoder_config_of`: defaults and derived fields as the model builds them),
and the fields that define what the weights compute (:data:`NETWORK_FIELDS`) are compared.

:func:`check_same_network` refuses a difference, naming each argument, both values and the
overrides that fix it: every job that loads a checkpoint's weights into the configured network
(resume, eval, ``generate_arlm``). ``export_hf`` builds the network the checkpoint records instead
and only warns (:func:`warn_if_other_network`). Not compared: the vocabulary and padding id (the
tokenizer's; the vocabulary size is checked on the weights), the length limit, dropout and the
attention kernel. A value recorded as an unresolved interpolation (``${...}``) counts as unknown:
the other side's is taken for it.
"""

import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from arlm.model_arlm import XLM_MODEL_TARGET, decoder_config_of, xlm_argument
from arlm.network.config import DecoderConfig
from arlm.network.value_checks import is_number

NETWORK_FIELDS = (
    "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "activation", "norm", "norm_eps", "rotary_dim",
    "rope_theta", "bias", "final_norm", "tie_word_embeddings",
)
"""The :class:`DecoderConfig` fields that define the function a checkpoint's weights compute."""
UNKNOWN = object()


class NetworkMismatchError(ValueError):
    """The checkpoint was trained as another network than the configured one."""


@dataclass(frozen=True)
class NetworkDifference:
    """One constructor argument whose value differs between the checkpoint and the configured model."""

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


def model_arguments(model_config: Mapping[str, Any]) -> Dict[str, Any]:
    """The constructor arguments of a ``model:`` node (a dict or an OmegaConf node), each value
    or :data:`UNKNOWN` (an unresolved interpolation, or one that cannot be resolved here)."""
    arguments = {}
    for key in model_config:
        if str(key).startswith("_"):
            continue
        try:
            value = model_config[key]
        except Exception:  # an interpolation whose resolver is not registered in this process
            value = UNKNOWN
        arguments[key] = UNKNOWN if isinstance(value, str) and "${" in value else value
    return arguments


def network_of(arguments: Mapping[str, Any]) -> Optional[DecoderConfig]:
    """The network :func:`model_arguments` describe, an unknown value left to the model's default
    (the vocabulary, never compared, one); None when they describe no network the model builds."""
    known = {key: value for key, value in arguments.items() if value is not UNKNOWN}
    if "num_embeddings" not in known:
        known["num_embeddings"], known["padding_idx"] = 1, None
    try:
        return decoder_config_of(known)
    except (TypeError, ValueError):
        return None


def _is_arlm_model(model_config: Optional[Mapping[str, Any]]) -> bool:
    return model_config is not None and model_config.get("_target_", XLM_MODEL_TARGET) == XLM_MODEL_TARGET


def _same(a: Any, b: Any) -> bool:
    if is_number(a) and is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def network_differences(
    checkpoint_model: Optional[Mapping[str, Any]], configured_model: Optional[Mapping[str, Any]]
) -> List[NetworkDifference]:
    """The arguments whose networks differ (:data:`NETWORK_FIELDS`, in that order, named and
    valued as the xLM face's constructor takes them); none when either side is missing or is not
    an arlm model config."""
    if not (_is_arlm_model(checkpoint_model) and _is_arlm_model(configured_model)):
        return []
    arguments = model_arguments(checkpoint_model), model_arguments(configured_model)
    for mine, other in (arguments, arguments[::-1]):  # an unknown value is the other side's
        mine.update({key: other[key] for key, value in mine.items() if value is UNKNOWN and key in other})
    saved, current = map(network_of, arguments)
    if saved is None or current is None:  # a side describes no network: compare what both record
        keys = [xlm_argument(field, None)[0] for field in NETWORK_FIELDS]
        return [
            NetworkDifference(key, arguments[0][key], arguments[1][key]) for key in keys
            if key in arguments[0] and key in arguments[1] and not _same(arguments[0][key], arguments[1][key])
        ]
    differences = []
    for field in NETWORK_FIELDS:
        before, now = getattr(saved, field), getattr(current, field)
        if not _same(before, now):
            key, before = xlm_argument(field, before)
            differences.append(NetworkDifference(key, before, xlm_argument(field, now)[1]))
    return differences


def recorded_model_config(contents: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The ``model:`` node xlm-core saved with a checkpoint (``hyper_parameters["model"]``), if any."""
    model = (contents.get("hyper_parameters") or {}).get("model")
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
    trained as another network than ``configured_model``: each differing argument, both values,
    and the overrides that configure the checkpoint's network."""
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
