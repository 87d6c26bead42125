"""``ArlowConfig``: the Hugging Face configuration of the Arlow causal language model.

Arlow is the shared rotary decoder (:mod:`arlm.decoder`) seen through ``transformers``. The
seed's fields keep their names and defaults; the extra fields (``norm_type``, ``gated_mlp``,
``bias``, ``rotary_dim``, ``final_norm``, ``hidden_dropout``, ``cross_attention_dim``) default to
the seed's LLaMA-like network and let an exported xLM model (LayerNorm, ReLU, biases, partial
rotary) be described exactly. :meth:`ArlowConfig.to_decoder_config` and
:meth:`ArlowConfig.from_decoder_config` are the one mapping between the two configurations.
"""

from typing import Any, Optional

from transformers import PretrainedConfig

from arlm.decoder import DecoderConfig

NORM_TYPES = ("rmsnorm", "layernorm")
PLAIN_ACTIVATIONS = ("relu", "gelu", "silu")


class ArlowConfig(PretrainedConfig):
    """Hyper-parameters of :class:`~arlm.hf.modeling_arlow.ArlowForCausalLM`.

    Seed fields: ``vocab_size``, ``hidden_size``, ``intermediate_size``,
    ``max_position_embeddings``, ``num_attention_heads``, ``num_key_value_heads`` (grouped-query
    attention when smaller than the number of heads), ``num_hidden_layers``,
    ``attention_dropout``, ``initializer_range``, ``hidden_act``, ``use_cache``,
    ``rms_norm_eps`` (the epsilon of every norm, RMSNorm or LayerNorm), ``rope_theta``,
    ``tie_word_embeddings``, ``pad_token_id`` / ``bos_token_id`` / ``eos_token_id``, ``cross_attention`` (build cross-attention
    blocks), ``use_cross_attention`` (run them when ``encoder_hidden_states`` are given).

    Extra fields:
        norm_type: ``"rmsnorm"`` or ``"layernorm"``.
        gated_mlp: ``down(act(gate(x)) * up(x))`` (SwiGLU, needs ``hidden_act="silu"``) when True,
            ``down(act(up(x)))`` with ``hidden_act`` in relu/gelu/silu when False.
        bias: bias in every linear layer (and LayerNorm).
        rotary_dim: channels of each head rotated by RoPE; ``None`` = the whole head.
        final_norm: apply a norm after the last layer.
        hidden_dropout: dropout on the embeddings and the residual branches.
        cross_attention_dim: width of ``encoder_hidden_states``; ``None`` = ``hidden_size``.
    """

    model_type = "arlowgpt"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 131072,
        hidden_size: int = 2304,
        intermediate_size: int = 9216,
        max_position_embeddings: int = 2048,
        num_attention_heads: int = 12,
        num_key_value_heads: int = 12,
        num_hidden_layers: int = 28,
        attention_dropout: float = 0.1,
        initializer_range: float = 0.02,
        hidden_act: str = "silu",
        use_cache: bool = True,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 100000.0,
        tie_word_embeddings: bool = True,
        pad_token_id: Optional[int] = None,
        bos_token_id: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        cross_attention: bool = True,
        use_cross_attention: bool = True,
        norm_type: str = "rmsnorm",
        gated_mlp: bool = True,
        bias: bool = False,
        rotary_dim: Optional[int] = None,
        final_norm: bool = True,
        hidden_dropout: float = 0.0,
        cross_attention_dim: Optional[int] = None,
        **kwargs: Any,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.num_hidden_layers = num_hidden_layers
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.hidden_act = hidden_act
        self.use_cache = use_cache
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.cross_attention = cross_attention
        self.use_cross_attention = use_cross_attention
        self.norm_type = norm_type
        self.gated_mlp = gated_mlp
        self.bias = bias
        self.rotary_dim = rotary_dim
        self.final_norm = final_norm
        self.hidden_dropout = hidden_dropout
        self.cross_attention_dim = cross_attention_dim
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings, **kwargs,
        )
        # transformers 5's PretrainedConfig no longer keeps these itself.
        self.pad_token_id, self.bos_token_id, self.eos_token_id = pad_token_id, bos_token_id, eos_token_id
        self.tie_word_embeddings = tie_word_embeddings
        self._validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def _validate(self) -> None:
        """Raise a ``ValueError`` naming the offending field and what was expected."""
        for name in (
            "vocab_size", "hidden_size", "intermediate_size", "max_position_embeddings",
            "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ArlowConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"ArlowConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"ArlowConfig.num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"ArlowConfig.norm_type must be one of {NORM_TYPES}, got {self.norm_type!r}")
        if self.gated_mlp and self.hidden_act != "silu":
            raise ValueError(
                f"ArlowConfig.hidden_act must be 'silu' when gated_mlp=True (SwiGLU), got "
                f"{self.hidden_act!r}; set gated_mlp=False for a plain {self.hidden_act!r} MLP"
            )
        if not self.gated_mlp and self.hidden_act not in PLAIN_ACTIVATIONS:
            raise ValueError(
                f"ArlowConfig.hidden_act must be one of {PLAIN_ACTIVATIONS}, got {self.hidden_act!r}"
            )
        if self.rotary_dim is not None and (
            self.rotary_dim <= 0 or self.rotary_dim % 2 or self.rotary_dim > self.head_dim
        ):
            raise ValueError(
                f"ArlowConfig.rotary_dim must be even and in [2, head_dim={self.head_dim}] "
                f"(hidden_size / num_attention_heads), got {self.rotary_dim}"
            )
        for name in ("attention_dropout", "hidden_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"ArlowConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError(
                f"ArlowConfig.rms_norm_eps and rope_theta must be positive, got "
                f"{self.rms_norm_eps} and {self.rope_theta}"
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            ids = value if isinstance(value, (list, tuple)) else [value]
            for token_id in ids:
                if token_id is not None and not (
                    isinstance(token_id, int) and 0 <= token_id < self.vocab_size
                ):
                    raise ValueError(
                        f"ArlowConfig.{name} must be in [0, vocab_size={self.vocab_size}), "
                        f"got {value!r}"
                    )

    def to_decoder_config(self, attention_backend: str = "sdpa") -> DecoderConfig:
        """The :class:`DecoderConfig` of the network this configuration describes."""
        return DecoderConfig(
            vocab_size=self.vocab_size,
            d_model=self.hidden_size,
            n_layers=self.num_hidden_layers,
            n_heads=self.num_attention_heads,
            n_kv_heads=self.num_key_value_heads,
            d_ff=self.intermediate_size,
            activation="swiglu" if self.gated_mlp else self.hidden_act,
            norm=self.norm_type,
            norm_eps=self.rms_norm_eps,
            bias=self.bias,
            rotary_dim=self.rotary_dim,
            rope_theta=self.rope_theta,
            max_positions=self.max_position_embeddings,
            dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            final_norm=self.final_norm,
            padding_idx=self.pad_token_id,
            cross_attention=self.cross_attention,
            cross_attention_dim=self.cross_attention_dim,
            attention_backend=attention_backend,
        )

    @classmethod
    def from_decoder_config(
        cls, decoder: DecoderConfig, tie_word_embeddings: bool, **kwargs: Any
    ) -> "ArlowConfig":
        """The ``ArlowConfig`` whose network is ``decoder`` (``kwargs``: e.g. special token ids)."""
        gated = decoder.activation == "swiglu"
        return cls(
            vocab_size=decoder.vocab_size,
            hidden_size=decoder.d_model,
            intermediate_size=decoder.d_ff,
            max_position_embeddings=decoder.max_positions,
            num_attention_heads=decoder.n_heads,
            num_key_value_heads=decoder.n_kv_heads,
            num_hidden_layers=decoder.n_layers,
            attention_dropout=decoder.attention_dropout,
            hidden_act="silu" if gated else decoder.activation,
            rms_norm_eps=decoder.norm_eps,
            rope_theta=decoder.rope_theta,
            tie_word_embeddings=tie_word_embeddings,
            pad_token_id=decoder.padding_idx,
            cross_attention=decoder.cross_attention,
            use_cross_attention=decoder.cross_attention,
            norm_type=decoder.norm,
            gated_mlp=gated,
            bias=decoder.bias,
            rotary_dim=None if decoder.rotary_dim == decoder.head_dim else decoder.rotary_dim,
            final_norm=decoder.final_norm,
            hidden_dropout=decoder.dropout,
            cross_attention_dim=(
                None if decoder.cross_attention_dim == decoder.d_model else decoder.cross_attention_dim
            ),
            **kwargs,
        )
