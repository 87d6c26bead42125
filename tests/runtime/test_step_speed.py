"""arlm.runtime.step_speed: the fused optimizer choice, the foreach EMA update and the one-reduction
gradient norm give the results of what they replace."""

import pytest
import torch
from omegaconf import OmegaConf

pytest.importorskip("xlm")
from lightning.pytorch.utilities import grad_norm  # noqa: E402
from torch_ema import ExponentialMovingAverage  # noqa: E402
from xlm.utils.ema import EMACallback  # noqa: E402

from arlm.model_arlm import RotaryTransformerARLMModel  # noqa: E402
from arlm.runtime.step_speed import ForeachEMACallback, replace_ema_callback, total_gradient_norm, with_fused_kernel  # noqa: E402
from tests.conftest import TINY_MODEL_KWARGS  # noqa: E402

CPU = torch.device("cpu")


def adamw(**extra):
    return OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 0.003, "weight_decay": 0.01, **extra})


def test_adam_and_adamw_get_the_fused_kernel_when_nothing_else_is_asked():
    fused = with_fused_kernel(adamw(), "32-true", CPU)
    assert fused.fused is True and fused.lr == 0.003 and "foreach" not in fused
    assert with_fused_kernel(OmegaConf.create({"_target_": "torch.optim.Adam"}), "bf16-true", torch.device("cuda")).fused


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_gets_the_foreach_kernel(precision):
    """Lightning's mixed-precision plugin refuses to clip the gradients of a fused optimizer."""
    chosen = with_fused_kernel(adamw(), precision, CPU)
    assert chosen.foreach is True and "fused" not in chosen


@pytest.mark.parametrize(
    "config, precision, device",
    [
        (adamw(fused=False), "32-true", CPU),  # the user's choice stands
        (adamw(foreach=True), "32-true", CPU),
        (adamw(), "32-true", torch.device("meta")),
        (OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 0.1}), "32-true", CPU),
    ],
)
def test_no_fused_kernel_where_it_is_not_safe_or_was_decided(config, precision, device):
    assert with_fused_kernel(config, precision, device) is config


def test_fused_adamw_follows_the_default_loop_over_ten_steps():
    torch.manual_seed(0)
    models = [RotaryTransformerARLMModel(**TINY_MODEL_KWARGS) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.AdamW(models[0].parameters(), lr=1e-2), torch.optim.AdamW(models[1].parameters(), lr=1e-2, fused=True)]
    ids = torch.randint(1, 50, (2, 9))
    for _ in range(10):
        for model, optimizer in zip(models, optimizers):
            model(ids).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_total_gradient_norm_is_lightnings_total():
    torch.manual_seed(0)
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS)
    assert total_gradient_norm(model.parameters()) is None
    model(torch.randint(1, 50, (2, 9))).square().mean().backward()
    torch.testing.assert_close(total_gradient_norm(model.parameters()), grad_norm(model, 2.0)["grad_2.0_norm_total"])


class _Trainer:
    accumulate_grad_batches = 1


def test_foreach_ema_is_torch_ema_bit_for_bit():
    torch.manual_seed(0)
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS)
    reference = ExponentialMovingAverage(list(model.parameters()), decay=0.99, use_num_updates=True)
    callback = ForeachEMACallback(decay=0.99)
    callback.on_train_start(None, _LightningModule(model))
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        reference.update()
        callback.on_train_batch_end(_Trainer(), None, None, None, step)
    assert callback.ema.num_updates == reference.num_updates == 5
    for mine, theirs in zip(callback.ema.shadow_params, reference.shadow_params):
        assert torch.equal(mine, theirs)


class _LightningModule:
    """What ``EMACallback.on_train_start`` reads of a LightningModule."""

    def __init__(self, model):
        self.model, self.device = model, torch.device("cpu")

    def parameters(self):
        return self.model.parameters()


def test_the_ema_callback_is_replaced_with_its_settings():
    original = EMACallback(decay=0.9, use_num_updates=False, apply_ema_at_train_end=False)
    (replacement,) = replace_ema_callback([object(), original])
    assert isinstance(replacement, EMACallback)
    assert (replacement.decay, replacement.use_num_updates, replacement.apply_ema_at_train_end) == (0.9, False, False)
    assert replace_ema_callback([replacement]) == []
