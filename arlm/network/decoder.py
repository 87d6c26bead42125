"""The causal rotary Transformer decoder shared by the xLM face and the Hugging Face face.

Parameter names follow HF Llama (``embed_tokens``, ``layers.N.self_attn.{q,k,v,o}_proj``,
``layers.N.mlp.{gate,up,down}_proj``, ``layers.N.{input,post_attention}_layernorm``, ``norm``),
so a Llama-shaped decoder (RMSNorm, SwiGLU, no bias, full rotary) is weight-compatible with
``LlamaModel``. The LM head lives with each face, next to this stack.
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Integer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from arlm.network.attention import AttentionInputs, attend, attend_eager, attention_inputs
from arlm.network.config import DecoderConfig
from arlm.network.inputs import check_decoder_inputs
from arlm.network.kv_cache import KVCache
from arlm.network.memory_budget import check_decoder_fits
from arlm.network.rope import RotaryEmbedding, apply_rotary_pos_emb


def make_norm(config: DecoderConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


class SelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with RoPE."""

    def __init__(self, config: DecoderConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        self.backend = config.attention_backend
        d, kv_dim = config.d_model, config.n_kv_heads * config.head_dim
        self.q_proj = nn.Linear(d, d, bias=config.bias)
        self.k_proj = nn.Linear(d, kv_dim, bias=config.bias)
        self.v_proj = nn.Linear(d, kv_dim, bias=config.bias)
        self.o_proj = nn.Linear(d, d, bias=config.bias)

    def forward(
        self,
        x: Float[Tensor, "batch seq d_model"],
        inputs: AttentionInputs,
        cache: Optional[KVCache] = None,
    ) -> Tuple[Float[Tensor, "batch seq d_model"], Optional[Float[Tensor, "batch heads seq keys"]]]:
        """The attention output and, with ``inputs.need_weights`` (run on :func:`attend_eager`),
        the attention weights; ``None`` in their place otherwise."""
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        k = self.k_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, L, Dh)
        v = self.v_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, inputs.cos, inputs.sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx, inputs.slots)  # (B, KV, keys, Dh)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if inputs.need_weights:
            out, weights = attend_eager(q, k, v, inputs.mask, inputs.is_causal, dropout)
        else:
            out = attend(q, k, v, inputs.mask, inputs.is_causal, dropout, self.backend)  # (B, H, L, Dh)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, -1)), weights


class CrossAttention(nn.Module):
    """Attention from the decoder stream to ``encoder_hidden_states`` (no RoPE, not causal)."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.dropout = config.attention_dropout
        self.backend = config.attention_backend
        d, enc = config.d_model, config.cross_attention_dim
        self.q_proj = nn.Linear(d, d, bias=config.bias)
        self.k_proj = nn.Linear(enc, d, bias=config.bias)
        self.v_proj = nn.Linear(enc, d, bias=config.bias)
        self.o_proj = nn.Linear(d, d, bias=config.bias)

    def forward(self, x: Float[Tensor, "batch seq d_model"], inputs: AttentionInputs) -> Float[Tensor, "batch seq d_model"]:
        """Attention over ``inputs.encoder_states`` (not None), their padding ``inputs.encoder_mask``."""
        encoder_states = inputs.encoder_states
        B, L, _ = x.shape
        S = encoder_states.shape[1]
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        k = self.k_proj(encoder_states).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, Dh)
        v = self.v_proj(encoder_states).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        out = attend(q, k, v, inputs.encoder_mask, False, dropout, self.backend)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, -1))


class MLP(nn.Module):
    """``down(act(up(x)))``, or ``down(silu(gate(x)) * up(x))`` for ``swiglu``."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        d, ff = config.d_model, config.d_ff
        self.gated = config.activation == "swiglu"
        if self.gated:
            self.gate_proj = nn.Linear(d, ff, bias=config.bias)
        self.up_proj = nn.Linear(d, ff, bias=config.bias)
        self.down_proj = nn.Linear(ff, d, bias=config.bias)
        self.act = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "swiglu": F.silu}[
            config.activation
        ]

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class DecoderLayer(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, MLP, each with a residual."""

    def __init__(self, config: DecoderConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = make_norm(config, config.d_model)
        self.self_attn = SelfAttention(config, layer_idx)
        if config.cross_attention:
            self.cross_attn_layernorm = make_norm(config, config.d_model)
            self.cross_attn = CrossAttention(config)
        self.post_attention_layernorm = make_norm(config, config.d_model)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Float[Tensor, "batch seq d_model"],
        inputs: AttentionInputs,
        cache: Optional[KVCache] = None,
    ) -> Tuple[Float[Tensor, "batch seq d_model"], Optional[Tensor]]:
        """The layer's output and its self-attention weights (``inputs.need_weights``; else
        ``None``). Cross-attention runs when the layer has it and ``inputs`` carry encoder states."""
        h, weights = self.self_attn(self.input_layernorm(x), inputs, cache)
        x = x + self.dropout(h)
        if inputs.encoder_states is not None and hasattr(self, "cross_attn"):
            h = self.cross_attn(self.cross_attn_layernorm(x), inputs)
            x = x + self.dropout(h)
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x))), weights


@dataclass
class DecoderOutput:
    """What :meth:`DecoderStack.forward` returns: the final hidden states and, when asked for, the
    input of every layer plus the final output (``n_layers + 1`` tensors, the last one after the
    final norm, as HF Llama) and every layer's self-attention weights ``(B, H, L, keys)``."""

    last_hidden_state: Float[Tensor, "batch seq d_model"]
    hidden_states: Optional[Tuple[Tensor, ...]] = None
    attentions: Optional[Tuple[Tensor, ...]] = None


