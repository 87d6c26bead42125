"""Exact fp32 matmuls on the CPU, whatever xlm-core asked for.

xlm-core 0.3.1 calls ``torch.set_float32_matmul_precision("medium")`` before it builds the model
for training (``lightning_train``) and for inference (``load_model_for_inference``: eval,
generate, push_to_hub). On CUDA that allows TF32/bf16 tensor cores. On the CPU it makes oneDNN
run every fp32 matmul in bfloat16 (an error of about 0.2 on a 256-wide product of unit normals,
against 4e-5 in fp32) and sends SDPA's CPU kernel down a path 17x slower (measured on a
64 x 4 x 44 x 16 causal attention, forward and backward): STAR training ran at a fifth of its
speed, in bf16, without saying so. The CPU therefore gets ``"highest"`` back once the device is
known; other devices keep xlm-core's setting.
"""

import torch
from xlm.utils.rank_zero import RankedLogger

logger = RankedLogger(__name__, rank_zero_only=True)


def exact_fp32_matmul_on_cpu(device: torch.device) -> None:
    """Set ``torch.set_float32_matmul_precision("highest")`` when ``device`` is the CPU."""
    if device.type != "cpu":
        return
    previous = torch.get_float32_matmul_precision()
    if previous != "highest":
        torch.set_float32_matmul_precision("highest")
        logger.info(
            f"float32 matmul precision {previous!r} -> 'highest' on the CPU (xlm-core's "
            f"{previous!r} would run fp32 matmuls in bfloat16 there, and attention far slower)"
        )
