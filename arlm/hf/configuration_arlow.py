"""``ArlowConfig``: the Hugging Face configuration of the Arlow causal language model.

Arlow is the shared rotary decoder (:mod:`arlm.network.decoder`) seen through ``transformers``. The
seed's fields keep their names and defaults; the extra fields (``norm_type``, ``gated_mlp``,
``bias``, ``rotary_dim``, ``final_norm``, ``hidden_dropout``, ``cross_attention_dim``) default to
the seed's LLaMA-like network and let an exported xLM model (LayerNorm, ReLU, biases, partial
rotary) be described exactly. :data:`ARLOW_FIELDS` is the one mapping between these fields and
:class:`~arlm.network.config.DecoderConfig`, which checks them (:meth:`ArlowConfig.to_decoder_config`
and :meth:`ArlowConfig.from_decoder_config` read it in both directions).
"""

from typing import Any, Optional

from transformers import PretrainedConfig

from arlm.network.config import DecoderConfig, channels_per_head
from arlm.network.value_checks import is_int

PLAIN_ACTIVATIONS = ("relu", "gelu", "silu")
ROPE_SCALING_KEYS = ("rope_scaling", "rope_parameters")
"""Llama's RoPE settings (``rope_scaling``; ``rope_parameters`` from transformers 5 on)."""

ARLOW_FIELDS = {
    "vocab_size": "vocab_size", "d_model": "hidden_size", "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads",
    "d_ff": "intermediate_size", "norm": "norm_type", "norm_eps": "rms_norm_eps", "bias": "bias",
    "rotary_dim": "rotary_dim", "rope_theta": "rope_theta", "max_positions": "max_position_embeddings",
    "dropout": "hidden_dropout", "attention_dropout": "attention_dropout", "final_norm": "final_norm",
    "padding_idx": "pad_token_id", "cross_attention": "cross_attention",
    "cross_attention_dim": "cross_attention_dim", "tie_word_embeddings": "tie_word_embeddings",
    "init_std": "initializer_range",
}
"""``DecoderConfig`` field -> ``ArlowConfig`` field; ``activation`` comes from ``gated_mlp`` and
``hidden_act``, and the attention backend from ``attn_implementation``."""


DEFAULT_ROPE_THETA = 100000.0


def _plain_rope_theta(name: str, value: Any, rope_theta: Optional[float]) -> Optional[float]:
    """``rope_theta`` after reading the RoPE setting ``name`` (``rope_scaling`` or
    ``rope_parameters``): a default-type setting may carry the base itself, as transformers 5
    writes it (``{"rope_type": "default", "rope_theta": X}``), which must agree with an explicit
    ``rope_theta``. Anything else (scaling of any kind) is refused rather than ignored."""
    if value is None or value == {}:
        return rope_theta
    kind = value.get("rope_type", value.get("type")) if isinstance(value, dict) else None
    theta = value.get("rope_theta", rope_theta) if isinstance(value, dict) else None
    if kind == "default" and set(value) <= {"rope_type", "type", "rope_theta"} and rope_theta in (None, theta):
        return theta
    raise ValueError(
        f"ArlowConfig.{name}={value!r} is not supported: Arlow applies plain RoPE (base rope_theta="
        f"{DEFAULT_ROPE_THETA if rope_theta is None else rope_theta}) with no scaling, so these weights would see "
        f"other positions than they were trained with. Fix: remove {name} from config.json (or set it to null) "
        f"for a model trained without RoPE scaling; a model trained with scaled RoPE cannot be loaded as Arlow"
    )


