"""A real ``xlm job_type=train`` checkpoint through ``xlm job_type=export_hf``: the Hugging Face
directory loads with the Auto classes and gives the trained network's logits; the default
(native GPT-NeoX) export does so in a process where arlm cannot be imported, with the xLM face's
greedy continuations of a left-padded batch, through ``pipeline`` too."""

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from torch_ema import ExponentialMovingAverage
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from xlm.datamodule import SimpleSpaceTokenizer

from arlm import ArlowForCausalLM, RotaryTransformerARLMModel
from tests.e2e.xlm_cli import (
    REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, XLM, checkpoint_dir, offline_env, run_xlm,
)
from tests.hf_without_arlm import greedy_reference, load_without_arlm, run_without_arlm

pytestmark = pytest.mark.slow
STAR = ["experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL]


@pytest.fixture(scope="module")
def last_checkpoint(star_data_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("export_run") / "logs"
    env = offline_env(star_data_dir, log_dir)
    run_xlm(["job_type=train", *STAR, *TINY_TRAIN], cwd=REPO_ROOT, env=env)
    return env, checkpoint_dir(log_dir) / "last.ckpt"


def xlm_model_from(checkpoint: dict, use_ema: bool) -> RotaryTransformerARLMModel:
    """The trained network rebuilt by hand: recorded kwargs (xlm-core leaves the tokenizer's
    values as literal ``${tokenizer:...}``), ``model.`` keys, torch_ema's copy."""
    kwargs = {k: v for k, v in checkpoint["hyper_parameters"]["model"].items() if k != "_target_"}
    assert kwargs["num_embeddings"] == "${tokenizer:full_vocab_size}"
    tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    kwargs.update(num_embeddings=tokenizer.full_vocab_size, padding_idx=tokenizer.pad_token_id)
    model = RotaryTransformerARLMModel(**kwargs)
    prefix = "model."
    model.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    if use_ema:
        ema = ExponentialMovingAverage([p for p in model.parameters() if p.requires_grad], decay=0.5)
        ema.load_state_dict(checkpoint["ema"])
        ema.copy_to()
    return model.eval()


def export(ckpt_path, out, env, *flags, check=True):
    return run_xlm(
        ["job_type=export_hf", *STAR, f"+export_hf.checkpoint_path={ckpt_path}",
         f"+export_hf.output_dir={out}", *flags],
        cwd=REPO_ROOT, env=env, check=check,
    )


@pytest.mark.parametrize("apply_ema", [None, False])
def test_arlow_export_reproduces_the_trained_network(last_checkpoint, tmp_path, apply_ema):
    env, ckpt_path = last_checkpoint
    out = tmp_path / "hf"
    ema_flag = [] if apply_ema is None else [f"+export_hf.apply_ema={str(apply_ema).lower()}"]
    proc = export(ckpt_path, out, env, "+export_hf.architecture=arlow", *ema_flag)
    assert f"Exported {ckpt_path} to {out} as ArlowForCausalLM" in proc.stdout
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert isinstance(hf, ArlowForCausalLM) and isinstance(tokenizer, PreTrainedTokenizerFast)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    reference = xlm_model_from(checkpoint, use_ema=apply_ema is None)
    ids = torch.randint(7, hf.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, reference(ids))
    star_tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    assert tokenizer.encode("3 4 5 [EOS]") == star_tokenizer.encode("3 4 5 [EOS]")
    assert len(tokenizer) == hf.config.vocab_size == star_tokenizer.full_vocab_size


def test_default_export_is_native_and_runs_without_arlm(last_checkpoint, tmp_path):
    env, ckpt_path = last_checkpoint
    out = tmp_path / "hf"
    proc = export(ckpt_path, out, env)
    assert f"Exported {ckpt_path} to {out} as GPTNeoXForCausalLM (native" in proc.stdout
    reference = xlm_model_from(torch.load(ckpt_path, map_location="cpu", weights_only=True), use_ema=True)
    star_tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    prompts = ["1 2 3 4 5 6", "7", "8 9 10"]
    ids = torch.randint(7, star_tokenizer.full_vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    result = load_without_arlm(out, tmp_path / "child", ids, prompts, new_tokens=6)

    assert result["model_class"] == "GPTNeoXForCausalLM" and result["padding_side"] == "left"
    assert result["specials"] == {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
    assert result["vocab_size"] == star_tokenizer.full_vocab_size
    with torch.no_grad():
        torch.testing.assert_close(result["logits"], reference(ids), atol=1e-5, rtol=0)
    mask = result["attention_mask"]
    assert (mask == 0).any()  # the prompts were left-padded
    prompt_ids = [star_tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    assert [row[m.bool()].tolist() for row, m in zip(result["input_ids"], mask)] == prompt_ids
    expected = greedy_reference(
        reference, prompt_ids, 6, star_tokenizer.eos_token_id, star_tokenizer.pad_token_id
    )
    assert result["generated"][:, mask.shape[1]:].tolist() == expected
    exported = AutoTokenizer.from_pretrained(out)  # SimpleSpaceTokenizer never skips specials
    expected_texts = [exported.decode(c, skip_special_tokens=True) for c in expected]
    assert result["pipeline_texts"] == expected_texts  # with the leading space of every decoded text


def test_export_refuses_to_overwrite_unless_asked(last_checkpoint, tmp_path):
    env, ckpt_path = last_checkpoint
    out = tmp_path / "hf"
    export(ckpt_path, out, env, "+export_hf.architecture=arlow")
    proc = export(ckpt_path, out, env, check=False)
    assert proc.returncode != 0 and "directory is not empty" in proc.stdout
    assert "ArlowForCausalLM" in (out / "config.json").read_text()
    export(ckpt_path, out, env, "+export_hf.overwrite=true")
    assert "GPTNeoXForCausalLM" in (out / "config.json").read_text()


@pytest.mark.parametrize("flags, refused", [
    (["+export_hf.overwrite=no"], "export_hf.overwrite='no'"),
    (["+export_hf.overwrite=true", "+export_hf.apply_ema=no"], "export_hf.apply_ema='no'"),
    (["+export_hf.overwrite=1"], "export_hf.overwrite=1"),
])
def test_a_flag_that_is_not_a_boolean_is_refused_before_the_directory_is_touched(last_checkpoint, tmp_path, flags, refused):
    env, ckpt_path = last_checkpoint
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep me\n")
    proc = export(ckpt_path, out, env, *flags, check=False)
    assert proc.returncode != 0
    assert f"ConfigValueError: Invalid configuration: {refused} must be true or false" in proc.stdout
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_export_hf_job_without_paths_says_what_it_needs(last_checkpoint):
    env, _ = last_checkpoint
    proc = run_xlm(["job_type=export_hf", *STAR], cwd=REPO_ROOT, env=env, check=False)
    assert proc.returncode != 0
    assert "export_hf needs +export_hf.checkpoint_path" in proc.stdout


# About 100 MB of weights: an export spends long enough writing them to be caught in the act.
LARGE = dict(d_model=512, num_layers=8, nhead=8, rotary_emb_dim=64, dim_feedforward=2048)


@pytest.fixture(scope="module")
def large_checkpoint(last_checkpoint, tmp_path_factory):
    """The trained run's checkpoint format with a wider and deeper network (random weights)."""
    env, ckpt_path = last_checkpoint
    recorded = dict(torch.load(ckpt_path, map_location="cpu", weights_only=True)["hyper_parameters"]["model"], **LARGE)
    tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    kwargs = {k: v for k, v in recorded.items() if k != "_target_"}
    kwargs.update(num_embeddings=tokenizer.full_vocab_size, padding_idx=tokenizer.pad_token_id)
    model = RotaryTransformerARLMModel(**kwargs)
    path = tmp_path_factory.mktemp("large") / "large.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": recorded}}, path)
    return env, path


def start_export(ckpt_path, out, env) -> subprocess.Popen:
    command = [str(XLM), "job_type=export_hf", *STAR, f"+export_hf.checkpoint_path={ckpt_path}", f"+export_hf.output_dir={out}"]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def staging_of(proc: subprocess.Popen, out: Path) -> Path:
    """The staging directory ``proc`` is writing beside ``out``, as soon as it appears."""
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        found = next(out.parent.glob(f".{out.name}.partial-{proc.pid}-*"), None)
        if found is not None:
            return found
        time.sleep(0.001)
    raise AssertionError(f"export {proc.pid} never staged a directory beside {out}:\n{proc.communicate()[0][-4000:]}")


def test_of_two_exports_into_one_new_directory_one_succeeds_the_other_fails_naming_it(large_checkpoint, tmp_path):
    env, ckpt_path = large_checkpoint
    out = tmp_path / "hf"
    first = start_export(ckpt_path, out, env)
    try:
        staging_of(first, out)
        first.send_signal(signal.SIGSTOP)  # first has checked that out is new and is writing its copy
        second = export(ckpt_path, out, env)
    finally:
        first.send_signal(signal.SIGCONT)
        first_output = first.communicate(timeout=600)[0]
    assert f"Exported {ckpt_path} to {out}" in second.stdout
    assert first.returncode != 0, "both exports reported success"
    assert f"output_dir {out} was written by another export while this one ran" in first_output
    assert AutoModelForCausalLM.from_pretrained(out).config.hidden_size == LARGE["d_model"]
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_a_killed_export_leaves_a_staging_directory_that_the_next_export_removes_saying_so_once(large_checkpoint, tmp_path):
    env, ckpt_path = large_checkpoint
    out = tmp_path / "hf"
    killed = start_export(ckpt_path, out, env)
    try:
        staging = staging_of(killed, out)
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.communicate(timeout=60)
    assert staging.is_dir() and not out.exists()

    proc = export(ckpt_path, out, env)
    assert f"Exported {ckpt_path} to {out}" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
    assert proc.stdout.count(f"by writers that died: {staging.name}") == 1


def test_export_over_the_run_s_checkpoints_checkpoint_data_or_a_project_is_refused_naming_both(last_checkpoint, tmp_path, star_data_dir):
    env, ckpt_path = last_checkpoint
    checkpoints = ckpt_path.parent
    before = sorted((p.name, p.stat().st_size) for p in checkpoints.iterdir())
    project = tmp_path / "project"  # `output_dir=$PWD` from inside a git checkout
    (project / ".git").mkdir(parents=True)
    (project / "train.py").write_text("keep me")
    for output_dir, refusal in [
        (checkpoints, f"output_dir {checkpoints} contains the checkpoint {ckpt_path} being exported"),
        (ckpt_path, f"output_dir {ckpt_path} is the checkpoint {ckpt_path} being exported"),
        (star_data_dir, f"output_dir {star_data_dir} is the data cache directory {star_data_dir}"),
        (project, f"output_dir {project} is not an earlier export (it holds .git, which an export does not write)"),
    ]:
        proc = export(ckpt_path, output_dir, env, "+export_hf.overwrite=true", check=False)
        assert proc.returncode != 0 and refusal in proc.stdout, proc.stdout[-3000:]
    assert sorted((p.name, p.stat().st_size) for p in checkpoints.iterdir()) == before
    assert any(star_data_dir.iterdir())
    assert sorted(p.name for p in project.iterdir()) == [".git", "train.py"]


def test_export_of_a_real_run_has_its_card_generation_config_and_runs_its_own_example(last_checkpoint, tmp_path):
    env, ckpt_path = last_checkpoint
    out = tmp_path / "hf_model"
    export(ckpt_path, out, env)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    assert "| steps | 4 of trainer.max_steps=4 (epoch 0) |" in card
    assert "| `val/lm/accumulated_loss` (mode min) |" in card
    assert "`<prompt> [BOS] <continuation> [EOS]`" in card
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"], generation["bos_token_id"]) == (3, 0, 4)
    assert generation["max_length"] == 36  # the run's predictor.max_length (= block_size)
    example = re.search(r"```python\n(.*?)```", card, flags=re.DOTALL).group(1)
    printed = run_without_arlm(example, [], tmp_path).stdout.strip()
    reference = xlm_model_from(torch.load(ckpt_path, map_location="cpu", weights_only=True), use_ema=True)
    star_tokenizer = SimpleSpaceTokenizer.for_numbers(20)
    prompt = star_tokenizer.encode("0 1 2 [BOS]", add_special_tokens=False)
    expected = greedy_reference(reference, [prompt], 36 - len(prompt), star_tokenizer.eos_token_id, star_tokenizer.pad_token_id)[0]
    words = [star_tokenizer.convert_ids_to_tokens(i) for i in expected if i not in star_tokenizer.all_special_ids]
    assert printed == " ".join(words)


def test_arlow_export_of_a_real_run_loads_without_arlm_through_its_own_code(last_checkpoint, tmp_path):
    env, ckpt_path = last_checkpoint
    out = tmp_path / "hf"
    export(ckpt_path, out, env, "+export_hf.architecture=arlow")
    reference = xlm_model_from(torch.load(ckpt_path, map_location="cpu", weights_only=True), use_ema=True)
    ids = torch.randint(7, 27, (2, 20), generator=torch.Generator().manual_seed(0))
    result = load_without_arlm(out, tmp_path / "child", ids, ["1 2 3 [BOS]", "7 [BOS]"], new_tokens=4, trust_remote_code=True)
    assert result["model_class"] == "ArlowForCausalLM"
    with torch.no_grad():
        assert torch.equal(result["logits"], reference(ids))
    assert result["pipeline_full_texts"] == [p + t for p, t in zip(["1 2 3 [BOS]", "7 [BOS]"], result["pipeline_texts"])]
