"""What an export says about itself: the model card (``README.md``) and ``generate()``'s defaults.

Everything comes from the checkpoint (:class:`~arlm.checkpoints.read.Checkpoint`): the
composed config xlm-core saves as ``hyper_parameters`` (experiment tags, data, tokenizer,
optimizer, predictor), the step it was written at, and the scores its ``ModelCheckpoint``
callbacks kept. Model-only weights record none of that; their card says so.

* :func:`prompt_format`: how rows were laid out in training. Seq2seq experiments (an
  ``ARLMSeq2Seq*Collator`` in the data config) trained on ``<prompt> [BOS] <continuation> [EOS]``,
  so a prompt is ``<prompt> [BOS]`` and the continuation runs until ``[EOS]``; language-model
  experiments continue plain text.
* :func:`generation_settings`: ``generation_config.json`` values that make ``generate()`` stop
  where ``xlm job_type=generate_arlm`` does: EOS, pad and BOS ids; the predictor's length limit
  (``max_length``, prompt included, when it binds before ``max_steps`` new tokens, else
  ``max_new_tokens = max_steps``); its sampling method.
* :func:`model_card`: the card, with the front matter the Hub reads.
"""

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from arlm.checkpoints.read import Checkpoint
from arlm.export.card_text import inline_code, is_hub_tag, plain_text
from arlm.network.value_checks import is_int

SEQ2SEQ_COLLATORS = ("arlm.datamodule_arlm.ARLMSeq2SeqCollator", "arlm.datamodule_arlm.ARLMSeq2SeqPredCollator")
EXAMPLE_WORDS = 3
CALLBACK_MODE = re.compile(r"'mode': '(min|max)'")


@dataclass(frozen=True)
class PromptFormat:
    """``separator`` goes between prompt and continuation (seq2seq with a BOS token), ``eos``
    ends a continuation; ``example`` is a prompt in that format made of vocabulary words."""

    seq2seq: bool
    separator: Optional[str]
    eos: Optional[str]
    example: str


@dataclass(frozen=True)
class MonitoredScore:
    """A ``ModelCheckpoint`` callback's record: the metric it monitors, whether lower or higher is
    better, the best value seen and the value at its last validation before this checkpoint."""

    monitor: str
    mode: str
    best: float
    current: Optional[float]


@dataclass(frozen=True)
class CardFacts:
    """What the card describes: the checkpoint read, whether its EMA weights were exported, the
    exported model and tokenizer, how it loads (``remote_code``: an Arlow bundle with ``auto_map``),
    and the export directory's name (the examples load it from its parent directory)."""

    contents: Checkpoint
    used_ema: bool
    model: PreTrainedModel
    tokenizer: Optional[PreTrainedTokenizerBase]
    remote_code: bool
    directory_name: str


def prompt_format(contents: Checkpoint, tokenizer: Optional[PreTrainedTokenizerBase]) -> PromptFormat:
    """The training layout of ``contents``' run, with the special tokens of ``tokenizer``."""
    seq2seq = any(target in SEQ2SEQ_COLLATORS for target in _targets(contents.hyper_parameters.get("datamodule")))
    bos = None if tokenizer is None else tokenizer.bos_token
    eos = None if tokenizer is None else tokenizer.eos_token
    separator = bos if seq2seq else None
    words = " ".join(_example_words(tokenizer))
    example = f"{words} {separator}" if separator else words
    return PromptFormat(seq2seq=seq2seq, separator=separator, eos=eos, example=example)