def _check_written_head_dim(head_dim: Any, hidden_size: Any, num_attention_heads: Any) -> None:
    """A ``head_dim`` field (Llama's configs write one) must be the one Arlow derives from
    ``hidden_size / num_attention_heads``; Arlow keeps no separate value (:attr:`ArlowConfig.head_dim`)."""
    if head_dim is None:
        return
    try:
        derived = channels_per_head(hidden_size, num_attention_heads)
    except (ValueError, TypeError, ZeroDivisionError):
        return  # the fields themselves are refused, naming them, by the config's own checks
    if head_dim != derived:
        raise ValueError(
            f"ArlowConfig.head_dim={head_dim!r} does not match hidden_size={hidden_size} / num_attention_heads="
            f"{num_attention_heads} = {derived}: Arlow derives the channels per head from those two. Fix: remove "
            f"head_dim from config.json (or set it to {derived})"
        )


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

    Arlow's RoPE is the plain one: a ``rope_scaling`` (or ``rope_parameters``) other than
    ``None`` or the default type, which Llama would apply, is refused rather than ignored; a
    default-type one may give the base (``rope_theta``, 1e5 when nothing gives it).
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
        rope_theta: Optional[float] = None,
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
        for name in ROPE_SCALING_KEYS:
            rope_theta = _plain_rope_theta(name, kwargs.pop(name, None), rope_theta)
        _check_written_head_dim(kwargs.pop("head_dim", None), hidden_size, num_attention_heads)
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
        self.rope_theta = DEFAULT_ROPE_THETA if rope_theta is None else rope_theta
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
        """Channels per attention head, derived as the network does
        (:func:`~arlm.network.config.channels_per_head`) from the two fields alone: ``transformers``
        5 reads it before this config is checked."""
        return channels_per_head(self.hidden_size, self.num_attention_heads)

    def _validate(self) -> None:
        """Raise a ``ValueError`` naming the offending field and what was expected: the network's
        fields through :meth:`to_decoder_config`, the fields only Arlow has here."""
        if self.gated_mlp and self.hidden_act != "silu":
            raise ValueError(
                f"ArlowConfig.hidden_act must be 'silu' when gated_mlp=True (SwiGLU), got "
                f"{self.hidden_act!r}; set gated_mlp=False for a plain {self.hidden_act!r} MLP"
            )
        if not self.gated_mlp and self.hidden_act not in PLAIN_ACTIVATIONS:
            raise ValueError(
                f"ArlowConfig.hidden_act must be one of {PLAIN_ACTIVATIONS}, got {self.hidden_act!r}"
            )
        self.to_decoder_config()
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            for token_id in value if isinstance(value, (list, tuple)) else [value]:
                if token_id is not None and not (
                    is_int(token_id) and 0 <= token_id < self.vocab_size
                ):
                    raise ValueError(
                        f"ArlowConfig.{name} must be in [0, vocab_size={self.vocab_size}), "
                        f"got {value!r}"
                    )

    def to_decoder_config(self, attention_backend: str = "sdpa") -> DecoderConfig:
        """The :class:`DecoderConfig` of the network this configuration describes (checked)."""
        return DecoderConfig(
            **{field: getattr(self, name) for field, name in ARLOW_FIELDS.items()},
            activation="swiglu" if self.gated_mlp else self.hidden_act,
            attention_backend=attention_backend,
            arg_names={**ARLOW_FIELDS, "activation": "hidden_act"},
            owner="ArlowConfig.",
        )

    @classmethod
    def from_decoder_config(cls, decoder: DecoderConfig, **kwargs: Any) -> "ArlowConfig":
        """The ``ArlowConfig`` whose network is ``decoder`` (``kwargs``: e.g. special token ids)."""
        fields = {name: getattr(decoder, field) for field, name in ARLOW_FIELDS.items()}
        gated = decoder.activation == "swiglu"
        if decoder.rotary_dim == decoder.head_dim:
            fields["rotary_dim"] = None
        if decoder.cross_attention_dim == decoder.d_model:
            fields["cross_attention_dim"] = None
        return cls(
            **fields,
            hidden_act="silu" if gated else decoder.activation,
            gated_mlp=gated,
            use_cross_attention=decoder.cross_attention,
            **kwargs,
        )
