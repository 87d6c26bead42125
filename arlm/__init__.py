"""arlm: a causal rotary Transformer language model for xLM, with a Hugging Face face."""

import warnings
from importlib import metadata


def _warn_if_xlm_models_installed() -> None:
    try:
        version = metadata.version("xlm-models")
    except metadata.PackageNotFoundError:
        return
    warnings.warn(
        f"The 'xlm-models' distribution ({version}) is installed and ships its own top-level "
        "'arlm' package, which conflicts with this one (files may overwrite each other and xLM "
        "may pick up the wrong configs). Uninstall it: pip uninstall -y xlm-models",
        stacklevel=2,
    )


_warn_if_xlm_models_installed()

from arlm.network.config import DecoderConfig  # noqa: E402
from arlm.network.decoder import DecoderStack  # noqa: E402
from arlm.loss_arlm import ARLMLoss  # noqa: E402
from arlm.model_arlm import RotaryTransformerARLMModel  # noqa: E402
from arlm.hf import (  # noqa: E402
    ArlowConfig,
    ArlowForCausalLM,
    ArlowModel,
    ArlowPreTrainedModel,
    ArlowRMSNorm,
    ArlowRotaryEmbedding,
    apply_rotary_pos_emb,
)
from arlm.pretrain.tokenizer import ArlowTokenizerFast  # noqa: E402


def register_arlow_with_auto_classes() -> None:
    """Make ``model_type="arlowgpt"`` directories load through ``AutoConfig``, ``AutoModel``,
    ``AutoModelForCausalLM`` and ``AutoTokenizer`` (no ``trust_remote_code``). Idempotent."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    AutoConfig.register(ArlowConfig.model_type, ArlowConfig, exist_ok=True)
    AutoModel.register(ArlowConfig, ArlowModel, exist_ok=True)
    AutoModelForCausalLM.register(ArlowConfig, ArlowForCausalLM, exist_ok=True)
    AutoTokenizer.register(ArlowConfig, fast_tokenizer_class=ArlowTokenizerFast, exist_ok=True)


register_arlow_with_auto_classes()

__all__ = [
    "ARLMLoss",
    "ArlowConfig",
    "ArlowForCausalLM",
    "ArlowModel",
    "ArlowPreTrainedModel",
    "ArlowRMSNorm",
    "ArlowRotaryEmbedding",
    "ArlowTokenizerFast",
    "DecoderConfig",
    "DecoderStack",
    "RotaryTransformerARLMModel",
    "apply_rotary_pos_emb",
]
