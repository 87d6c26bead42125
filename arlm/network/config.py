"""``DecoderConfig``: the one description of the causal rotary decoder.

Both faces describe the same network in their own vocabulary (the xLM face's ``nhead``,
``rotary_emb_dim``, ``max_length``; the Hugging Face face's ``num_attention_heads``,
``rotary_dim``, ``max_position_embeddings``) and map it onto this dataclass in one adapter each.
It is data: derived fields are filled and every invariant is checked here, once; nothing is
allocated or probed (a configuration of a model larger than this machine constructs; memory is
checked where it is allocated, :func:`arlm.network.memory_budget.check_decoder_fits`).
``arg_names`` and ``owner`` only make the messages name the argument the user actually passed.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from arlm.network.value_checks import is_finite_number, is_int, is_number

NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("relu", "gelu", "silu", "swiglu")
ATTENTION_BACKENDS = ("sdpa", "eager", "flash_attn")


def channels_per_head(d_model: int, n_heads: int) -> int:
    """The width of one attention head: ``d_model // n_heads`` (``DecoderConfig`` checks that
    ``n_heads`` divides ``d_model``). Each face's ``head_dim`` is this, on its own field names."""
    return d_model // n_heads


@dataclass
class DecoderConfig:
    """Hyper-parameters of :class:`arlm.network.decoder.DecoderStack` and its LM head.

    ``activation``: ``relu``/``gelu``/``silu`` give a two-matrix MLP (``up_proj``, ``down_proj``);
    ``swiglu`` gives the gated MLP of Llama (``gate_proj``, ``up_proj``, ``down_proj``).
    Derived when left ``None``: ``n_kv_heads = n_heads``, ``d_ff = 4 * d_model``,
    ``rotary_dim = head_dim`` (RoPE rotates the whole head), ``cross_attention_dim = d_model``.
    ``init_std`` is the standard deviation of the normal initialisation of every linear and
    embedding weight (:func:`arlm.network.decoder.init_weights`).
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
    tie_word_embeddings: bool = False
    init_std: float = 0.02
    attention_backend: str = "sdpa"
    arg_names: Dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    owner: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions"):
            self._check_positive(name, integer=True)
        for name in ("n_kv_heads", "d_ff", "cross_attention_dim"):
            if getattr(self, name) is not None:
                self._check_positive(name, integer=True)
        for name in ("norm_eps", "rope_theta", "init_std"):
            self._check_positive(name)
        if self.d_model % self.n_heads:
            self._fail(
                "d_model", f"({self.d_model}) must be divisible by {self.arg_name('n_heads')}, the "
                f"number of heads ({self.n_heads})"
            )
        self.n_kv_heads = self.n_heads if self.n_kv_heads is None else self.n_kv_heads
        if self.n_heads % self.n_kv_heads:
            self._fail(
                "n_heads", f"({self.n_heads}) must be divisible by {self.arg_name('n_kv_heads')}, the "
                f"number of key/value heads ({self.n_kv_heads})"
            )
        self.d_ff = 4 * self.d_model if self.d_ff is None else self.d_ff
        self.rotary_dim = self.head_dim if self.rotary_dim is None else self.rotary_dim
        if (
            not is_int(self.rotary_dim) or self.rotary_dim <= 0 or self.rotary_dim % 2 or self.rotary_dim > self.head_dim
        ):
            self._fail(
                "rotary_dim", f"must be even and in [2, head_dim={self.head_dim}] "
                f"({self.arg_name('d_model')} {self.d_model} / {self.n_heads} heads), got {self.rotary_dim!r}"
            )
        self.rotary_dim = int(self.rotary_dim)
        if self.activation not in ACTIVATIONS:
            self._fail("activation", f"must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            self._fail("norm", f"must be one of {NORMS}, got {self.norm!r}")
        for name in ("bias", "final_norm", "cross_attention", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                self._fail(name, f"must be True or False, got {getattr(self, name)!r}")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if not is_number(value) or not 0.0 <= value < 1.0:
                self._fail(name, f"must be in [0, 1), got {value!r}")
        if self.padding_idx is not None and not (
            is_int(self.padding_idx) and 0 <= self.padding_idx < self.vocab_size
        ):
            self._fail(
                "padding_idx", f"must be in [0, {self.arg_name('vocab_size')}={self.vocab_size}), "
                f"got {self.padding_idx!r}"
            )
        self.padding_idx = None if self.padding_idx is None else int(self.padding_idx)
        self.cross_attention_dim = self.d_model if self.cross_attention_dim is None else self.cross_attention_dim
        if self.attention_backend not in ATTENTION_BACKENDS:
            self._fail("attention_backend", f"must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}")

    @property
    def head_dim(self) -> int:
        return channels_per_head(self.d_model, self.n_heads)

    @property
    def parameter_count(self) -> int:
        """Parameters of the decoder and its LM head, biases and norms included (a tied head
        counts once); what a built model's ``parameters()`` hold."""
        d, kv, ff, enc, bias = self.d_model, self.n_kv_heads * self.head_dim, self.d_ff, self.cross_attention_dim, int(self.bias)
        norm = d * (2 if self.norm == "layernorm" and self.bias else 1)
        gated = self.activation == "swiglu"
        attention = 2 * d * d + 2 * d * kv + bias * (2 * d + 2 * kv)
        cross = 2 * d * d + 2 * enc * d + bias * 4 * d + norm if self.cross_attention else 0
        mlp = (3 if gated else 2) * d * ff + bias * ((2 if gated else 1) * ff + d)
        embeddings = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.n_layers * (attention + cross + mlp + 2 * norm) + (norm if self.final_norm else 0)

    def arg_name(self, name: str) -> str:
        """The face's name for field ``name`` (``owner`` not included)."""
        return self.arg_names.get(name, name)

    def _fail(self, name: str, message: str) -> None:
        raise ValueError(f"{self.owner}{self.arg_name(name)} {message}")

    def _check_positive(self, name: str, integer: bool = False) -> None:
        value: Any = getattr(self, name)
        if not ((is_int(value) if integer else is_finite_number(value)) and value > 0):
            self._fail(name, f"must be {'a positive integer' if integer else 'a positive finite number'}, got {value!r}")
        setattr(self, name, int(value) if integer else float(value))
