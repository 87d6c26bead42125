"""Exporting a trained checkpoint for the Hugging Face ecosystem and llama.cpp (``xlm job_type=export_hf``).

:mod:`~arlm.export.exporter` is the export (:func:`~arlm.export.exporter.export_checkpoint_to_hf`);
:mod:`~arlm.export.checkpoint_model` builds the network a checkpoint records, with its weights;
:mod:`~arlm.export.native` rewrites it as ``LlamaForCausalLM`` / ``GPTNeoXForCausalLM`` when one
expresses it exactly; :mod:`~arlm.export.remote_code` writes the code an Arlow export carries;
:mod:`~arlm.export.tokenizer` converts the tokenizer; :mod:`~arlm.export.model_card` writes the
card and the generation defaults, with every value a run gives it escaped by
:mod:`~arlm.export.card_text`; :mod:`~arlm.export.paths` says where an export may not go.
``format=gguf``: :mod:`~arlm.export.gguf_export` writes a Llama-shaped network as one GGUF file
for llama.cpp (:mod:`~arlm.export.gguf`: the file, :mod:`~arlm.export.gguf_card`: its card).
Nothing here needs xlm-core or Hydra (GGUF needs the ``gguf`` package).
"""
