"""experiment=star_{easy,medium,hard}_arlm_paper: the ILM paper's autoregressive recipe composes
with Hydra as the CLI composes it and builds the 85M network (docs/star.md)."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("xlm")
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import xlm  # noqa: E402

XLM_CONFIGS = Path(xlm.__file__).parent / "configs"

# Per level: steps and precision of the authors' scripts (train_arlm_star_small.sh,
# train_arlm_vstar_small.sh, train_arlm_vstar_medium.sh) and the level's node labels.
LEVELS = {
    "easy": dict(max_steps=50000, precision="32-true", vocab_size=20),
    "medium": dict(max_steps=100000, precision="32-true", vocab_size=20),
    "hard": dict(max_steps=100000, precision="bf16-mixed", vocab_size=56),
}


def compose_experiment(name: str):
    """The config ``xlm job_type=train experiment=<name>`` runs (xLM's primary config, its
    ``configs/common`` and arlm's configs through the plugin scan), unresolved."""
    with initialize_config_dir(config_dir=str(XLM_CONFIGS / "lightning_train"), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[f"experiment={name}", f"hydra.searchpath=[file://{XLM_CONFIGS / 'common'}]"],
        )


def build_model_on_meta(cfg):
    """The configured network with parameter shapes only (no memory, no initialisation)."""
    tokenizer = instantiate(cfg.global_components.tokenizer)
    OmegaConf.register_new_resolver("tokenizer", lambda attr: getattr(tokenizer, attr), replace=True)
    if not OmegaConf.has_resolver("eval"):
        OmegaConf.register_new_resolver("eval", eval)
    try:
        with torch.device("meta"):
            return instantiate(cfg.model)
    finally:
        OmegaConf.clear_resolver("tokenizer")


@pytest.mark.parametrize("level", LEVELS)
def test_paper_experiment_builds_the_85m_network(level):
    cfg = compose_experiment(f"star_{level}_arlm_paper")
    model = build_model_on_meta(cfg)
    params = dict(model.named_parameters())
    embedding = sum(p.numel() for name, p in params.items() if "embed_tokens" in name or "lm_head" in name)
    non_embedding = sum(p.numel() for p in params.values()) - embedding
    # 12 layers x (4 x 768^2 attention + 2 x 768 x 3072 MLP, plus biases and norms)
    assert 84.5e6 < non_embedding < 85.5e6, non_embedding
    assert (cfg.model.d_model, cfg.model.num_layers, cfg.model.nhead, cfg.model.dropout) == (768, 12, 12, 0.1)
    assert embedding == 2 * (LEVELS[level]["vocab_size"] + 7) * 768  # 7 special tokens, untied head


@pytest.mark.parametrize("level", LEVELS)
def test_paper_experiment_carries_the_scripts_values(level):
    cfg = compose_experiment(f"star_{level}_arlm_paper")
    assert cfg.trainer.max_steps == LEVELS[level]["max_steps"]
    assert cfg.trainer.precision == LEVELS[level]["precision"]
    assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("auto", 1)  # CUDA when there is one
    assert (cfg.per_device_batch_size, cfg.global_batch_size) == (64, 64)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.trainer.gradient_clip_val) == (1e-5, 0.01, 1.0)
    assert (cfg.lr_scheduler.name, cfg.lr_scheduler.num_warmup_steps) == ("constant_with_warmup", 500)
    assert (cfg.callbacks.ema.decay, cfg.callbacks.ema.use_num_updates) == (0.9999, True)
    assert (cfg.trainer.val_check_interval, cfg.trainer.check_val_every_n_epoch) == (None, 2)
    assert cfg.predictor.sampling_method == "greedy"
    managers = cfg.datamodule.dataset_managers
    assert managers.train.lm.collator.loss_on_prompt is True
    assert managers.val.lm.collator.loss_on_prompt is False and managers.test.lm.collator.loss_on_prompt is False
    assert cfg.job_name.startswith(f"star_{level}_paper__")  # never resumes the CPU-sized run
