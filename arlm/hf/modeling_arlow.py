"""Arlow through ``transformers``: ``ArlowModel`` and ``ArlowForCausalLM``.

There is no second network here. ``ArlowModel`` *is* the shared :class:`~arlm.decoder.DecoderStack`
(attention, RoPE, MLP, norms and masks all come from :mod:`arlm.decoder`) that is also a
``PreTrainedModel``; so its modules sit directly under the Llama names (``embed_tokens``,
``layers.N.self_attn.q_proj``, ..., ``norm``) and ``ArlowForCausalLM``'s state dict is that of an
HF ``*ForCausalLM``. A LLaMA-shaped Arlow (RMSNorm, SwiGLU, no bias, no cross-attention, full
rotary) loads into ``LlamaForCausalLM`` as it is.
"""

import warnings
from typing import Any, Optional, Union

import torch
from jaxtyping import Float, Integer
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import is_flash_attn_2_available
from transformers.utils.generic import can_return_tuple

from arlm.decoder import DecoderStack
from arlm.hf.configuration_arlow import ArlowConfig
from arlm.rope import RotaryEmbedding, apply_rotary_pos_emb

ArlowRMSNorm = nn.RMSNorm
"""The norm of a ``norm_type="rmsnorm"`` Arlow: torch's ``RMSNorm`` (LlamaRMSNorm's formula)."""

ArlowRotaryEmbedding = RotaryEmbedding
"""Arlow's RoPE tables: the shared :class:`arlm.rope.RotaryEmbedding` (rotate-half, fp32)."""

__all__ = [
    "ArlowForCausalLM",
    "ArlowModel",
    "ArlowPreTrainedModel",
    "ArlowRMSNorm",
    "ArlowRotaryEmbedding",
    "apply_rotary_pos_emb",
]


class ArlowPreTrainedModel(PreTrainedModel):
    """Weights initialised with ``config.initializer_range`` (normal linear/embedding weights, zero
    biases and padding row, unit norms: ``PreTrainedModel._init_weights``), and the capability flags
    ``transformers`` reads.

    ``gradient_checkpointing_enable()`` sets the decoder's ``gradient_checkpointing`` flag; the
    decoder then checkpoints each layer with ``torch.utils.checkpoint`` (non-reentrant; HF's
    ``gradient_checkpointing_kwargs`` are not used) while training, and no cache is kept.
    """

    config_class = ArlowConfig
    config: ArlowConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True

    def get_correct_attn_implementation(
        self, requested_attention: Optional[str], is_init_check: bool = False
    ) -> str:
        """``flash_attention_*`` without the ``flash_attn`` package runs on SDPA with a warning
        instead of failing, as the Arlow seed asks."""
        if (
            requested_attention is not None
            and requested_attention.startswith("flash_attention")
            and not is_flash_attn_2_available()
        ):
            warnings.warn(
                f"attn_implementation={requested_attention!r} needs the flash_attn package (CUDA), "
                "which is not available; Arlow uses torch SDPA instead.",
                stacklevel=2,
            )
            return "sdpa"
        return super().get_correct_attn_implementation(requested_attention, is_init_check)


def _attention_backend(config: ArlowConfig) -> str:
    """The decoder backend for the requested ``attn_implementation`` (eager runs on SDPA too)."""
    requested = config._attn_implementation_internal or "sdpa"
    return "flash_attn" if requested.startswith("flash_attention") else "sdpa"


