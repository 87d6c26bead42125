"""``ARLMHarness``: xlm-core's ``Harness`` with vocabulary checks between tokenizer, model and
checkpoint, EMA weights applied from a checkpoint file, and checkpoint loading that works on
machines without CUDA.

Without the checks a mismatch surfaces as an ``IndexError`` deep inside the embedding (tokenizer
larger than the model) or as a wall of ``size mismatch`` lines from ``load_state_dict``
(checkpoint trained with another tokenizer). Both now fail early with the numbers and the fix.
"""

from pathlib import Path
from typing import Any, Dict, Union

import torch
from xlm.harness import Harness

LM_HEAD_KEY = "model.lm_head.weight"


def tokenizer_vocab_size(tokenizer: Any) -> int:
    """Number of ids the tokenizer can emit (``full_vocab_size`` for xLM tokenizers, else ``len``)."""
    return int(getattr(tokenizer, "full_vocab_size", None) or len(tokenizer))


def check_model_covers_tokenizer(model: Any, tokenizer: Any) -> None:
    """Raise ``ValueError`` if the model's vocabulary is smaller than the tokenizer's."""
    model_vocab = model.lm_head.out_features
    tok_vocab = tokenizer_vocab_size(tokenizer)
    if model_vocab < tok_vocab:
        raise ValueError(
            f"model.num_embeddings={model_vocab} is smaller than the vocabulary of the tokenizer "
            f"({type(tokenizer).__name__}, {tok_vocab} ids), so some token ids have no embedding. "
            f"Fix: set model.num_embeddings to '${{tokenizer:full_vocab_size}}' (the default of "
            f"arlm's model configs) or to at least {tok_vocab}."
        )


def check_checkpoint_vocabulary(state_dict: Dict[str, Any], model: Any, tokenizer: Any) -> None:
    """Raise ``ValueError`` if a checkpoint's output layer has another vocabulary size than ``model``."""
    weight = state_dict.get(LM_HEAD_KEY)
    if weight is None:
        return
    ckpt_vocab, model_vocab = int(weight.shape[0]), model.lm_head.out_features
    if ckpt_vocab != model_vocab:
        raise ValueError(
            f"The checkpoint was trained with a vocabulary of {ckpt_vocab} ids, but the configured "
            f"model has {model_vocab} (tokenizer {type(tokenizer).__name__} with "
            f"{tokenizer_vocab_size(tokenizer)} ids). Fix: use the experiment (and tokenizer, "
            f"global_components.tokenizer) the checkpoint was trained with, or a checkpoint "
            f"trained with this tokenizer."
        )


class ARLMHarness(Harness):
    """``xlm.harness.Harness`` plus :func:`check_model_covers_tokenizer` when the model is built,
    :func:`check_checkpoint_vocabulary` whenever a checkpoint is loaded (resume, eval, generate),
    :meth:`apply_checkpoint_ema` and a CPU-safe :meth:`from_checkpoint`."""

    def instantiate_model(self) -> None:
        super().instantiate_model()
        check_model_covers_tokenizer(self.model, self.tokenizer)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        check_checkpoint_vocabulary(checkpoint.get("state_dict", {}), self.model, self.tokenizer)
        super().on_load_checkpoint(checkpoint)

    def apply_checkpoint_ema(self, checkpoint_path: Union[str, Path]) -> None:
        """Overwrite the parameters with the EMA weights stored in ``checkpoint_path``.

        Call it after the checkpoint's own weights are loaded: Lightning's
        ``load_from_checkpoint`` runs ``on_load_checkpoint`` (where xlm-core's
        ``manual_ema_restore`` copies the EMA weights) *before* ``load_state_dict``, which then
        puts the raw weights back. Raises ``ValueError`` naming the file when it has no EMA state.
        """
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if "ema" not in checkpoint:
            raise ValueError(
                f"{checkpoint_path} has no EMA weights (no 'ema' entry: trained without the EMA "
                f"callback). Fix: use its raw weights with +generation.use_ema=false."
            )
        self._apply_ema_weights(checkpoint["ema"])

    @classmethod
    def from_checkpoint(
        cls, checkpoint_path: Union[str, Path], *args: Any, map_location: str = "cpu", **kwargs: Any
    ) -> Harness:
        """``Harness.from_checkpoint`` loading onto the CPU when ``map_location`` names CUDA and
        this machine has none (xlm-core's ``push_to_hub`` job asks for ``"cuda"`` unconditionally)."""
        if "cuda" in str(map_location) and not torch.cuda.is_available():
            map_location = "cpu"
        return super().from_checkpoint(checkpoint_path, *args, map_location=map_location, **kwargs)
