"""The Hugging Face face of the shared decoder, and exactly the code an Arlow export carries.

:mod:`~arlm.hf.configuration_arlow` (``ArlowConfig``), :mod:`~arlm.hf.modeling_arlow`
(``ArlowModel``, ``ArlowForCausalLM``), :mod:`~arlm.hf.hf_cache` (a transformers ``Cache`` as the
decoder's cache), :mod:`~arlm.hf.peft_defaults` (PEFT's LoRA targets) and
:mod:`~arlm.hf.shape_annotations` (jaxtyping's stand-ins in the bundle). They import only
:mod:`arlm.network` and each other, so every module here, with the network modules it imports,
is the remote-code bundle an Arlow export carries (:mod:`arlm.export.remote_code`).
"""

from arlm.hf.configuration_arlow import ArlowConfig
from arlm.hf.modeling_arlow import (
    ArlowForCausalLM,
    ArlowModel,
    ArlowPreTrainedModel,
    ArlowRMSNorm,
    ArlowRotaryEmbedding,
    apply_rotary_pos_emb,
)

__all__ = [
    "ArlowConfig",
    "ArlowForCausalLM",
    "ArlowModel",
    "ArlowPreTrainedModel",
    "ArlowRMSNorm",
    "ArlowRotaryEmbedding",
    "apply_rotary_pos_emb",
]
