"""What ``ARLMHarness`` changes in xlm-core's training loop to make each step cheaper, with the
same results: a fused (under mixed precision, foreach) Adam/AdamW kernel, a foreach EMA update,
and the logged gradient norm in one foreach reduction.

Each replaces a loop over parameters (about ten small tensor operations per parameter and step:
some 150 parameters in STAR's 8-layer model) by a handful of kernels over all of them; measured
one by one in docs/benchmarks.md.
"""

from typing import Any, Iterable, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.distributed.tensor import DTensor
from xlm.utils.ema import EMACallback

FUSED_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW")
FUSED_DEVICES = ("cpu", "cuda")


def with_fused_kernel(optimizer: DictConfig, precision: str, device: torch.device) -> DictConfig:
    """``optimizer`` (the ``optimizer`` config node) on a multi-tensor kernel when it asks for
    none: its target is ``torch.optim.Adam`` or ``AdamW``, it sets neither ``fused`` nor
    ``foreach``, and the parameters live on the CPU or CUDA. Then ``fused: true``, except under
    Lightning's mixed precision (``16-mixed``, ``bf16-mixed``), whose plugin refuses to clip the
    gradients of an optimizer that could unscale them itself: there ``foreach: true``. Otherwise
    ``optimizer`` itself. Both kernels compute the update of torch's per-parameter loop within
    float rounding."""
    if (
        optimizer.get("_target_") not in FUSED_OPTIMIZERS
        or optimizer.get("fused") is not None
        or optimizer.get("foreach") is not None
        or device.type not in FUSED_DEVICES
    ):
        return optimizer
    chosen = OmegaConf.create(OmegaConf.to_container(optimizer))
    with open_dict(chosen):
        if "mixed" in str(precision):
            chosen.foreach = True
        else:
            chosen.fused = True
    return chosen


def total_gradient_norm(
    parameters: Iterable[torch.nn.Parameter], norm_type: float = 2.0, gathered: bool = False
) -> Optional[torch.Tensor]:
    """The ``norm_type`` norm of all gradients together (the norm of their per-parameter norms,
    as Lightning's ``grad_norm`` total), in one foreach reduction; ``None`` without gradients.
    Reads no value on the host. Sharded gradients (FSDP2's DTensors) give the norm over every
    shard, a DTensor; ``gathered`` makes it a plain tensor, the same on every rank (one
    collective), as logging needs."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, norm_type)), norm_type)
    return norm.full_tensor() if gathered and isinstance(norm, DTensor) else norm


class ForeachEMACallback(EMACallback):
    """xlm-core's ``EMACallback`` (same options, checkpoint entry, store/restore around
    validation and test), its per-step update done as three foreach operations over every
    parameter instead of three operations per parameter: the same arithmetic as
    ``torch_ema.ExponentialMovingAverage.update`` (``shadow -= (1 - decay) * (shadow - param)``,
    with its warm-up of the decay), so the averages are bit for bit the same."""

    def __init__(self, decay: float, use_num_updates: bool = True, apply_ema_at_train_end: bool = True):
        super().__init__(decay, use_num_updates=use_num_updates, apply_ema_at_train_end=apply_ema_at_train_end)
        self.params: List[torch.nn.Parameter] = []

    @classmethod
    def replacing(cls, callback: EMACallback) -> "ForeachEMACallback":
        """One with ``callback``'s settings."""
        return cls(callback.decay, callback.use_num_updates, callback.apply_ema_at_train_end)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        self.params = [p for p in pl_module.parameters() if p.requires_grad]

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            self.update()

    @torch.no_grad()
    def update(self) -> None:
        """One ``torch_ema`` update of the shadow parameters towards the current ones."""
        ema = self.ema
        decay = ema.decay
        if ema.num_updates is not None:
            ema.num_updates += 1
            decay = min(decay, (1 + ema.num_updates) / (10 + ema.num_updates))
        params = [p.detach() for p in self.params]
        step = torch._foreach_sub(ema.shadow_params, params)
        torch._foreach_mul_(step, 1.0 - decay)
        torch._foreach_sub_(ema.shadow_params, step)


def replace_ema_callback(callbacks: Iterable[Any]) -> List[ForeachEMACallback]:
    """``[ForeachEMACallback]`` with the settings of xlm-core's ``EMACallback`` in ``callbacks``,
    to return from ``configure_callbacks`` (Lightning then drops the callback it subclasses);
    ``[]`` when there is none or it is already replaced."""
    for callback in callbacks:
        if type(callback) is EMACallback:
            return [ForeachEMACallback.replacing(callback)]
    return []
