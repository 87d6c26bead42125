"""The causal rotary Transformer decoder shared by the xLM face and the Hugging Face face.

Parameter names follow HF Llama (``embed_tokens``, ``layers.N.self_attn.{q,k,v,o}_proj``,
``layers.N.mlp.{gate,up,down}_proj``, ``layers.N.{input,post_attention}_layernorm``, ``norm``),
so a Llama-shaped decoder (RMSNorm, SwiGLU, no bias, full rotary) is weight-compatible with
``LlamaModel``. The LM head lives with each face, next to this stack.
"""

import math
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Integer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from arlm.attention import attend, attend_eager, build_attention_mask, resolve_attention_backend
from arlm.decoder_inputs import check_input_ranks, validate_decoder_inputs
from arlm.rope import RotaryEmbedding, apply_rotary_pos_emb

def check_positive(name: str, value: Any, integer: bool = False, optional: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a positive (finite) int/number."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        ok = False
    else:
        ok = math.isfinite(value) and value > 0
    if not ok:
        kind = "a positive integer" if integer else "a positive finite number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("relu", "gelu", "silu", "swiglu")


@dataclass
class DecoderConfig:
    """Hyper-parameters of :class:`DecoderStack`; derived fields are filled and checked once.

    ``activation``: ``relu``/``gelu``/``silu`` give a two-matrix MLP (``up_proj``, ``down_proj``);
    ``swiglu`` gives the gated MLP of Llama (``gate_proj``, ``up_proj``, ``down_proj``).
    ``rotary_dim``: channels of each head that RoPE rotates (default: the whole head).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: Optional[int] = None
    d_ff: Optional[int] = None
    activation: str = "relu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    bias: bool = True
    rotary_dim: Optional[int] = None
    rope_theta: float = 10000.0
    max_positions: int = 1024
    dropout: float = 0.0
    attention_dropout: float = 0.0
    final_norm: bool = True
    padding_idx: Optional[int] = None
    cross_attention: bool = False
    cross_attention_dim: Optional[int] = None
    attention_backend: str = "sdpa"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions", "d_ff", "cross_attention_dim"):
            check_positive(name, getattr(self, name), integer=True, optional=name in ("d_ff", "cross_attention_dim"))
        for name in ("rope_theta", "norm_eps"):
            check_positive(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by the number of heads "
                f"({self.n_heads})"
            )
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"the number of heads ({self.n_heads}) must be a multiple of the number of "
                f"key/value heads ({self.n_kv_heads})"
            )
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if self.rotary_dim is None:
            self.rotary_dim = self.head_dim
        if self.rotary_dim <= 0 or self.rotary_dim % 2 or self.rotary_dim > self.head_dim:
            raise ValueError(
                f"rotary_emb_dim must be even and in [2, head_dim={self.head_dim}] "
                f"(d_model {self.d_model} / {self.n_heads} heads), got {self.rotary_dim}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.padding_idx is not None and not 0 <= self.padding_idx < self.vocab_size:
            raise ValueError(
                f"padding_idx must be in [0, vocab_size={self.vocab_size}), got {self.padding_idx}"
            )
        if self.cross_attention_dim is None:
            self.cross_attention_dim = self.d_model
        self.attention_backend = resolve_attention_backend(self.attention_backend)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class KVCache(Protocol):
    """What the decoder needs from a key/value cache (``arlm.hf.hf_cache.HFCacheView`` wraps
    a transformers ``Cache`` into one).

    ``update`` appends this step's keys/values for ``layer_idx`` and returns all keys/values
    seen so far, ``(B, kv_heads, past + new, head_dim)``; ``get_seq_length`` is ``past``.
    ``get_max_cache_shape`` is -1 for such a growing cache; a preallocated (static) cache
    returns its length ``S`` instead, and its ``update`` returns all ``S`` slots, so the caller
    must pass explicit ``positions`` and a ``(B, L, S)`` mask that hides unwritten slots.
    """

    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int,
        cache_kwargs: Optional[dict] = None,
    ) -> Tuple[Tensor, Tensor]: ...

    def get_seq_length(self, layer_idx: int = 0) -> int: ...

    def get_max_cache_shape(self, layer_idx: int = 0) -> int: ...


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
        cos: Tensor,
        sin: Tensor,
        mask: Optional[Tensor],
        is_causal: bool,
        cache: Optional[KVCache] = None,
        cache_kwargs: Optional[dict] = None,
        need_weights: bool = False,
    ) -> Tuple[Float[Tensor, "batch seq d_model"], Optional[Float[Tensor, "batch heads seq keys"]]]:
        """The attention output and, with ``need_weights`` (run on :func:`attend_eager`), the
        attention weights; ``None`` in their place otherwise."""
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        k = self.k_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, L, Dh)
        v = self.v_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx, cache_kwargs)  # (B, KV, past + L, Dh)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            out, weights = attend_eager(q, k, v, mask, is_causal, dropout)
        else:
            out = attend(q, k, v, mask, is_causal, dropout, self.backend)  # (B, H, L, Dh)
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

    def forward(
        self,
        x: Float[Tensor, "batch seq d_model"],
        encoder_hidden_states: Float[Tensor, "batch enc_seq enc_dim"],
        encoder_mask: Optional[Tensor],
    ) -> Float[Tensor, "batch seq d_model"]:
        B, L, _ = x.shape
        S = encoder_hidden_states.shape[1]
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(encoder_hidden_states).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(encoder_hidden_states).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        out = attend(q, k, v, encoder_mask, False, dropout, self.backend)
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
        cos: Tensor,
        sin: Tensor,
        mask: Optional[Tensor],
        is_causal: bool,
        cache: Optional[KVCache] = None,
        cache_kwargs: Optional[dict] = None,
        encoder_hidden_states: Optional[Tensor] = None,
        encoder_mask: Optional[Tensor] = None,
        need_weights: bool = False,
    ) -> Tuple[Float[Tensor, "batch seq d_model"], Optional[Tensor]]:
        """The layer's output and its self-attention weights (``need_weights``; else ``None``)."""
        h, weights = self.self_attn(
            self.input_layernorm(x), cos, sin, mask, is_causal, cache, cache_kwargs, need_weights
        )
        x = x + self.dropout(h)
        if encoder_hidden_states is not None and hasattr(self, "cross_attn"):
            h = self.cross_attn(self.cross_attn_layernorm(x), encoder_hidden_states, encoder_mask)
            x = x + self.dropout(h)
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x))), weights


