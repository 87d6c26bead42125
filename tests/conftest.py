"""Shared fixtures: xlm-core's SimpleSpaceTokenizer (ids: [PAD]=0 [CLS]=1 [MASK]=2 [EOS]=3
[BOS]=4 [SEP]=5 [UNK]=6, words "0".."49" from 7; 57 in all) and a tiny model.

Importable without xlm-core: the Hugging Face tests also run in a transformers-5 environment
where arlm is installed without it (``.ci/run``); fixtures that need it skip there.
"""

import os

import pytest
import torch

from arlm.model_arlm import RotaryTransformerARLMModel

VOCAB_SIZE = 57
TINY_MODEL_KWARGS = dict(
    num_embeddings=VOCAB_SIZE, d_model=32, num_layers=1, nhead=2, dropout=0.0,
    rotary_emb_dim=16, max_length=64,
)


@pytest.fixture(scope="session")
def simple_tokenizer():
    SimpleSpaceTokenizer = pytest.importorskip("xlm.datamodule").SimpleSpaceTokenizer
    return SimpleSpaceTokenizer(vocab=[str(i) for i in range(50)])


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return RotaryTransformerARLMModel(**TINY_MODEL_KWARGS).eval()


@pytest.fixture
def sdpa_calls(monkeypatch):
    """The ``(attn_mask, is_causal)`` of every call the package makes to a kernel that takes a
    mask-free causal fast path while the test runs: SDPA, and the short-sequence kernel
    (``attend_short_causal``, recorded as ``(None, True)``)."""
    import arlm.network.attention

    calls = []
    sdpa = arlm.network.attention.F.scaled_dot_product_attention
    short_causal = arlm.network.attention.attend_short_causal

    def recording_sdpa(*args, **kwargs):
        calls.append((kwargs["attn_mask"], kwargs["is_causal"]))
        return sdpa(*args, **kwargs)

    def recording_short_causal(*args):
        calls.append((None, True))
        return short_causal(*args)

    monkeypatch.setattr(arlm.network.attention.F, "scaled_dot_product_attention", recording_sdpa)
    monkeypatch.setattr(arlm.network.attention, "attend_short_causal", recording_short_causal)
    return calls


def pytest_collection_modifyitems(config, items):
    """Tests marked ``multiprocess`` run only when ``ARLM_MULTIPROCESS_TESTS=1`` (minutes of several
    processes on a 2-core machine; CI leaves them out, docs/testing.md)."""
    if os.environ.get("ARLM_MULTIPROCESS_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="several processes at once: set ARLM_MULTIPROCESS_TESTS=1 to run it")
    for item in items:
        if "multiprocess" in item.keywords:
            item.add_marker(skip)