def generation_settings(contents: Checkpoint, tokenizer: Optional[PreTrainedTokenizerBase]) -> Dict[str, Any]:
    """``GenerationConfig`` keyword arguments for ``generate()`` to decode as the run's predictor."""
    settings: Dict[str, Any] = {}
    if tokenizer is not None:
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tokenizer, name) is not None:
                settings[name] = getattr(tokenizer, name)
    predictor = contents.hyper_parameters.get("predictor") or {}
    max_steps, max_length = _positive_int(predictor.get("max_steps")), _positive_int(predictor.get("max_length"))
    if max_length is not None and (max_steps is None or max_steps >= max_length - 1):
        settings["max_length"] = max_length  # the predictor stops at max_length - prompt width
    elif max_steps is not None:
        settings["max_new_tokens"] = max_steps
    method = predictor.get("sampling_method")
    if method == "greedy" or (method == "sample_top_k" and predictor.get("top") == 1):
        settings["do_sample"] = False
    elif method in ("sample", "sample_top_k", "sample_top_p"):
        settings.update(do_sample=True, temperature=predictor.get("temperature", 1.0), top_k=0, top_p=1.0)
        if method == "sample_top_k":
            settings["top_k"] = predictor.get("top")
        if method == "sample_top_p":
            settings["top_p"] = predictor.get("p")
    return settings


def _count(value: Any) -> str:
    """An integer as digits, anything else a crafted checkpoint may put there as a code span."""
    return str(value) if is_int(value) else inline_code(value)


def _positive_int(value: Any) -> Optional[int]:
    return int(value) if is_int(value) and value > 0 else None


def monitored_scores(contents: Checkpoint) -> List[MonitoredScore]:
    """The scores of the checkpoint's ``ModelCheckpoint`` callbacks that monitor a metric."""
    scores = []
    for key, state in (contents.get("callbacks") or {}).items():
        if not isinstance(state, Mapping) or not state.get("monitor") or state.get("best_model_score") is None:
            continue
        mode = CALLBACK_MODE.search(str(key))  # Lightning keys a callback's state by its settings
        current = None if state.get("current_score") is None else float(state["current_score"])
        scores.append(MonitoredScore(str(state["monitor"]), mode.group(1) if mode else "unrecorded", float(state["best_model_score"]), current))
    return scores


def model_card(facts: CardFacts) -> str:
    """The ``README.md`` of the export directory."""
    hparams = facts.contents.hyper_parameters
    tags = hparams.get("tags") or {}
    model_type = getattr(facts.model.config, "model_type", "")
    card_tags = ["arlm", "xlm", "causal-lm", model_type, *([tags["dataset"]] if is_hub_tag(tags.get("dataset")) else [])]
    if facts.remote_code:
        card_tags.append("custom_code")
    front = yaml.safe_dump(
        {"library_name": "transformers", "pipeline_tag": "text-generation", "tags": card_tags},
        sort_keys=False,
    )
    title = hparams.get("job_name") or facts.contents.path.stem
    sections = [
        f"---\n{front}---\n",
        f"# {plain_text(title)}\n",
        _summary(facts),
        _prompt_section(facts),
        _loading_section(facts),
        training_section(facts),
        evaluation_section(facts),
    ]
    return "\n".join(sections)


def _summary(facts: CardFacts) -> str:
    name = type(facts.model).__name__
    how = (
        "the Arlow architecture of [arlm](https://pypi.org/project/arlm/), with its code in this "
        "directory (`trust_remote_code=True`)"
        if facts.remote_code
        else "a class that ships in transformers: it loads without arlm"
    )
    return (
        f"A left-to-right causal Transformer language model with rotary position embeddings, "
        f"trained with arlm's xLM plugin and exported by `xlm job_type=export_hf` as `{name}`, "
        f"{how}. Weights: {'the EMA (exponential moving average) weights' if facts.used_ema else 'the raw trained weights'} "
        f"of {inline_code(facts.contents.path.name)}, float32.\n"
    )


