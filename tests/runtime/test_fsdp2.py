"""FSDP2 sharding of arlm's network in one gloo process (a 1-rank mesh): the sharded model
computes what the plain one does, tied embeddings stay one parameter, and the options are checked."""

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from arlm.model_arlm import RotaryTransformerARLMModel
from arlm.runtime.fsdp2_sharding import mixed_precision_policy, release_gathered, shard_decoder
from arlm.runtime.fsdp2_strategy import FSDP2Strategy


@pytest.fixture(scope="module")
def mesh():
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


def tiny(tie: bool) -> RotaryTransformerARLMModel:
    torch.manual_seed(0)
    return RotaryTransformerARLMModel(30, 16, 2, 2, dropout=0.0, rotary_emb_dim=8, tie_word_embeddings=tie)


@pytest.mark.parametrize("tie", [False, True])
def test_the_sharded_model_computes_what_the_plain_one_does(mesh, tie):
    plain, sharded = tiny(tie), tiny(tie)
    assert shard_decoder(sharded, mesh, None, activation_checkpointing=True)
    assert not shard_decoder(sharded, mesh, None, activation_checkpointing=True)  # configure_model called again
    assert isinstance(sharded, FSDPModule) and all(isinstance(layer, FSDPModule) for layer in sharded.model.layers)
    assert all(isinstance(p, DTensor) for p in sharded.parameters())
    assert sharded.model.gradient_checkpointing
    if tie:
        assert sharded.lm_head.weight is sharded.model.embed_tokens.weight
    ids = torch.randint(1, 30, (2, 7), generator=torch.Generator().manual_seed(1))
    sharded.train()
    loss = sharded(ids).logsumexp(-1).mean()
    loss.backward()
    plain(ids).logsumexp(-1).mean().backward()
    torch.testing.assert_close(loss, plain(ids).logsumexp(-1).mean())
    grads = {name: p.grad.full_tensor() for name, p in sharded.named_parameters()}
    for name, p in plain.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(sharded.last_hidden_state(ids), plain.last_hidden_state(ids))
    release_gathered(sharded)
    assert all(isinstance(p, DTensor) for p in sharded.parameters())


def test_mixed_precision_only_under_bf16_mixed_on_cuda():
    policy = mixed_precision_policy("bf16-mixed", torch.device("cuda"))
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32
    assert mixed_precision_policy("bf16-mixed", torch.device("cpu")) is None
    assert mixed_precision_policy("32-true", torch.device("cuda")) is None


def test_activation_checkpointing_must_be_a_boolean():
    with pytest.raises(TypeError, match="trainer.strategy.activation_checkpointing='yes' must be true or false"):
        FSDP2Strategy(activation_checkpointing="yes")
