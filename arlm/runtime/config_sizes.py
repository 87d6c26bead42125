"""Sizes in the composed config that cannot work, found before the job starts: too big for this
machine's memory (:func:`memory_problems`), or a prediction length shorter than the data's rows
(:func:`length_problems`).

The model's own check (:class:`arlm.network.config.DecoderConfig`) runs when the model is built
and names the constructor argument; this one runs with the other config checks
(:func:`arlm.runtime.config_checks.config_problems`), names the config key, and also covers what
only the job knows: training keeps :data:`~arlm.network.memory_budget.TRAINING_COPIES` fp32
copies of every parameter, and a training batch of ``per_device_batch_size x block_size`` tokens
makes logits over the vocabulary and one hidden state per layer. A key the config lacks or that
does not resolve yet (``${tokenizer:...}`` before the tokenizer exists) is left out of the sums.
"""

from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from arlm.network.memory_budget import (
    FP32_BYTES,
    TRAINING_COPIES,
    decoder_parameter_count,
    fit_problem,
    host_memory_bytes,
    rope_table_bytes,
)
from arlm.network.value_checks import is_int

MODEL_KEYS = ("num_embeddings", "d_model", "num_layers", "nhead", "num_kv_heads", "dim_feedforward", "max_length", "rotary_emb_dim")


def _int(cfg: DictConfig, key: str) -> Optional[int]:
    try:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    except Exception:
        return None
    return int(value) if is_int(value) and value > 0 else None


def job_memory_bytes(cfg: DictConfig) -> Optional[int]:
    """Memory a job can use at most: this machine's, plus that of every visible CUDA device times
    ``trainer.num_nodes`` for training (a sharded model spreads over them)."""
    host = host_memory_bytes()
    if host is None:
        return None
    if cfg.get("job_type") != "train" or not torch.cuda.is_available():
        return host
    devices = sum(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    return host + devices * (_int(cfg, "trainer.num_nodes") or 1)


def memory_problems(cfg: DictConfig) -> List[str]:
    """One message per size of ``cfg`` that cannot fit in :func:`job_memory_bytes`."""
    limit = job_memory_bytes(cfg)
    sizes: Dict[str, Any] = {key: _int(cfg, f"model.{key}") for key in MODEL_KEYS}
    if limit is None or sizes["d_model"] is None or sizes["nhead"] is None:
        return []
    where = "memory on this machine"
    problems = []
    d_model, layers = sizes["d_model"], sizes["num_layers"] or 1
    vocab = sizes["num_embeddings"] or 0
    if sizes["max_length"] and sizes["rotary_emb_dim"]:
        problems.append(fit_problem(
            f"model.max_length={sizes['max_length']} (block_size + input_block_size unless set; RoPE "
            f"tables of that many positions x model.rotary_emb_dim={sizes['rotary_emb_dim']})",
            rope_table_bytes(sizes["max_length"], sizes["rotary_emb_dim"]), limit, where,
            "set block_size (or model.max_length) to the longest sequence of the data",
        ))
    params = decoder_parameter_count(
        vocab, d_model, layers, sizes["nhead"], sizes["num_kv_heads"] or sizes["nhead"],
        sizes["dim_feedforward"] or 4 * d_model,
        gated_mlp=OmegaConf.select(cfg, "model.activation", default=None) == "swiglu",
        tied_embeddings=OmegaConf.select(cfg, "model.tie_word_embeddings", default=False) is True,
    )
    copies = TRAINING_COPIES if cfg.get("job_type") == "train" else 1
    named = ", ".join(f"model.{k}={sizes[k]}" for k in ("num_embeddings", "d_model", "num_layers", "dim_feedforward") if sizes[k])
    problems.append(fit_problem(
        f"The model ({params:,} parameters from {named}"
        + (", as fp32 weights, gradients and AdamW's two moments)" if copies > 1 else ")"),
        params * FP32_BYTES * copies, limit, where, "lower model.d_model, model.num_layers or model.dim_feedforward",
    ))
    batch, block = _int(cfg, "per_device_batch_size"), _int(cfg, "block_size")
    if cfg.get("job_type") == "train" and batch and block:
        problems.append(fit_problem(
            f"A training batch of per_device_batch_size={batch} x block_size={block} tokens ("
            + (f"logits over {vocab} ids and " if vocab else "")
            + f"{layers} hidden states of model.d_model={d_model} per token)",
            batch * block * (vocab + layers * d_model) * FP32_BYTES, limit, where,
            "lower block_size to the longest sequence of the data, or per_device_batch_size",
        ))
    return [problem for problem in problems if problem is not None]


def length_problems(cfg: DictConfig) -> List[str]:
    """``predictor.max_length`` (prompt and answer) shorter than a row of the data, ``block_size +
    input_block_size`` (its default): every longer prompt would be cut or left no room to answer."""
    max_length, block = _int(cfg, "predictor.max_length"), _int(cfg, "block_size")
    if max_length is None or block is None:
        return []
    rows = block + (_int(cfg, "input_block_size") or 0)
    if max_length >= rows:
        return []
    return [
        f"predictor.max_length={max_length} is shorter than the rows of the data (block_size + input_block_size "
        f"= {rows} tokens, prompt and answer). Fix: leave predictor.max_length at its default; cap the "
        f"generated tokens with predictor.max_steps instead"
    ]
