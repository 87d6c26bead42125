"""The same network as a model class that ships in ``transformers``, when one expresses it exactly.

An Arlow network (the shared :class:`~arlm.network.decoder.DecoderStack`) is

* ``LlamaForCausalLM`` when it has RMSNorm, SwiGLU, full rotary and a final norm (the parameter
  names are Llama's already; ``attention_bias = mlp_bias = bias``);
* ``GPTNeoXForCausalLM`` with ``use_parallel_residual=False`` when it has LayerNorm, a plain
  ReLU/GELU MLP and a final norm, with partial rotary allowed: q/k/v are fused per head as
  ``[q_h | k_h | v_h]``, grouped-query k/v heads are repeated to every query head, missing biases
  become zeros, ``rotary_pct = rotary_dim / head_dim`` (checked to give back ``rotary_dim``).

Anything else (cross-attention, no final norm, RMSNorm with a plain MLP, ...) has no native twin:
:func:`native_blocker` says why. The conversion is a re-arrangement of the same numbers (loaded
into a native model whose weights are never drawn), so the native model's logits equal Arlow's up
to float rounding of the RoPE tables.
"""

from typing import Dict, Optional

import torch
from torch import Tensor
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from arlm.export.checkpoint_model import empty_model
from arlm.hf.configuration_arlow import ArlowConfig

SHARED_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "max_position_embeddings", "attention_dropout", "initializer_range", "tie_word_embeddings",
    "pad_token_id", "bos_token_id", "eos_token_id",
)
NATIVE_ACTIVATIONS = ("relu", "gelu")
"""Plain MLP activations whose ``transformers`` ``ACT2FN`` entry equals ``torch.nn.functional``'s."""


def native_blocker(config: ArlowConfig) -> Optional[str]:
    """``None`` when :func:`to_native` can express the network exactly, else the reason it cannot."""
    if config.cross_attention:
        return "it has cross-attention blocks"
    if not config.final_norm:
        return "it has no final norm"
    if config.norm_type == "rmsnorm":
        if not config.gated_mlp:
            return f"RMSNorm with a plain {config.hidden_act!r} MLP is neither Llama nor GPT-NeoX"
        if config.rotary_dim not in (None, config.head_dim):
            return f"Llama rotates the whole head ({config.head_dim}), this rotates {config.rotary_dim}"
        return None
    if config.gated_mlp:
        return "LayerNorm with a gated (SwiGLU) MLP is neither Llama nor GPT-NeoX"
    if config.hidden_act not in NATIVE_ACTIVATIONS:
        return f"GPT-NeoX is exported for activations {NATIVE_ACTIVATIONS}, got {config.hidden_act!r}"
    rotary_dim = config.rotary_dim or config.head_dim
    if int(config.head_dim * (rotary_dim / config.head_dim)) != rotary_dim:
        return f"rotary_pct {rotary_dim}/{config.head_dim} does not give back rotary_dim {rotary_dim}"
    return None


def to_native(arlow: PreTrainedModel) -> PreTrainedModel:
    """The ``ArlowForCausalLM`` ``arlow`` as a ``LlamaForCausalLM`` or ``GPTNeoXForCausalLM``
    (eval mode, fp32) with the same weights.

    Raises:
        ValueError: the network has no exact native twin (the message says why).
    """
    config: ArlowConfig = arlow.config
    reason = native_blocker(config)
    if reason is not None:
        raise ValueError(f"this Arlow network cannot be exported as a native transformers model: {reason}")
    state = {name: tensor.detach().float() for name, tensor in arlow.state_dict().items()}
    if config.norm_type == "rmsnorm":
        native, native_state = empty_model(LlamaForCausalLM, _llama_config(config)), state
    else:
        native = empty_model(GPTNeoXForCausalLM, _gpt_neox_config(config))
        native_state = _gpt_neox_state(config, state)
        if "lm_head.weight" in native.state_dict():  # transformers 5 renamed GPT-NeoX's embed_out
            native_state["lm_head.weight"] = native_state.pop("embed_out.weight")
    native.load_state_dict(native_state, strict=True)
    return native.eval()


def _shared_fields(config: ArlowConfig) -> dict:
    """The fields Llama's and GPT-NeoX's configs share with Arlow's, under the same names."""
    return {**{name: getattr(config, name) for name in SHARED_FIELDS}, "use_cache": True}


def _llama_config(config: ArlowConfig) -> LlamaConfig:
    return LlamaConfig(
        **_shared_fields(config),
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act="silu",
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta,
        attention_bias=config.bias,
        mlp_bias=config.bias,
    )


def _gpt_neox_config(config: ArlowConfig) -> GPTNeoXConfig:
    rotary_dim = config.rotary_dim or config.head_dim
    return GPTNeoXConfig(
        **_shared_fields(config),
        hidden_act=config.hidden_act,
        rotary_pct=rotary_dim / config.head_dim,
        rotary_emb_base=config.rope_theta,
        rope_theta=config.rope_theta,
        layer_norm_eps=config.rms_norm_eps,
        hidden_dropout=config.hidden_dropout,
        use_parallel_residual=False,
        attention_bias=True,
    )


def _gpt_neox_state(config: ArlowConfig, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Arlow's (Llama-named) state dict under GPT-NeoX's names and layout."""

    def bias_of(prefix: str, rows: int) -> Tensor:
        return state.get(f"{prefix}.bias", torch.zeros(rows))

    d, heads, head_dim = config.hidden_size, config.num_attention_heads, config.head_dim
    out = {
        "gpt_neox.embed_in.weight": state["model.embed_tokens.weight"],
        "gpt_neox.final_layer_norm.weight": state["model.norm.weight"],
        "gpt_neox.final_layer_norm.bias": bias_of("model.norm", d),
        "embed_out.weight": state["lm_head.weight"],
    }
    for i in range(config.num_hidden_layers):
        ours, theirs = f"model.layers.{i}", f"gpt_neox.layers.{i}"
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"{theirs}.{norm}.weight"] = state[f"{ours}.{norm}.weight"]
            out[f"{theirs}.{norm}.bias"] = bias_of(f"{ours}.{norm}", d)
        per_head = []
        for name in ("q_proj", "k_proj", "v_proj"):
            prefix = f"{ours}.self_attn.{name}"
            weight = state[f"{prefix}.weight"]
            rows = weight.shape[0]
            bias = bias_of(prefix, rows)
            both = torch.cat([weight, bias[:, None]], dim=1).view(rows // head_dim, head_dim, d + 1)
            per_head.append(both.repeat_interleave(heads // (rows // head_dim), dim=0))
        fused = torch.stack(per_head, dim=1).reshape(3 * d, d + 1)  # rows: head h -> [q_h, k_h, v_h]
        out[f"{theirs}.attention.query_key_value.weight"] = fused[:, :d].contiguous()
        out[f"{theirs}.attention.query_key_value.bias"] = fused[:, d].contiguous()
        out[f"{theirs}.attention.dense.weight"] = state[f"{ours}.self_attn.o_proj.weight"]
        out[f"{theirs}.attention.dense.bias"] = bias_of(f"{ours}.self_attn.o_proj", d)
        for src, dst, rows in (("up_proj", "dense_h_to_4h", config.intermediate_size), ("down_proj", "dense_4h_to_h", d)):
            out[f"{theirs}.mlp.{dst}.weight"] = state[f"{ours}.mlp.{src}.weight"]
            out[f"{theirs}.mlp.{dst}.bias"] = bias_of(f"{ours}.mlp.{src}", rows)
    return out
