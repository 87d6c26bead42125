"""The network: one causal rotary decoder and what drives it, in plain torch.

:mod:`~arlm.network.config` (the typed ``DecoderConfig``), :mod:`~arlm.network.decoder` (the
``DecoderStack`` both faces hold as ``.model``), :mod:`~arlm.network.attention` (positions, masks
and the one attention dispatch), :mod:`~arlm.network.rope`, :mod:`~arlm.network.kv_cache`,
:mod:`~arlm.network.sampling` (the one sampler), :mod:`~arlm.network.inputs` (the decoder's input
checks), :mod:`~arlm.network.memory_budget` (what a size costs in memory, checked where it is
allocated) and :mod:`~arlm.network.value_checks` (what every argument check counts as an integer or
a number). Nothing here imports xLM, Lightning or Hydra; the xLM face (``arlm.model_arlm`` and its
siblings) and the Hugging Face face (``arlm.hf``) build on it.
"""
