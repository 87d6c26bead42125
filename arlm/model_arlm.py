"""``RotaryTransformerARLMModel``: the xLM face of the shared decoder.

Its constructor is this face's one mapping onto :class:`~arlm.network.config.DecoderConfig`;
:func:`decoder_config_of` reads that mapping for a ``model:`` node without building weights, and
:func:`xlm_argument` names a field the way this face's users set it.
"""

from typing import Any, Iterator, Mapping, Optional, Tuple

import torch
from huggingface_hub import PyTorchModelHubMixin
from jaxtyping import Float, Integer
from safetensors import SafetensorError
from torch import Tensor, nn

from arlm.network.attention import resolve_attention_backend
from arlm.network.config import DecoderConfig
from arlm.network.decoder import DecoderStack, init_weights
from arlm.network.kv_cache import KVCache

XLM_ARGUMENT_NAMES = {
    "vocab_size": "num_embeddings", "n_layers": "num_layers", "n_heads": "nhead",
    "n_kv_heads": "num_kv_heads", "d_ff": "dim_feedforward", "norm_eps": "layer_norm_eps",
    "rotary_dim": "rotary_emb_dim", "max_positions": "max_length", "attention_dropout": "dropout",
}
"""This face's argument names for the :class:`DecoderConfig` fields they set (the others match,
but ``final_norm``, which is ``not final_layer_without_normalization``)."""