def _prompt_section(facts: CardFacts) -> str:
    fmt = prompt_format(facts.contents, facts.tokenizer)
    settings = generation_settings(facts.contents, facts.tokenizer)
    if facts.tokenizer is None:
        return "## Prompt format\n\nThe export has no tokenizer; give the model token ids as in training.\n"
    if fmt.seq2seq:
        layout = (
            f"Trained on prompt -> continuation rows laid out `<prompt> {fmt.separator} <continuation> {fmt.eos}` "
            f"(loss on the continuation and `{fmt.eos}` only). Give the model `<prompt> {fmt.separator}`: "
            f"the prompt text as in the training data, then `{fmt.separator}`; it continues until `{fmt.eos}`."
            if fmt.separator
            else f"Trained on `<prompt> <continuation> {fmt.eos}` rows (the tokenizer has no BOS token, "
            f"so nothing separates them). Give the model the prompt; it continues until `{fmt.eos}`."
        )
    else:
        layout = "Trained as a language model on plain text: give it the beginning of a text, it continues it."
    stop = [f"`generate()` stops at `{fmt.eos}` (id {settings.get('eos_token_id')})" if fmt.eos else ""]
    if "max_new_tokens" in settings:
        stop.append(f"after at most {settings['max_new_tokens']} new tokens (the run's predictor `max_steps`)")
    if "max_length" in settings:
        stop.append(
            f"or when the row holds {settings['max_length']} tokens, prompt included (the run's "
            "predictor `max_length`, also the longest sequence the model was built for)"
        )
    decoding = "greedy" if settings.get("do_sample") is False else ("sampled" if settings.get("do_sample") else "")
    defaults = f"; {decoding} decoding as the run's predictor" if decoding else ""
    return (
        "## Prompt format\n\n"
        f"{layout} By default (`generation_config.json`) {' '.join(s for s in stop if s)}{defaults}.\n\n"
        "Text: the tokenizer decodes every token as a space followed by the token, so a decoded "
        "text starts with one space (as GPT-2's continuations do), a continuation appended to its "
        "prompt reads right, and `.strip()` gives the bare words.\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"model = AutoModelForCausalLM.from_pretrained({facts.directory_name!r}"
        f"{', trust_remote_code=True' if facts.remote_code else ''})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({facts.directory_name!r})  # pads on the left\n"
        f"batch = tokenizer([{fmt.example!r}], return_tensors=\"pt\", padding=True)\n"
        "out = model.generate(**batch)  # the defaults of generation_config.json\n"
        "new = out[:, batch[\"input_ids\"].shape[1]:]\n"
        "print(tokenizer.batch_decode(new, skip_special_tokens=True)[0].strip())\n"
        "```\n\n"
        "`pipeline(\"text-generation\")` applies transformers' own defaults for that task "
        "(sampling at temperature 0.7, up to 256 new tokens) unless it is given the model's: "
        "`generator(prompt, generation_config=model.generation_config)` decodes as above.\n"
    )


def _loading_section(facts: CardFacts) -> str:
    if facts.remote_code:
        ways = (
            "- without arlm: `AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` "
            "runs the modeling code in this directory (`modeling_arlow.py` and the files it imports; "
            "needs only torch and transformers). Without `trust_remote_code=True` transformers "
            "refuses the directory.\n"
            "- with arlm (`pip install arlm`): `import arlm` registers Arlow with the Auto classes; "
            "no `trust_remote_code` needed.\n"
        )
    else:
        ways = (
            f"- without arlm: `AutoModelForCausalLM.from_pretrained(path)` gives "
            f"`{type(facts.model).__name__}`, in any transformers from 4.56 on; so do tools that "
            "read that architecture.\n"
            "- with arlm: the same; `import arlm` also registers Arlow, for Arlow exports.\n"
        )
    peft = (
        "- PEFT: `LoraConfig(task_type=\"CAUSAL_LM\")` finds its default target modules "
        "(`q_proj`, `v_proj`) once arlm or this directory's code is imported.\n"
        if facts.remote_code
        else ""
    )
    return f"## Loading\n\n{ways}{peft}"


def training_section(facts: CardFacts) -> str:
    contents, hparams = facts.contents, facts.contents.hyper_parameters
    if not hparams:
        return (
            "## Training\n\nExported from model-only weights: the file records no training "
            "configuration, steps or scores.\n"
        )
    rows = list(_training_rows(contents, facts.used_ema))
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return (
        "## Training\n\nFrom the composed config xlm-core saved in the checkpoint "
        f"(`hyper_parameters`):\n\n| setting | value |\n|---|---|\n{table}\n"
    )


def _training_rows(contents: Checkpoint, used_ema: bool) -> Iterator[tuple]:
    hparams = contents.hyper_parameters
    tags = hparams.get("tags") or {}
    experiment = ", ".join(f"{k}={tags[k]}" for k in ("dataset", "model_type", "model") if tags.get(k))
    if experiment:
        yield "experiment tags", inline_code(experiment)
    trainer = hparams.get("trainer") or {}
    if contents.get("global_step") is not None:
        of = f" of trainer.max_steps={_count(trainer['max_steps'])}" if "max_steps" in trainer else ""
        yield "steps", f"{_count(contents.get('global_step'))}{of} (epoch {_count(contents.get('epoch'))})"
    for key in ("global_batch_size", "block_size", "seed"):
        if key in hparams:
            yield key, inline_code(hparams[key])
    sources, sizes = _data_sources(hparams.get("datamodule"))
    if sources:
        yield "data", "; ".join(sources)
    for split_sizes in sizes:
        yield "data generated locally, rows per split", inline_code(split_sizes)
    tokenizer = (hparams.get("global_components") or {}).get("tokenizer")
    if isinstance(tokenizer, Mapping):
        yield "tokenizer", _call(tokenizer)
    for key in ("optimizer", "lr_scheduler"):
        if isinstance(hparams.get(key), Mapping):
            yield key, _call(hparams[key])
    ema = (hparams.get("callbacks") or {}).get("ema")
    if isinstance(ema, Mapping):
        yield "EMA", f"decay {inline_code(ema.get('decay'))}; exported: {'EMA' if used_ema else 'raw'} weights"
    if isinstance(contents.model_config, Mapping):
        yield "model", _call(contents.model_config)


def evaluation_section(facts: CardFacts) -> str:
    scores = monitored_scores(facts.contents)
    if not scores:
        return "## Evaluation\n\nThe checkpoint records no validation score.\n"
    rows = "\n".join(
        f"| {inline_code(s.monitor)} (mode {s.mode}) | {s.best:.6g} | {'' if s.current is None else f'{s.current:.6g}'} |"
        for s in scores
    )
    return (
        "## Evaluation\n\nThe scores the run's `ModelCheckpoint` callback kept in "
        f"{inline_code(facts.contents.path.name)} (validation during training; test metrics are logged, not "
        "stored in checkpoints):\n\n"
        f"| monitored metric | best | at the last validation |\n|---|---|---|\n{rows}\n"
    )


def _example_words(tokenizer: Optional[PreTrainedTokenizerBase]) -> List[str]:
    if tokenizer is None:
        return []
    specials = set(tokenizer.all_special_ids)
    regular = [i for _, i in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]) if i not in specials]
    return [tokenizer.decode([i]).strip() for i in regular[:EXAMPLE_WORDS]]


