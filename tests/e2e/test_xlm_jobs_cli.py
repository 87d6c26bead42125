"""xlm-core's own job types on STAR-easy through the real ``xlm`` CLI, on the CPU: eval on the
test split, extract_checkpoint, push_to_hub (the Hub replaced by a local folder) and its bad
input, print_predictor_params. (name, prepare_data, train, eval on validation, generate_arlm and
export_hf are covered in test_experiments_cli, conftest, test_star_cli and test_export_hf_cli.)"""

import json
import textwrap

import pytest
import torch

from arlm.model_arlm import RotaryTransformerARLMModel
from tests.e2e.test_export_hf_cli import xlm_model_from
from tests.e2e.xlm_cli import (
    REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, checkpoint_dir, offline_env, run_xlm,
)

pytestmark = pytest.mark.slow
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]
FAKE_HUB = textwrap.dedent('''
    """Test stand-in for the Hugging Face Hub: uploads are copied to $ARLM_FAKE_HUB_DIR/<repo id>."""
    import os
    import shutil
    from pathlib import Path

    from huggingface_hub import HfApi, RepoUrl


    def create_repo(self, repo_id, **kwargs):
        return RepoUrl(f"https://huggingface.co/{repo_id}")


    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        shutil.copytree(folder_path, Path(os.environ["ARLM_FAKE_HUB_DIR"]) / repo_id, dirs_exist_ok=True)
        return f"https://huggingface.co/{repo_id}"


    HfApi.create_repo = create_repo
    HfApi.upload_folder = upload_folder
''')


@pytest.fixture(scope="module")
def trained(star_data_dir, tmp_path_factory):
    """(env, last.ckpt, the checkpoint loaded) of a finished tiny STAR-easy run."""
    log_dir = tmp_path_factory.mktemp("jobs_run") / "logs"
    env = offline_env(star_data_dir, log_dir)
    run_xlm(["job_type=train", *STAR, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    ckpt = checkpoint_dir(log_dir) / "last.ckpt"
    return env, ckpt, torch.load(ckpt, map_location="cpu", weights_only=False)


def same_logits(model: RotaryTransformerARLMModel, reference: RotaryTransformerARLMModel) -> bool:
    ids = torch.randint(7, 27, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(model.eval()(ids), reference.eval()(ids))


def test_eval_on_the_test_split(trained):
    env, ckpt, _ = trained
    out = run_xlm(
        ["job_type=eval", *STAR, "+eval.split=test", f"+eval.ckpt_path={ckpt}", "+trainer.limit_test_batches=1"],
        cwd=REPO_ROOT, env=env,
    ).stdout
    for metric in ("test/prediction/exact_", "test/prediction/token_", "test/lm/perplexity", "test/lm/token_nll"):
        assert metric in out, f"{metric} missing from the eval output"
    assert "val/" not in out.split("Testing")[-1]


def test_extract_checkpoint_writes_the_ema_weights(trained, tmp_path):
    env, ckpt, checkpoint = trained
    out = tmp_path / "weights.pt"
    run_xlm(
        ["job_type=extract_checkpoint", *STAR, f"+post_training.checkpoint_path={ckpt}",
         f"+post_training.model_state_dict_path={out}"],
        cwd=REPO_ROOT, env=env,
    )
    reference = xlm_model_from(checkpoint, use_ema=True)
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert list(state) == list(reference.state_dict())
    rebuilt = xlm_model_from(checkpoint, use_ema=False)
    rebuilt.load_state_dict(state)
    assert same_logits(rebuilt, reference)
    assert not same_logits(xlm_model_from(checkpoint, use_ema=False), reference)


def test_push_to_hub_uploads_a_folder_that_loads_back(trained, tmp_path):
    env, ckpt, checkpoint = trained
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(FAKE_HUB)
    hub = tmp_path / "hub"
    env = dict(env, PYTHONPATH=str(tmp_path / "site"), ARLM_FAKE_HUB_DIR=str(hub), HF_HUB_OFFLINE="0")
    run_xlm(
        ["job_type=push_to_hub", *STAR, "+hub.repo_id=me/arlm-star-easy", f"+hub_checkpoint_path={ckpt}"],
        cwd=REPO_ROOT, env=env,
    )
    uploaded = hub / "me" / "arlm-star-easy"
    assert {"model.safetensors", "config.json"} <= {p.name for p in uploaded.iterdir()}
    assert same_logits(RotaryTransformerARLMModel.from_pretrained(uploaded), xlm_model_from(checkpoint, use_ema=True))


@pytest.mark.parametrize(
    "args, env_extra, message",
    [
        ([], {}, "push_to_hub: no repository given. Fix: add +hub.repo_id="),
        (["+hub.repo_id=me/x", "+hub_checkpoint_path=/nonexistent.ckpt"], {},
         "push_to_hub: /nonexistent.ckpt does not exist (or is not a file)"),
        (["+hub.repo_id=me/x", "CKPT"], {}, "push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded"),
        (["+hub.repo_id=me/x", "CKPT"], {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
         "push_to_hub: cannot create or reach 'me/x' on the Hugging Face Hub (ConnectionError"),
    ],
)
def test_push_to_hub_bad_input_is_one_line(trained, args, env_extra, message):
    env, ckpt, _ = trained
    args = [f"+hub_checkpoint_path={ckpt}" if a == "CKPT" else a for a in args]
    proc = run_xlm(["job_type=push_to_hub", *STAR, *args], cwd=REPO_ROOT, env=dict(env, **env_extra), check=False)
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in proc.stdout


def test_print_predictor_params_prints_resolved_values(tmp_path):
    env = offline_env(tmp_path / "data", tmp_path / "logs")
    out = run_xlm(["job_type=print_predictor_params", *STAR], cwd=REPO_ROOT, env=env).stdout
    params = json.loads(out.strip().splitlines()[-1])
    assert "${" not in json.dumps(params)
    assert params["_target_"] == "arlm.predictor_arlm.ARLMPredictor"
    assert params["max_length"] == 36 and params["max_steps"] == 36 and params["sampling_method"] == "greedy"
    assert params["tokenizer"] is None and params["noise_schedule"] is None  # the Harness sets both
