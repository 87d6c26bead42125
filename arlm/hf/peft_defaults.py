"""PEFT's default LoRA targets for Arlow, so that ``LoraConfig(task_type="CAUSAL_LM")`` without
``target_modules`` works on ``ArlowForCausalLM`` as it does on Llama.

PEFT picks the default target modules of a ``transformers`` model by ``config.model_type`` in its
public table ``peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`` (read by
``LoraModel._prepare_adapter_config``); PEFT has no other way to declare them. Arlow's attention
projections carry Llama's names, so its entry is Llama's. :func:`register_lora_target_modules` adds
it when PEFT is installed (an entry already there is kept); :mod:`arlm.hf.modeling_arlow` calls it
on import, in arlm and in the code an export carries.
"""

LORA_TARGET_MODULES = ("q_proj", "v_proj")


def register_lora_target_modules(model_type: str) -> bool:
    """Give ``model_type`` PEFT's default LoRA targets; False when PEFT is not installed."""
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    except ImportError:
        return False
    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault(model_type, list(LORA_TARGET_MODULES))
    return True