@dataclass
class DecoderOutput:
    """What :meth:`DecoderStack.run` returns: the final hidden states and, when asked for, the
    input of every layer plus the final output (``n_layers + 1`` tensors, the last one after the
    final norm, as HF Llama) and every layer's self-attention weights ``(B, H, L, keys)``."""

    last_hidden_state: Tensor
    hidden_states: Optional[Tuple[Tensor, ...]] = None
    attentions: Optional[Tuple[Tensor, ...]] = None


class DecoderStack(nn.Module):
    """Token embedding, ``n_layers`` decoder layers and the final norm; hidden states out.

    The model is causal by construction. ``attention_mask`` is ``None`` (causal), ``(B, S)`` key
    padding over the ``S = past + L`` keys (True/1 = real token), or ``(B, L, S)`` used exactly
    as given. In eager mode a ``(B, L)`` mask without any padding is dropped, so the forward
    runs on plain causality. ``positions`` index the RoPE tables; when omitted they are
    ``past .. past + L - 1``.

    The hyper-parameters are kept as ``decoder_config`` (not ``config``) so that the Hugging Face
    face can be a ``DecoderStack`` that is also a ``PreTrainedModel``, whose ``config`` is its
    ``ArlowConfig``; ``base_args`` go to the next base class (``PreTrainedModel(config)`` there).
    """

    def __init__(self, config: DecoderConfig, *base_args: Any):
        super().__init__(*base_args)
        self.decoder_config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.padding_idx)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.n_layers))
        self.norm = make_norm(config, config.d_model) if config.final_norm else nn.Identity()
        self.rotary_emb = RotaryEmbedding(config.rotary_dim, config.max_positions, config.rope_theta)
        self.dropout = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False

    def forward(
        self,
        input_ids: Optional[Integer[Tensor, "batch seq"]] = None,
        attention_mask: Optional[Tensor] = None,
        positions: Optional[Integer[Tensor, "batch seq"]] = None,
        cache: Optional[KVCache] = None,
        cache_kwargs: Optional[dict] = None,
        encoder_hidden_states: Optional[Float[Tensor, "batch enc_seq enc_dim"]] = None,
        encoder_attention_mask: Optional[Tensor] = None,
        inputs_embeds: Optional[Float[Tensor, "batch seq d_model"]] = None,
    ) -> Float[Tensor, "batch seq d_model"]:
        """The hidden states after the final norm (see :meth:`run` for the arguments)."""
        return self.run(
            input_ids, attention_mask, positions, cache, cache_kwargs, encoder_hidden_states,
            encoder_attention_mask, inputs_embeds,
        ).last_hidden_state

    def run(
        self,
        input_ids: Optional[Integer[Tensor, "batch seq"]] = None,
        attention_mask: Optional[Tensor] = None,
        positions: Optional[Integer[Tensor, "batch seq"]] = None,
        cache: Optional[KVCache] = None,
        cache_kwargs: Optional[dict] = None,
        encoder_hidden_states: Optional[Float[Tensor, "batch enc_seq enc_dim"]] = None,
        encoder_attention_mask: Optional[Tensor] = None,
        inputs_embeds: Optional[Float[Tensor, "batch seq d_model"]] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> DecoderOutput:
        """The forward pass, also collecting per-layer hidden states / attention weights (the
        latter computed by :func:`arlm.attention.attend_eager`) when asked."""
        check_input_ranks(input_ids, inputs_embeds, positions)
        B, L = (input_ids if inputs_embeds is None else inputs_embeds).shape[:2]
        past_len = 0 if cache is None else cache.get_seq_length()
        if not torch.compiler.is_compiling():
            validate_decoder_inputs(
                self.decoder_config, self.embed_tokens.num_embeddings, input_ids, attention_mask,
                positions, past_len, (B, L), encoder_hidden_states, -1 if cache is None else cache.get_max_cache_shape(),
            )
            if past_len == 0 and attention_mask is not None and attention_mask.dim() == 2:
                if bool(attention_mask.all()):  # no padding: causality alone, fast kernels stay eligible
                    attention_mask = None
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        mask, is_causal = build_attention_mask(attention_mask, L, past_len, x.device)
        cos, sin = self.rotary_emb(positions, L, past_len, x.dtype)
        encoder_mask = None
        if encoder_attention_mask is not None:
            encoder_mask = encoder_attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S_enc)
        x = self.dropout(x)
        hidden_states: list = []
        attentions: list = []
        for layer in self.layers:
            if output_hidden_states:
                hidden_states.append(x)
            args = (
                x, cos, sin, mask, is_causal, cache, cache_kwargs, encoder_hidden_states,
                encoder_mask, output_attentions,
            )
            if self.gradient_checkpointing and self.training:
                x, weights = checkpoint(layer, *args, use_reentrant=False)
            else:
                x, weights = layer(*args)
            if output_attentions:
                attentions.append(weights)
        x = self.norm(x)
        return DecoderOutput(
            last_hidden_state=x,
            hidden_states=(*hidden_states, x) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
