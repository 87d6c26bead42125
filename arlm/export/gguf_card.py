"""The model card (``README.md``) of a GGUF export: what the file is and how to run it.

The prompt format, the generation limits and the training and evaluation sections are the
Hugging Face card's (:mod:`arlm.export.model_card`); the summary and the running recipes are GGUF's:
llama.cpp through ``llama-cpp-python`` (a text prompt, special tokens read as tokens, see
:func:`arlm.export.gguf.gguf_vocabulary`) and transformers' GGUF reader.
"""

import yaml

from arlm.export.card_text import inline_code, is_hub_tag, plain_text
from arlm.export.model_card import CardFacts, evaluation_section, generation_settings, prompt_format, training_section

DTYPE_WORDS = {
    "f32": "float32",
    "f16": "float16 matrices, float32 norms",
    "q8_0": "8-bit (Q8_0) matrices whose rows are whole 32-value blocks, float16 for the others, float32 norms",
}


def gguf_card(facts: CardFacts, file_name: str, dtype: str) -> str:
    """The ``README.md`` of a GGUF export directory holding ``file_name``."""
    tags = facts.contents.hyper_parameters.get("tags") or {}
    card_tags = ["arlm", "xlm", "causal-lm", "llama", "gguf", "llama.cpp", *([tags["dataset"]] if is_hub_tag(tags.get("dataset")) else [])]
    front = yaml.safe_dump({"pipeline_tag": "text-generation", "tags": card_tags}, sort_keys=False)
    title = facts.contents.hyper_parameters.get("job_name") or facts.contents.path.stem
    weights = "the EMA (exponential moving average) weights" if facts.used_ema else "the raw trained weights"
    summary = (
        "A left-to-right causal Transformer language model with rotary position embeddings, trained "
        f"with arlm's xLM plugin and exported by `xlm job_type=export_hf +export_hf.format=gguf` as "
        f"`{file_name}`: llama.cpp's `llama` architecture, {DTYPE_WORDS[dtype]}; {weights} of "
        f"{inline_code(facts.contents.path.name)}. Beside it, the transformers tokenizer files and "
        "`generation_config.json`.\n"
    )
    return "\n".join(
        [f"---\n{front}---\n", f"# {plain_text(title)}\n", summary, _running_section(facts, file_name),
         training_section(facts), evaluation_section(facts)]
    )


def _running_section(facts: CardFacts, file_name: str) -> str:
    fmt = prompt_format(facts.contents, facts.tokenizer)
    settings = generation_settings(facts.contents, facts.tokenizer)
    context = facts.model.config.max_position_embeddings
    limit = (
        f"max_tokens={settings['max_new_tokens']}" if "max_new_tokens" in settings
        else f"max_tokens={settings.get('max_length', context)} - len(ids)"
    )
    layout = (
        f"Give the model `<prompt> {fmt.separator}`; it continues until `{fmt.eos}`."
        if fmt.separator
        else "Give the model the beginning of a text; it continues it."
    )
    return (
        "## Running it\n\n"
        f"{layout} The model was built for {context} tokens, prompt included.\n\n"
        "**llama.cpp** through `llama-cpp-python` (greedy, as the run's predictor):\n\n"
        "```python\n"
        "from llama_cpp import Llama\n\n"
        f"llm = Llama(model_path={f'{facts.directory_name}/{file_name}'!r}, n_ctx={context}, verbose=False)\n"
        f"prompt = {fmt.example!r}\n"
        "ids = llm.tokenize(prompt.encode(), special=True)  # the run's length limit counts the prompt\n"
        f"out = llm.create_completion(prompt, {limit}, temperature=0.0)\n"
        "print(out[\"choices\"][0][\"text\"].strip())\n"
        "```\n\n"
        "The file asks llama.cpp to add no BOS or EOS token, so a text prompt is tokenized in the "
        "training layout; special tokens written in the text (such as "
        f"`{fmt.separator or fmt.eos}`) are read as tokens by `create_completion`, and by "
        "`Llama.tokenize` with `special=True`. Words are separated by spaces; a word outside the "
        "vocabulary is cut into a known prefix and unknown tokens.\n\n"
        "**transformers** (with the `gguf` package installed; the tokenizer comes from this directory's "
        "files):\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig\n\n"
        f"model = AutoModelForCausalLM.from_pretrained({facts.directory_name!r}, gguf_file={file_name!r})\n"
        f"model.generation_config = GenerationConfig.from_pretrained({facts.directory_name!r})  # not read with gguf_file on transformers 5\n"
        f"tokenizer = AutoTokenizer.from_pretrained({facts.directory_name!r})\n"
        f"batch = tokenizer([{fmt.example!r}], return_tensors=\"pt\", padding=True)\n"
        "out = model.generate(**batch)  # the defaults of generation_config.json\n"
        "print(tokenizer.batch_decode(out[:, batch[\"input_ids\"].shape[1]:], skip_special_tokens=True)[0].strip())\n"
        "```\n"
    )