class RotaryTransformerARLMModel(nn.Module, PyTorchModelHubMixin):
    """Left-to-right causal Transformer with rotary position embeddings.

    A huggingface_hub ``PyTorchModelHubMixin`` with the weight-decay split (what
    ``xlm.model.Model`` declares; that base is not used so that the model imports without xlm-core):
    ``save_pretrained(dir)`` writes ``model.safetensors`` (the state dict, keys as in
    ``state_dict()``) and ``config.json`` (the constructor arguments), ``from_pretrained(dir or
    repo id)`` rebuilds the model from them, and ``push_to_hub(repo_id)`` uploads the same files
    (what ``xlm job_type=push_to_hub`` calls).

    Args:
        num_embeddings: vocabulary size (``tokenizer.full_vocab_size``).
        d_model, num_layers, nhead: width, depth and number of attention heads.
        padding_idx: id whose embedding receives no gradient (``tokenizer.pad_token_id``; 0 by
            default, xLM tokenizers' ``[PAD]``; ``None`` for none).
        dim_feedforward: MLP width; default ``4 * d_model``.
        dropout: dropout on the embeddings, residual branches and attention weights.
        activation: ``relu``, ``gelu``, ``silu`` or ``swiglu`` (gated, Llama style).
        layer_norm_eps: epsilon of every norm.
        rotary_emb_dim: channels of each head rotated by RoPE (even, at most the head size).
        max_length: largest position the RoPE tables cover.
        force_flash_attn: use the ``flash_attn`` package when installed and on CUDA
            (a warning and torch SDPA otherwise).
        final_layer_without_normalization: skip the norm before the output projection.
        norm: ``layernorm`` or ``rmsnorm``.
        num_kv_heads: key/value heads for grouped-query attention (default ``nhead``).
        rope_theta: RoPE base.
        bias: bias in the linear layers and LayerNorms.
        tie_word_embeddings: share the output projection with the token embedding.
    """

    def __init__(
        self,
        num_embeddings: int,
        d_model: int,
        num_layers: int,
        nhead: int,
        padding_idx: Optional[int] = 0,
        dim_feedforward: Optional[int] = None,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        rotary_emb_dim: int = 64,
        max_length: int = 1024,
        force_flash_attn: bool = False,
        final_layer_without_normalization: bool = False,
        norm: str = "layernorm",
        num_kv_heads: Optional[int] = None,
        rope_theta: float = 10000.0,
        bias: bool = True,
        tie_word_embeddings: bool = False,
    ):
        super().__init__()
        self.config = DecoderConfig(
            vocab_size=num_embeddings,
            d_model=d_model,
            n_layers=num_layers,
            n_heads=nhead,
            n_kv_heads=num_kv_heads,
            d_ff=dim_feedforward,
            activation=activation,
            norm=norm,
            norm_eps=layer_norm_eps,
            bias=bias,
            rotary_dim=rotary_emb_dim,
            rope_theta=rope_theta,
            max_positions=max_length,
            dropout=dropout,
            attention_dropout=dropout,
            final_norm=not final_layer_without_normalization,
            padding_idx=padding_idx,
            tie_word_embeddings=tie_word_embeddings,
            attention_backend=resolve_attention_backend("flash_attn" if force_flash_attn else "sdpa"),
            arg_names=XLM_ARGUMENT_NAMES,
        )
        self.model = DecoderStack(self.config)
        self.lm_head = nn.Linear(d_model, num_embeddings, bias=False)
        if tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_parameters()

    def reset_parameters(self, std: Optional[float] = None) -> None:
        """Initialise every weight (:func:`arlm.network.decoder.init_weights`; ``std`` default
        ``config.init_std``, 0.02). A head tied to the embedding is initialised with it (padding
        row zeroed), not drawn again. Weights on the meta device hold no values to draw."""
        std = self.config.init_std if std is None else std
        if self.lm_head.weight.is_meta:
            return
        for module in self.modules():
            if module is not self.lm_head or not self.config.tie_word_embeddings:
                init_weights(module, std)

    def forward(
        self,
        x_t: Integer[Tensor, "batch seq"],
        attention_mask: Optional[Tensor] = None,
        positions: Optional[Integer[Tensor, "batch seq"]] = None,
        token_type_ids: Optional[Integer[Tensor, "batch seq"]] = None,
        cache: Optional[KVCache] = None,
    ) -> Float[Tensor, "batch seq vocab"]:
        """Next-token logits.

        ``attention_mask``: ``None`` (no padding), ``(B, W)`` key padding (True/1 = real) over the
        tokens fed so far, or ``(B, L, keys)`` bool used exactly as given; ``positions`` override
        the RoPE positions the decoder derives from the padding (see
        :meth:`arlm.network.decoder.DecoderStack.forward`). ``token_type_ids`` is accepted for the xLM
        batch contract and not used.
        """
        hidden = self.model(x_t, attention_mask=attention_mask, positions=positions, cache=cache)
        return self.lm_head(hidden.last_hidden_state)

    def last_hidden_state(
        self,
        x_t: Integer[Tensor, "batch seq"],
        attention_mask: Optional[Tensor] = None,
        positions: Optional[Integer[Tensor, "batch seq"]] = None,
        cache: Optional[KVCache] = None,
    ) -> Float[Tensor, "batch seq d_model"]:
        """The decoder's final hidden states, which :meth:`forward` projects (arguments as there):
        what the loss and the predictor call before applying ``lm_head`` themselves. Sharded with
        FSDP2 it is a forward method of the root unit (:mod:`arlm.runtime.fsdp2_sharding`), so
        the call gathers the embedding, the final norm and the head."""
        return self.model(x_t, attention_mask=attention_mask, positions=positions, cache=cache).last_hidden_state

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs: Any) -> "RotaryTransformerARLMModel":
        """``PyTorchModelHubMixin``'s loading step, with an unreadable ``model.safetensors`` named."""
        try:
            return super()._from_pretrained(model_id=model_id, **kwargs)
        except SafetensorError as error:
            raise ValueError(
                f"{model_id}: its model.safetensors cannot be read ({error}); it is truncated or corrupt. "
                f"Fix: write it again with save_pretrained, or download it again"
            ) from error

    def get_named_params_for_weight_decay(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """Matrices of the linear layers (the output projection included)."""
        for name, param in self.named_parameters():
            if _decays(name, param):
                yield name, param

    def get_named_params_for_no_weight_decay(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """Biases, norm weights and the token embedding."""
        for name, param in self.named_parameters():
            if not _decays(name, param):
                yield name, param


def _decays(name: str, param: nn.Parameter) -> bool:
    return param.dim() >= 2 and "embed_tokens" not in name


XLM_MODEL_TARGET = f"{RotaryTransformerARLMModel.__module__}.{RotaryTransformerARLMModel.__name__}"
"""The ``_target_`` of an arlm ``model:`` node (what configs and checkpoints record)."""


def decoder_config_of(arguments: Mapping[str, Any]) -> DecoderConfig:
    """The network ``RotaryTransformerARLMModel(**arguments)`` builds, its defaults filled in and
    checked (``ValueError`` otherwise): read from a model built on the meta device, which takes no
    memory and draws no weights."""
    with torch.device("meta"):
        return RotaryTransformerARLMModel(**arguments).config


def xlm_argument(field: str, value: Any) -> Tuple[str, Any]:
    """The constructor argument that sets :class:`DecoderConfig` ``field`` to ``value``, and its value."""
    if field == "final_norm":
        return "final_layer_without_normalization", not value
    return XLM_ARGUMENT_NAMES.get(field, field), value
