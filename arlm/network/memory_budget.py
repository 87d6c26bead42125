"""Memory a size needs, estimated before it is allocated, against the memory this machine has.

A size no machine here can hold (``model.max_length=10**9``, ``d_model=10**6``, a static KV cache
of 10**8 slots, a STAR split of 10**9 graphs) used to fail inside the allocator
(``DefaultCPUAllocator: can't allocate memory``) or end in the kernel's OOM killer, naming no key.
Each estimate here is the size of what the setting itself allocates, a lower bound of what the
program needs (activations, the allocator's slack and the rest of the program come on top), so
only what cannot fit is refused. :func:`check_fits` compares an estimate with a limit and raises
:class:`MemoryBudgetError` naming the setting, the estimate, the limit and the fix.

:func:`check_decoder_fits` runs where a decoder is built, with the dtype and device its weights
get (nothing is checked on the meta device, whose tensors take no memory).

Limits: :func:`host_memory_bytes` is the physical memory (``sysconf``, or ``/proc/meminfo``);
:func:`device_memory_bytes` that of a device (``torch.cuda.mem_get_info`` for CUDA). Plain torch
and the standard library, as the rest of the network package.
"""

import os
import sys
from typing import Any, Iterable, Optional

import torch

from arlm.network.config import DecoderConfig

FP32_BYTES = 4
ROPE_BYTES_PER_ENTRY = 24
"""Per entry of the ``max_positions x rotary_dim`` RoPE tables: fp32 cos and sin (8 bytes) and the
float64 angles, cos and sin they are computed from (16 of the 24 bytes of those, at the peak)."""
TRAINING_COPIES = 4
"""fp32 copies of every parameter during training: weights, gradients and AdamW's two moments."""


class MemoryBudgetError(ValueError):
    """A setting needs more memory than this machine has; the message names it and the fix."""


def host_memory_bytes() -> Optional[int]:
    """Physical memory of this machine, or None where neither ``sysconf`` nor ``/proc/meminfo`` tells."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_memory_bytes(device: Any) -> Optional[int]:
    """Total memory of ``device``: the host's for the CPU, ``mem_get_info`` for CUDA, None otherwise."""
    device = torch.device(device) if device is not None else torch.get_default_device()
    if device.type == "cpu":
        return host_memory_bytes()
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[1]
    return None


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def check_fits(what: str, needed: int, limit: Optional[int], where: str, fix: str) -> None:
    """Raise :class:`MemoryBudgetError` when ``needed`` bytes exceed ``limit`` (None: unknown, no check).

    The message reads ``"<what> would take about <needed>, more than the <limit> of <where>. Fix: <fix>"``.
    """
    problem = fit_problem(what, needed, limit, where, fix)
    if problem is not None:
        raise MemoryBudgetError(problem)


def fit_problem(what: str, needed: int, limit: Optional[int], where: str, fix: str) -> Optional[str]:
    """The message of :func:`check_fits`, or None when ``needed`` fits."""
    if limit is None or needed <= limit:
        return None
    return f"{what} would take about {format_bytes(needed)}, more than the {format_bytes(limit)} of {where}. Fix: {fix}"


def check_decoder_fits(config: DecoderConfig, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse, before anything is allocated, a decoder whose weights (``config.parameter_count``
    at ``dtype``'s size) or RoPE tables do not fit in the memory of ``device``; the message names
    the face's arguments (``config.arg_names``, ``config.owner``)."""
    limit = device_memory_bytes(device)
    if limit is None:
        return
    where, name = f"{device} memory on this machine", config.arg_name
    sizes = ", ".join(f"{name(field)}={getattr(config, field)}" for field in ("vocab_size", "d_model", "n_layers", "d_ff"))
    check_fits(
        f"{config.owner}the weights ({config.parameter_count:,} parameters from {sizes})",
        config.parameter_count * dtype.itemsize, limit, where,
        f"lower {name('d_model')}, {name('n_layers')}, {name('d_ff')} or {name('vocab_size')}",
    )
    check_fits(
        f"{config.owner}{name('max_positions')}={config.max_positions} (RoPE tables of "
        f"{config.max_positions} positions x {name('rotary_dim')}={config.rotary_dim})",
        rope_table_bytes(config.max_positions, config.rotary_dim), limit, where,
        f"set {name('max_positions')} to the longest sequence the model will see (prompt and generated tokens)",
    )


def rope_table_bytes(max_positions: int, rotary_dim: int) -> int:
    """Peak bytes of building the RoPE tables (see :data:`ROPE_BYTES_PER_ENTRY`)."""
    return max_positions * rotary_dim * ROPE_BYTES_PER_ENTRY


def kv_cache_bytes(num_layers: int, batch_size: int, num_kv_heads: int, slots: int, head_dim: int, itemsize: int) -> int:
    """Bytes of a static cache: keys and values of every layer, ``batch x kv heads x slots x head_dim``."""
    return 2 * num_layers * batch_size * num_kv_heads * slots * head_dim * itemsize


def python_object_bytes(value: Any) -> int:
    """Memory of ``value`` and the lists, tuples, dicts, strings and numbers inside it (small ints,
    which Python shares, not counted): what a row of generated data holds on the heap."""
    if isinstance(value, int) and -5 <= value <= 256:
        return 0
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        return size + sum(python_object_bytes(k) + python_object_bytes(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return size + sum(python_object_bytes(item) for item in value)
    return size


def mean_python_object_bytes(rows: Iterable[Any]) -> float:
    """Mean :func:`python_object_bytes` over ``rows`` (0 for none)."""
    sizes = [python_object_bytes(row) for row in rows]
    return sum(sizes) / len(sizes) if sizes else 0.0