class DecoderStack(nn.Module):
    """Token embedding, ``n_layers`` decoder layers and the final norm; hidden states out.

    The model is causal by construction and owns its masks, positions and cache bookkeeping:
    callers pass token ids, at most a padding mask and, to decode incrementally, a cache
    (:class:`arlm.network.kv_cache.KVCache`). Both faces hold one as ``.model``, so ``model.config`` is
    this :class:`DecoderConfig` in either. Building one refuses weights (at torch's default dtype)
    or RoPE tables that cannot fit on torch's default device, before allocating them.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        check_decoder_fits(config, torch.get_default_dtype(), torch.get_default_device())
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.padding_idx)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.n_layers))
        self.norm = make_norm(config, config.d_model) if config.final_norm else nn.Identity()
        self.rotary_emb = RotaryEmbedding(config.rotary_dim, config.max_positions, config.rope_theta)
        self.dropout = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, embeddings: nn.Embedding) -> None:
        self.embed_tokens = embeddings

    def forward(
        self,
        input_ids: Optional[Integer[Tensor, "batch seq"]] = None,
        attention_mask: Optional[Tensor] = None,
        positions: Optional[Integer[Tensor, "batch seq"]] = None,
        cache: Optional[KVCache] = None,
        encoder_hidden_states: Optional[Float[Tensor, "batch enc_seq enc_dim"]] = None,
        encoder_attention_mask: Optional[Tensor] = None,
        inputs_embeds: Optional[Float[Tensor, "batch seq d_model"]] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> DecoderOutput:
        """Hidden states after the final norm (and, when asked, per-layer outputs and attention
        weights, the latter computed by :func:`arlm.network.attention.attend_eager`).

        ``attention_mask``: ``None`` (no padding), ``(B, W)`` key padding over the tokens fed so
        far (True/1 = real token; ``W = L`` without a cache; with one, columns past the tokens
        fed so far are ignored, so a caller may keep one mask for the whole generation), or
        ``(B, L, keys)`` used exactly as given. RoPE positions are ``cumsum(padding) - 1`` at the
        new tokens (the cache offset included) unless ``positions`` are given. A ``(B, W)`` mask
        that hides nothing is dropped when that is known for free (CPU, eager), so SDPA runs on
        causality alone; on an accelerator pass ``None`` when there is no padding.
        """
        check_decoder_inputs(
            self.config, vocab_size=self.embed_tokens.num_embeddings, input_ids=input_ids,
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, positions=positions,
            encoder_hidden_states=encoder_hidden_states, cache=cache,
        )
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        inputs = attention_inputs(
            self.rotary_emb, x, attention_mask=attention_mask, positions=positions, cache=cache,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            need_weights=output_attentions,
        )
        x = self.dropout(x)
        hidden_states: list = []
        attentions: list = []
        for layer in self.layers:
            if output_hidden_states:
                hidden_states.append(x)
            if self.gradient_checkpointing and self.training:
                x, weights = checkpoint(layer, x, inputs, cache, use_reentrant=False)
            else:
                x, weights = layer(x, inputs, cache)
            if output_attentions:
                attentions.append(weights)
        x = self.norm(x)
        return DecoderOutput(
            last_hidden_state=x,
            hidden_states=(*hidden_states, x) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


def init_weights(module: nn.Module, std: float, init: Any = nn.init) -> None:
    """The one initialisation of the decoder and its LM head, applied module by module:
    normal(0, ``std``) linear and embedding weights (the padding row zeroed), zero biases, unit
    norms, freshly computed RoPE tables. ``init`` provides ``normal_`` / ``zeros_`` / ``ones_``
    (``torch.nn.init``, or transformers 5's versions that skip weights already loaded)."""
    if isinstance(module, nn.Linear):
        init.normal_(module.weight, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        init.normal_(module.weight, std=std)
        if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        if module.weight is not None:
            init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            init.zeros_(module.bias)
    elif isinstance(module, RotaryEmbedding):
        module.reset_tables()
