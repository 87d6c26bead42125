"""Arlow through ``transformers``: ``ArlowModel`` and ``ArlowForCausalLM``.

There is no second network here. ``ArlowModel`` *is* the shared :class:`~arlm.decoder.DecoderStack`
(attention, RoPE, MLP, norms and masks all come from :mod:`arlm.decoder`) that is also a
``PreTrainedModel``; so its modules sit directly under the Llama names (``embed_tokens``,
``layers.N.self_attn.q_proj``, ..., ``norm``) and ``ArlowForCausalLM``'s state dict is that of an
HF ``*ForCausalLM``. A LLaMA-shaped Arlow (RMSNorm, SwiGLU, no bias, no cross-attention, full
rotary) loads into ``LlamaForCausalLM`` as it is.
"""

import warnings
from typing import Any, Optional, Tuple, Union

import torch
import transformers
from jaxtyping import Bool, Float, Integer
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import is_flash_attn_2_available
from transformers.utils.generic import can_return_tuple

from arlm.attention import cache_slot_mask
from arlm.decoder import CrossAttention, DecoderStack, SelfAttention
from arlm.hf.configuration_arlow import ArlowConfig
from arlm.hf.hf_cache import HFCacheView
from arlm.rope import RotaryEmbedding, apply_rotary_pos_emb

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

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

    ``attn_implementation`` picks the decoder's attention: ``"sdpa"`` (default), ``"eager"``
    (explicit softmax) or ``"flash_attention_2"`` (SDPA with a warning when ``flash_attn`` is
    missing); :meth:`set_attn_implementation` switches a built model. The RoPE tables are
    recomputed by ``_init_weights``, so meta-device construction never leaves them uninitialised.
    """

    config_class = ArlowConfig
    config: ArlowConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_static_cache = True
    _can_compile_fullgraph = True

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, RotaryEmbedding):
            module.reset_tables()
        else:
            super()._init_weights(module)

    def set_attn_implementation(self, attn_implementation: Any, **kwargs: Any) -> None:
        """Switch the attention of every decoder layer, not just the config."""
        super().set_attn_implementation(attn_implementation, **kwargs)
        backend = _attention_backend(self.config)
        for module in self.modules():
            if isinstance(module, (SelfAttention, CrossAttention)):
                module.backend = backend

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
    """The decoder backend for the config's ``attn_implementation``."""
    requested = getattr(config, "_attn_implementation_internal", None) or "sdpa"
    if requested.startswith("flash_attention"):
        return "flash_attn" if is_flash_attn_2_available() else "sdpa"
    return "eager" if requested == "eager" else "sdpa"


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
        ``past .. past + L - 1``); ``past_key_values``: a ``transformers`` ``Cache``, extended in
        place (a ``DynamicCache`` is created when ``use_cache`` and none is given; ``use_cache``
        defaults to ``config.use_cache`` in eval mode and to False in training). A static
        (preallocated) cache takes ``cache_position`` (default ``past .. past + L - 1``) and a
        ``(B, past + L)`` mask. ``encoder_hidden_states`` feed the cross-attention blocks
        (``config.cross_attention`` and ``config.use_cross_attention``); without them the blocks
        are skipped. ``output_hidden_states`` / ``output_attentions`` (default: the config's)
        return every layer's input plus the final output, and every layer's attention weights.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if encoder_hidden_states is not None and not self.config.use_cross_attention:
            raise ValueError(
                "encoder_hidden_states were given but config.use_cross_attention is False; "
                "set it to True (with cross_attention=True) to feed them to the model"
            )
        if past_key_values is not None and not isinstance(past_key_values, Cache):
            raise ValueError(
                "past_key_values must be a transformers Cache (e.g. DynamicCache or StaticCache), "
                f"got {type(past_key_values).__name__}"
            )
        if output_attentions is None:
            output_attentions = bool(getattr(self.config, "output_attentions", False))
        if output_hidden_states is None:
            output_hidden_states = bool(getattr(self.config, "output_hidden_states", False))
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and self.gradient_checkpointing and self.training:
            use_cache = False  # recomputing a layer in backward would append to the cache twice
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        cache = None if past_key_values is None else HFCacheView(past_key_values)
        if cache is not None and cache.get_max_cache_shape() > 0:
            attention_mask, position_ids, cache_position = self._static_cache_inputs(
                cache, input_ids if input_ids is not None else inputs_embeds,
                attention_mask, position_ids, cache_position,
            )
        out = self.run(
            input_ids,
            attention_mask=attention_mask,
            positions=position_ids,
            cache=cache,
            cache_kwargs=None if cache_position is None else {"cache_position": cache_position},
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        return BaseModelOutputWithPast(
            last_hidden_state=out.last_hidden_state,
            past_key_values=past_key_values if use_cache or past_key_values is not None else None,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )

    @staticmethod
    def _static_cache_inputs(
        cache: HFCacheView,
        inputs: Tensor,
        attention_mask: Optional[Tensor],
        position_ids: Optional[Tensor],
        cache_position: Optional[Tensor],
    ) -> Tuple[Bool[Tensor, "batch seq slots"], Integer[Tensor, "batch seq"], Integer[Tensor, "seq"]]:
        """A preallocated cache returns all its slots as keys: explicit slot indices, RoPE
        positions and a ``(B, L, slots)`` mask (:func:`arlm.attention.cache_slot_mask`)."""
        B, L = inputs.shape[:2]
        if cache_position is None:
            past = cache.get_seq_length()
            cache_position = torch.arange(L, device=inputs.device) + past
        if position_ids is None:
            position_ids = cache_position[None].expand(B, L)
        slots = cache.get_max_cache_shape()
        if attention_mask is None:
            attention_mask = torch.ones((B, slots), dtype=torch.bool, device=inputs.device)
        if attention_mask.dim() == 2:
            attention_mask = cache_slot_mask(attention_mask, cache_position, slots)
        return attention_mask, position_ids, cache_position


class ArlowForCausalLM(ArlowPreTrainedModel, GenerationMixin):
    """``ArlowModel`` plus the LM head (tied to the embeddings when ``config.tie_word_embeddings``);
    ``labels`` give the mean next-token cross-entropy, positions labelled -100 ignored."""

    _tied_weights_keys = (
        {"lm_head.weight": "model.embed_tokens.weight"} if TRANSFORMERS_MAJOR >= 5 else ["lm_head.weight"]
    )

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
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def generate(self, inputs: Optional[Tensor] = None, *args: Any, **kwargs: Any) -> Any:
        """``GenerationMixin.generate``, refusing a prompt with no token, shape ``(B, 0)``, which
        would otherwise fail with an ``IndexError`` inside transformers."""
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        if isinstance(prompt, Tensor) and prompt.dim() == 2 and prompt.shape[1] == 0:
            raise ValueError(
                f"generate() got an empty prompt of shape {tuple(prompt.shape)}; give every row at "
                f"least one token (for unconditional text, the BOS id {self.config.bos_token_id})"
            )
        return super().generate(inputs, *args, **kwargs)

    def create_masks_for_generate(
        self,
        config: ArlowConfig,
        attention_mask: Optional[Tensor],
        past_key_values: Cache,
        cache_position: Optional[Tensor] = None,
        **kwargs: Any,
    ) -> Tensor:
        """``generate``'s hook for a preallocated cache: the fixed-shape ``(B, L, slots)`` mask of
        :meth:`ArlowModel._static_cache_inputs`, so every decode step has the same shapes and a
        compiled forward is reused. ``kwargs`` carry ``input_embeds`` (transformers 4) or
        ``inputs_embeds`` (transformers 5), of which only the shape is used."""
        embeds = kwargs.get("inputs_embeds", kwargs.get("input_embeds"))
        mask, _, _ = ArlowModel._static_cache_inputs(
            HFCacheView(past_key_values), embeds, attention_mask, None, cache_position
        )
        return mask


def _check_labels(labels: Tensor, batch_shape: tuple) -> None:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of token ids, got dtype {labels.dtype}")
    if tuple(labels.shape) != batch_shape:
        raise ValueError(
            f"labels must have the shape of input_ids {batch_shape} (they are shifted inside the "
            f"loss), got {tuple(labels.shape)}"
        )
