"""Arlow through ``transformers``: ``ArlowModel`` and ``ArlowForCausalLM``.

There is no second network here. Both classes hold the shared :class:`~arlm.network.decoder.DecoderStack`
as ``.model`` (attention, RoPE, MLP, norms, masks and positions all come from it), so
``ArlowForCausalLM``'s state dict is that of an HF ``*ForCausalLM`` (``model.embed_tokens``,
``model.layers.N.self_attn.q_proj``, ..., ``lm_head``) and ``ArlowModel``'s holds the same keys
without the head; a LLaMA-shaped Arlow (RMSNorm, SwiGLU, no bias, no cross-attention, full
rotary) loads into ``LlamaForCausalLM`` as it is. This module only maps the ``transformers``
calling conventions onto the decoder: ``past_key_values`` and ``cache_position`` (up to
transformers 5.23) or ``cache`` (5.24 on), output flags, the cache default, the loss.
"""

import warnings
from typing import Any, Optional, Union

import torch
import transformers
from jaxtyping import Float, Integer
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import is_flash_attn_2_available
from transformers.utils.generic import can_return_tuple

from arlm.network.decoder import CrossAttention, DecoderStack, SelfAttention, init_weights
from arlm.hf.configuration_arlow import ArlowConfig
from arlm.hf.hf_cache import HFCacheView
from arlm.hf.peft_defaults import register_lora_target_modules
from arlm.network.rope import RotaryEmbedding, apply_rotary_pos_emb

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
"""The name under which this ``transformers`` passes and returns the cache (``cache`` from 5.24)."""

try:
    from transformers import initialization as hf_init  # transformers 5: skips loaded weights
except ImportError:
    hf_init = nn.init

ArlowRMSNorm = nn.RMSNorm
"""The norm of a ``norm_type="rmsnorm"`` Arlow: torch's ``RMSNorm`` (LlamaRMSNorm's formula)."""

ArlowRotaryEmbedding = RotaryEmbedding
"""Arlow's RoPE tables: the shared :class:`arlm.network.rope.RotaryEmbedding` (rotate-half, fp32)."""

register_lora_target_modules(ArlowConfig.model_type)

__all__ = [
    "ArlowForCausalLM",
    "ArlowModel",
    "ArlowPreTrainedModel",
    "ArlowRMSNorm",
    "ArlowRotaryEmbedding",
    "apply_rotary_pos_emb",
]


class ArlowPreTrainedModel(PreTrainedModel):
    """Weights initialised by the decoder's :func:`~arlm.network.decoder.init_weights` with
    ``config.initializer_range``, and the capability flags ``transformers`` reads.

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
        init_weights(module, self.config.initializer_range, hf_init)

    def __init__(self, config: ArlowConfig, *args: Any, **kwargs: Any):
        config._attn_implementation = _available_attn_implementation(config._attn_implementation)
        super().__init__(config, *args, **kwargs)

    def set_attn_implementation(self, attn_implementation: Any, **kwargs: Any) -> None:
        """Switch the attention of every decoder layer, not just the config."""
        super().set_attn_implementation(_available_attn_implementation(attn_implementation), **kwargs)
        backend = _attention_backend(self.config)
        for module in self.modules():
            if isinstance(module, (SelfAttention, CrossAttention)):
                module.backend = backend


def _available_attn_implementation(requested: Any) -> Any:
    """``requested``, or ``"sdpa"`` with a warning when it asks for flash attention that this
    machine cannot run (no ``flash_attn`` package, or no CUDA).

    Applied before ``transformers`` sees the request: from 5.x on, ``transformers`` answers a
    missing ``flash_attn`` by fetching a kernel from the Hub, which fails offline, while the Arlow
    seed promises a warning and SDPA."""
    if (
        isinstance(requested, str)
        and requested.startswith("flash_attention")
        and not is_flash_attn_2_available()
    ):
        warnings.warn(
            f"attn_implementation={requested!r} needs the flash_attn package and CUDA, which this "
            "machine lacks; Arlow uses torch SDPA instead.",
            stacklevel=3,
        )
        return "sdpa"
    return requested


def _attention_backend(config: ArlowConfig) -> str:
    """The decoder backend for the config's ``attn_implementation``."""
    requested = getattr(config, "_attn_implementation_internal", None) or "sdpa"
    if requested.startswith("flash_attention"):
        return "flash_attn" if is_flash_attn_2_available() else "sdpa"
    return "eager" if requested == "eager" else "sdpa"


