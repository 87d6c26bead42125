"""The Hugging Face face of the shared decoder: Arlow config, models, tokenizer, export."""

from arlm.hf.configuration_arlow import ArlowConfig
from arlm.hf.modeling_arlow import (
    ArlowForCausalLM,
    ArlowModel,
    ArlowPreTrainedModel,
    ArlowRMSNorm,
    ArlowRotaryEmbedding,
    apply_rotary_pos_emb,
)
from arlm.hf.tokenization_arlow import ArlowTokenizerFast, train_arlow_tokenizer


def register_arlow_with_auto_classes() -> None:
    """Make ``model_type="arlowgpt"`` directories load through ``AutoConfig``, ``AutoModel``,
    ``AutoModelForCausalLM`` and ``AutoTokenizer`` (no ``trust_remote_code``). Idempotent."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    AutoConfig.register(ArlowConfig.model_type, ArlowConfig, exist_ok=True)
    AutoModel.register(ArlowConfig, ArlowModel, exist_ok=True)
    AutoModelForCausalLM.register(ArlowConfig, ArlowForCausalLM, exist_ok=True)
    AutoTokenizer.register(ArlowConfig, fast_tokenizer_class=ArlowTokenizerFast, exist_ok=True)


__all__ = [
    "ArlowConfig",
    "ArlowForCausalLM",
    "ArlowModel",
    "ArlowPreTrainedModel",
    "ArlowRMSNorm",
    "ArlowRotaryEmbedding",
    "ArlowTokenizerFast",
    "apply_rotary_pos_emb",
    "register_arlow_with_auto_classes",
    "train_arlow_tokenizer",
]