def _targets(node: Any) -> Iterator[str]:
    """Every ``_target_`` string in a nested config."""
    if isinstance(node, Mapping):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _targets(value)


def _data_sources(datamodule: Any) -> Tuple[List[str], List[dict]]:
    """``stage/name: full_name`` of each dataset manager, and the distinct ``split_sizes`` of the
    managers that generate their data."""
    managers = (datamodule or {}).get("dataset_managers") if isinstance(datamodule, Mapping) else None
    sources, sizes = [], []
    for stage, named in (managers or {}).items():
        for name, manager in (named or {}).items():
            if isinstance(manager, Mapping) and manager.get("full_name"):
                sources.append(f"{plain_text(f'{stage}/{name}')} {inline_code(manager['full_name'])}")
                split_sizes = manager.get("split_sizes")
                if isinstance(split_sizes, Mapping) and dict(split_sizes) not in sizes:
                    sizes.append(dict(split_sizes))
    return sources, sizes


def _call(node: Mapping[str, Any]) -> str:
    """``target(key=value, ...)`` of a config node (``name(...)`` without a ``_target_``), nested
    nodes and unresolved interpolations left out."""
    label = "_target_" if "_target_" in node else "name"
    args = ", ".join(
        f"{k}={v!r}"
        for k, v in node.items()
        if not k.startswith("_") and k != label and not isinstance(v, (Mapping, list))
        and not (isinstance(v, str) and v.startswith("${"))
    )
    return inline_code(f"{node.get(label, '')}({args})")