def run_decoder(
    owner: ArlowPreTrainedModel,
    *,
    input_ids: Optional[Tensor] = None,
    attention_mask: Optional[Tensor] = None,
    position_ids: Optional[Tensor] = None,
    past_key_values: Optional[Cache] = None,
    cache: Optional[Cache] = None,
    inputs_embeds: Optional[Tensor] = None,
    use_cache: Optional[bool] = None,
    cache_position: Optional[Tensor] = None,
    encoder_hidden_states: Optional[Tensor] = None,
    encoder_attention_mask: Optional[Tensor] = None,
    output_attentions: Optional[bool] = None,
    output_hidden_states: Optional[bool] = None,
) -> BaseModelOutputWithPast:
    """``owner.model`` (the decoder) called with the ``transformers`` conventions of both Arlow
    classes; the keyword arguments are :meth:`ArlowModel.forward`'s.

    The cache is ``cache`` (transformers 5.24 on) or else ``past_key_values``. ``use_cache``
    defaults to ``config.use_cache`` in eval mode and to False in training (and while gradient
    checkpointing); a ``DynamicCache`` is created when one is wanted and none is given.
    ``output_*`` default to the config's flags.
    """
    config, decoder, training = owner.config, owner.model, owner.training
    cache = past_key_values if cache is None else cache
    if encoder_hidden_states is not None and not config.use_cross_attention:
        raise ValueError(
            "encoder_hidden_states were given but config.use_cross_attention is False; "
            "set it to True (with cross_attention=True) to feed them to the model"
        )
    if cache is not None and not isinstance(cache, Cache):
        raise ValueError(
            f"past_key_values (or cache) must be a transformers Cache (e.g. DynamicCache or StaticCache), "
            f"got {type(cache).__name__}"
        )
    if output_attentions is None:
        output_attentions = bool(getattr(config, "output_attentions", False))
    if output_hidden_states is None:
        output_hidden_states = bool(getattr(config, "output_hidden_states", False))
    if use_cache is None:
        use_cache = config.use_cache and not training
    if use_cache and decoder.gradient_checkpointing and training:
        use_cache = False  # recomputing a layer in backward would append to the cache twice
    if use_cache and cache is None:
        cache = DynamicCache(config=config)
    out = decoder(
        input_ids,
        attention_mask=attention_mask,
        positions=position_ids,
        cache=None if cache is None else HFCacheView(cache, cache_position),
        encoder_hidden_states=encoder_hidden_states,
        encoder_attention_mask=encoder_attention_mask,
        inputs_embeds=inputs_embeds,
        output_hidden_states=output_hidden_states,
        output_attentions=output_attentions,
    )
    return BaseModelOutputWithPast(
        last_hidden_state=out.last_hidden_state,
        hidden_states=out.hidden_states,
        attentions=out.attentions,
        **{CACHE_FIELD: cache},
    )


