"""Model-only weight files (``model_only_checkpoint_path``) checked against the model before xlm-core loads them.

xlm-core loads them itself (``xlm.utils.hf_hub.load_model_weights_into_model``, in ``train``,
``eval`` and ``generate_arlm``): a truncated ``.safetensors`` file, one with an absurd header, or
weights of another model size failed there with the library's words (``SafetensorError: Error
while deserializing header: incomplete metadata``, ``Error(s) in loading state_dict``), naming
neither the file nor the key. :func:`check_model_only_weights` runs from
``ARLMHarness.instantiate_model``, once the configured model exists and before xlm-core loads:
it reads the file's tensor names and shapes (for safetensors the header only, no data) and
compares them with the model's, naming the key, the file, the first difference and the fix.
"""

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from omegaconf import OmegaConf
from safetensors import SafetensorError, safe_open

from arlm.runtime.checkpoint_load import CheckpointError, load_safely

MODEL_ONLY_KEYS = (
    "model_only_checkpoint_path", "eval.model_only_checkpoint_path", "generation.model_only_checkpoint_path",
)
UNSET = ("", "none", "null")


def weight_shapes(path: Path) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every tensor in the weights file ``path`` (``.safetensors``: the header
    only; otherwise a ``weights_only`` ``torch.load`` of a plain state dict)."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    state = load_safely(path, "cpu")
    if "state_dict" in state:
        raise CheckpointError(
            f"{path} is a Lightning checkpoint (it has 'state_dict'), not a model-only state dict; a "
            f"checkpoint goes to ckpt_path (+eval.ckpt_path, +generation.ckpt_path, resume_checkpoint_path)"
        )
    return {name: tuple(value.shape) for name, value in state.items() if isinstance(value, torch.Tensor)}


def _first_difference(saved: Dict[str, Tuple[int, ...]], own: Dict[str, Tuple[int, ...]], strict: bool) -> Optional[str]:
    for name, shape in saved.items():
        if name in own and shape != own[name]:
            return f"{name} has shape {shape} in the file but {own[name]} in the configured model"
    if strict:
        missing = [name for name in own if name not in saved]
        unexpected = [name for name in saved if name not in own]
        if missing or unexpected:
            return (
                f"the file lacks {len(missing)} weights of the model (e.g. {missing[:2]}) and has {len(unexpected)} "
                f"it does not (e.g. {unexpected[:2]}); strict_model_only_load=false loads the common ones"
            )
    return None


def check_model_only_weights(model: torch.nn.Module, cfg: Any) -> None:
    """Raise ``ValueError`` if a model-only weights file named in ``cfg`` (:data:`MODEL_ONLY_KEYS`)
    cannot be read or does not fit ``model`` (another shape; with ``strict_model_only_load``,
    missing or extra weights). Paths that are unset or not files are left to xlm-core's messages;
    sharded safetensors (``*.index.json``) are not checked."""
    strict = OmegaConf.select(cfg, "strict_model_only_load", default=True) is not False
    own = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    for key in MODEL_ONLY_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or str(value).lower() in UNSET or not Path(str(value)).is_file() or str(value).endswith(".json"):
            continue
        path = Path(str(value))
        try:
            saved = weight_shapes(path)
        except (SafetensorError, CheckpointError, OSError) as error:
            raise ValueError(
                f"{key}={path} cannot be read as model weights: {error}. It is truncated, corrupt or not a "
                f"weights file. Fix: pass the model.safetensors (or .pt/.bin state dict) written by "
                f"save_pretrained / extract_checkpoint again, or another file"
            ) from error
        difference = _first_difference(saved, own, strict)
        if difference is not None:
            raise ValueError(
                f"{key}={path} does not fit the configured model: {difference}. Fix: use the model config "
                f"(model=..., model.d_model, model.num_layers, ...) the weights were made with, or weights made for this one"
            )
