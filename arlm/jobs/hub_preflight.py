"""Checks run before xlm-core's ``xlm job_type=push_to_hub``, so that a missing repository, a
missing checkpoint or an unreachable Hub stops the job with one line instead of a traceback from
deep inside xlm-core or huggingface_hub.

:class:`PushToHubPreflight` is a Hydra callback (``hydra.callbacks.arlm_push_to_hub_preflight``
in ``configs/model_type/arlm.yaml``); Hydra calls ``on_job_start`` before the job itself and it
does nothing for other job types. A failed check raises
:class:`~arlm.runtime.preflight.JobRefused` with the message, which Hydra and xlm-core let
through, so the process exits with status 1 and prints only that line.

Checked, in order: ``hub.repo_id`` is set; ``hub_checkpoint_path`` is given and is a file (on a
machine without CUDA, model-only weights are refused: xlm-core moves them to ``"cuda"``);
``HF_HUB_OFFLINE`` is not set; the repository can be created or found
(``HfApi.create_repo(repo_id, exist_ok=True)``, which xlm-core calls next anyway).
"""

import os
from typing import Any, Optional

import torch
from hydra.experimental.callback import Callback
from huggingface_hub import HfApi, constants
from omegaconf import DictConfig, OmegaConf
from xlm.utils.hf_hub import resolve_hf_hub_token

from arlm.runtime.config_schema import is_unset
from arlm.runtime.preflight import JobRefused

PREFIX = "push_to_hub: "


def _text(cfg: DictConfig, key: str) -> Optional[str]:
    value = OmegaConf.select(cfg, key, default=None)
    return None if is_unset(value) else str(value)


def preflight_error(cfg: DictConfig) -> Optional[str]:
    """The first problem that would stop ``push_to_hub`` before the network, or ``None``."""
    repo_id = _text(cfg, "hub.repo_id")
    if repo_id is None:
        return (
            f"{PREFIX}no repository given. Fix: add +hub.repo_id=<user or org>/<name> "
            f"+hub_checkpoint_path=<.ckpt written by training>"
        )
    checkpoint = _text(cfg, "hub_checkpoint_path")
    model_only = _text(cfg, "model_only_checkpoint_path")
    if checkpoint is None and model_only is None:
        return f"{PREFIX}no weights given. Fix: add +hub_checkpoint_path=<.ckpt written by training>"
    if checkpoint is None and not torch.cuda.is_available():
        return (
            f"{PREFIX}model_only_checkpoint_path needs CUDA (xlm-core moves the model to 'cuda'). "
            f"Fix: on this machine pass the Lightning checkpoint as +hub_checkpoint_path=<.ckpt>"
        )
    path = checkpoint or model_only
    if not os.path.isfile(path):
        return f"{PREFIX}{path} does not exist (or is not a file). Fix: pass the .ckpt written by training"
    return None


def hub_error(repo_id: str) -> Optional[str]:
    """Why the Hub repository ``repo_id`` cannot be reached or created, or ``None``."""
    if constants.HF_HUB_OFFLINE:
        return f"{PREFIX}HF_HUB_OFFLINE is set, so nothing can be uploaded. Fix: unset HF_HUB_OFFLINE"
    try:
        HfApi(token=resolve_hf_hub_token()).create_repo(repo_id=repo_id, repo_type="model", exist_ok=True)
    except Exception as error:  # any failure of the Hub call is reported the same way
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return (
            f"{PREFIX}cannot create or reach {repo_id!r} on the Hugging Face Hub "
            f"({type(error).__name__}: {reason}). Fix: check the network and the token "
            f"(HF_TOKEN or HF_HUB_KEY)"
        )
    return None


class PushToHubPreflight(Callback):
    """Hydra callback running :func:`preflight_error` and :func:`hub_error` for ``push_to_hub``."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "job_type", default=None) != "push_to_hub":
            return
        error = preflight_error(config) or hub_error(_text(config, "hub.repo_id"))
        if error is not None:
            raise JobRefused(error)