class ArlowModel(DecoderStack, ArlowPreTrainedModel):
    """The Arlow decoder: token ids in, hidden states ``(B, L, hidden_size)`` out."""

    def __init__(self, config: ArlowConfig):
        super().__init__(config.to_decoder_config(_attention_backend(config)), config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: Optional[Integer[Tensor, "batch seq"]] = None,
        attention_mask: Optional[Tensor] = None,
        position_ids: Optional[Integer[Tensor, "batch seq"]] = None,
        past_key_values: Optional[Cache] = None,
        inputs_embeds: Optional[Float[Tensor, "batch seq hidden"]] = None,
        use_cache: Optional[bool] = None,
        cache_position: Optional[Integer[Tensor, "seq"]] = None,
        encoder_hidden_states: Optional[Float[Tensor, "batch enc_seq enc_dim"]] = None,
        encoder_attention_mask: Optional[Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
    ) -> BaseModelOutputWithPast:
        """Hidden states after the final norm, and the cache when one is used.

        ``attention_mask``: ``(B, past + L)`` with 1 for real tokens (left padding in generation)
        or ``(B, L, past + L)`` used as given; ``position_ids`` index RoPE (default
        ``past .. past + L - 1``); ``past_key_values``: a dynamic ``Cache``, extended in place (a
        ``DynamicCache`` is created when ``use_cache`` and none is given; ``use_cache`` defaults to
        ``config.use_cache`` in eval mode and to False in training). ``encoder_hidden_states`` feed the
        cross-attention blocks (``config.cross_attention`` and ``config.use_cross_attention``);
        without them the blocks are skipped.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if output_attentions or output_hidden_states:
            raise ValueError(
                "Arlow runs attention in fused SDPA/flash kernels and returns neither attention "
                "weights nor per-layer hidden states; call it with output_attentions=False and "
                "output_hidden_states=False"
            )
        if encoder_hidden_states is not None and not self.config.use_cross_attention:
            raise ValueError(
                "encoder_hidden_states were given but config.use_cross_attention is False; "
                "set it to True (with cross_attention=True) to feed them to the model"
            )
        if past_key_values is not None and (
            not isinstance(past_key_values, Cache) or past_key_values.is_compileable
        ):
            raise ValueError(
                "past_key_values must be a dynamic transformers Cache (e.g. DynamicCache), got "
                f"{type(past_key_values).__name__}; static/compileable caches are not supported"
            )
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and self.gradient_checkpointing and self.training:
            use_cache = False  # recomputing a layer in backward would append to the cache twice
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        cache = past_key_values
        hidden = super().forward(
            input_ids,
            attention_mask=attention_mask,
            positions=position_ids,
            cache=cache,
            cache_kwargs=None if cache_position is None else {"cache_position": cache_position},
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            inputs_embeds=inputs_embeds,
        )
        return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache)


class ArlowForCausalLM(ArlowPreTrainedModel, GenerationMixin):
    """``ArlowModel`` plus the LM head (tied to the embeddings when ``config.tie_word_embeddings``);
    ``labels`` give the mean next-token cross-entropy, positions labelled -100 ignored."""

    _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config: ArlowConfig):
        super().__init__(config)
        self.model = ArlowModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: Optional[Integer[Tensor, "batch seq"]] = None,
        attention_mask: Optional[Tensor] = None,
        position_ids: Optional[Integer[Tensor, "batch seq"]] = None,
        past_key_values: Optional[Cache] = None,
        inputs_embeds: Optional[Float[Tensor, "batch seq hidden"]] = None,
        labels: Optional[Integer[Tensor, "batch seq"]] = None,
        use_cache: Optional[bool] = None,
        cache_position: Optional[Integer[Tensor, "seq"]] = None,
        logits_to_keep: Union[int, Tensor] = 0,
        encoder_hidden_states: Optional[Float[Tensor, "batch enc_seq enc_dim"]] = None,
        encoder_attention_mask: Optional[Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        **loss_kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits ``(B, L, vocab)`` (only the last ``logits_to_keep`` positions when non-zero) and,
        with ``labels`` of the input's shape ``(B, L)``, the next-token loss: position ``t``
        predicts ``labels[:, t + 1]`` (HF's shift), ``-100`` ignored. ``loss_kwargs`` go to the
        loss (``num_items_in_batch`` from the ``Trainer``)."""
        batch_shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if labels is not None:
            _check_labels(labels, tuple(batch_shape))
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            cache_position=cache_position,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep and labels is None:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, Tensor) and labels is None:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **loss_kwargs
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values)


def _check_labels(labels: Tensor, batch_shape: tuple) -> None:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of token ids, got dtype {labels.dtype}")
    if tuple(labels.shape) != batch_shape:
        raise ValueError(
            f"labels must have the shape of input_ids {batch_shape} (they are shifted inside the "
            f"loss), got {tuple(labels.shape)}"
        )