class ArlowModel(ArlowPreTrainedModel):
    """The Arlow decoder: token ids in, hidden states ``(B, L, hidden_size)`` out."""

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: ArlowConfig):
        super().__init__(config)
        self.model = DecoderStack(config.to_decoder_config(_attention_backend(config)))
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
        cache: Optional[Cache] = None,
    ) -> BaseModelOutputWithPast:
        """Hidden states after the final norm, and the cache when one is used.

        ``attention_mask``: ``(B, past + L)`` with 1 for real tokens (left padding in generation;
        a preallocated cache also takes ``(B, slots)``) or ``(B, L, keys)`` used as given;
        ``position_ids`` override the RoPE positions derived from the mask; the cache
        (``past_key_values``, or ``cache`` as transformers 5.24 names it) is a ``transformers``
        ``Cache`` extended in place, its slots ``cache_position`` when given. ``encoder_hidden_states``
        feed the cross-attention blocks (``config.cross_attention`` and
        ``config.use_cross_attention``); without them the blocks are skipped.
        ``output_hidden_states`` / ``output_attentions`` return every layer's input plus the
        final output, and every layer's attention weights.
        """
        return run_decoder(
            self, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, cache=cache, inputs_embeds=inputs_embeds,
            use_cache=use_cache, cache_position=cache_position,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )


class ArlowForCausalLM(ArlowPreTrainedModel, GenerationMixin):
    """The Arlow decoder (``.model``) plus the LM head (tied to the embeddings when
    ``config.tie_word_embeddings``); ``labels`` give the mean next-token cross-entropy,
    positions labelled -100 ignored."""

    _tied_weights_keys = (
        {"lm_head.weight": "model.embed_tokens.weight"} if TRANSFORMERS_MAJOR >= 5 else ["lm_head.weight"]
    )

    def __init__(self, config: ArlowConfig):
        super().__init__(config)
        self.model = DecoderStack(config.to_decoder_config(_attention_backend(config)))
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def last_hidden_state(
        self,
        input_ids: Integer[Tensor, "batch seq"],
        attention_mask: Optional[Tensor] = None,
        positions: Optional[Integer[Tensor, "batch seq"]] = None,
        cache: Optional[Any] = None,
    ) -> Float[Tensor, "batch seq hidden"]:
        """The decoder's final hidden states, before ``lm_head``, called as arlm's own loss and
        predictor call either face (``positions`` and ``cache`` as the decoder takes them)."""
        return self.model(input_ids, attention_mask=attention_mask, positions=positions, cache=cache).last_hidden_state

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
        cache: Optional[Cache] = None,
        **loss_kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits ``(B, L, vocab)`` (only the last ``logits_to_keep`` positions when non-zero) and,
        with ``labels`` of the input's shape ``(B, L)``, the next-token loss: position ``t``
        predicts ``labels[:, t + 1]`` (HF's shift), ``-100`` ignored. ``loss_kwargs`` go to the
        loss (``num_items_in_batch`` from the ``Trainer``). The other arguments are
        :meth:`ArlowModel.forward`'s."""
        batch_shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        if labels is not None:
            _check_labels(labels, tuple(batch_shape))
        outputs = run_decoder(
            self, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, cache=cache, inputs_embeds=inputs_embeds,
            use_cache=use_cache, cache_position=cache_position,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
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
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
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
        self, config: ArlowConfig, attention_mask: Optional[Tensor] = None, **kwargs: Any
    ) -> Optional[Tensor]:
        """``generate``'s hook for a preallocated cache: the ``(B, past + L)`` padding mask
        widened with padding to the cache's fixed number of slots, so that every decode step has
        the same shapes and a compiled forward is reused (the decoder builds the causal mask).
        ``kwargs`` carry the cache (``past_key_values``, or ``cache`` from transformers 5.24)."""
        if attention_mask is None:
            return None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        slots = HFCacheView(cache).key_length(0)
        return torch.nn.functional.pad(attention_mask, (0, slots - attention_mask.shape[1]), value=0)


def _check_labels(labels: Tensor, batch_shape: tuple) -> None:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of token ids, got dtype {labels.dtype}")
    if tuple(labels.shape) != batch_shape:
        raise ValueError(
            f"labels must have the shape of input_ids {batch_shape} (they are shifted inside the "
            f"loss), got {tuple(labels.shape)}"
        )
