"""How FSDP2 shards arlm's network: each decoder layer one unit, the whole model the root unit
(which keeps the token embedding, the final norm and the output head), as torchtitan shards its Llama.

Each unit's parameters are sharded over the data-parallel ranks (``Shard(0)`` DTensors) and
gathered when its ``forward`` is called, so a rank holds its shard of everything plus one layer at
a time in full. The loss and the predictor call the model's ``last_hidden_state`` and then its
``lm_head``: ``last_hidden_state`` is registered as a forward method of the root, so the call
gathers the root's parameters and they stay gathered for the head. Embedding and head
stay in one unit: tied (``tie_word_embeddings``: the head *is* the embedding weight) they are one
parameter, which FSDP2 manages in one unit only. As FSDP2's root the unit stays gathered from the
forward pass to the end of the backward pass; the last layer too, since the backward pass starts
with it. :func:`release_gathered` drops what stays gathered once an evaluation is over.
"""

from typing import Any, Optional

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

MIXED_PRECISIONS = {"bf16-mixed": torch.bfloat16}
"""Lightning precisions under which the gathered parameters are cast, on CUDA (Lightning's
``ModelParallelStrategy`` takes no ``16-mixed``)."""


def mixed_precision_policy(precision: Any, device: torch.device) -> Optional[MixedPrecisionPolicy]:
    """The FSDP2 policy for Lightning's ``precision`` on ``device``: on CUDA under ``bf16-mixed``,
    parameters gathered in bf16 and gradients reduced in fp32, the sharded weights and the
    optimizer staying fp32; otherwise None (the weights' own dtype, as on the CPU)."""
    dtype = MIXED_PRECISIONS.get(str(precision))
    if dtype is None or device.type != "cuda":
        return None
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def shard_decoder(
    model: torch.nn.Module, mesh: DeviceMesh, policy: Optional[MixedPrecisionPolicy], activation_checkpointing: bool
) -> bool:
    """Apply ``fully_shard`` over ``mesh`` to each layer of ``model.model.layers``, then to
    ``model`` (``RotaryTransformerARLMModel``; its ``last_hidden_state`` a forward method), with ``policy``;
    with ``activation_checkpointing`` each layer's activations are recomputed in the backward
    pass. Returns False, changing nothing, when ``model`` is sharded already (Lightning calls
    ``configure_model`` again for the test after ``fit``)."""
    if isinstance(model, FSDPModule):
        return False
    layers = list(model.model.layers)
    model.model.gradient_checkpointing = activation_checkpointing
    options = {} if policy is None else {"mp_policy": policy}
    for index, layer in enumerate(layers):
        fully_shard(layer, mesh=mesh, reshard_after_forward=index < len(layers) - 1, **options)
    fully_shard(model, mesh=mesh, **options)
    register_fsdp_forward_method(model, "last_hidden_state")
    return True


def release_gathered(module: torch.nn.Module) -> None:
    """Shard again every FSDP2 unit of ``module`` that holds its parameters gathered. The root
    unit stays gathered after a forward pass without backward (an evaluation); a gathered copy
    must not outlive the weights it was gathered from, which the EMA callback swaps back after
    validation and test. Nothing for a module without FSDP2 units."""
    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()
