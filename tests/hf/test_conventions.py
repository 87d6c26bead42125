"""Hugging Face conventions of the Arlow face, checked against ``LlamaForCausalLM`` of the same
weights where one exists: attention implementations, per-layer outputs, static cache, meta-device
loading. Runs under transformers 4 and 5 (no xlm-core needed)."""

import socket
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, CompileConfig, LlamaForCausalLM, StaticCache
from transformers.utils import is_flash_attn_2_available

from arlm import ArlowForCausalLM
from arlm.network.decoder import SelfAttention
from arlm.network.rope import RotaryEmbedding

from tests.hf.test_modeling import left_padded_batch, llama_twin, random_ids, tiny_config, tiny_model


def backends(model: ArlowForCausalLM) -> set:
    return {m.backend for m in model.modules() if isinstance(m, SelfAttention)}


def eager_llama(arlow: ArlowForCausalLM) -> LlamaForCausalLM:
    llama = llama_twin(arlow)
    llama.set_attn_implementation("eager")
    return llama


@pytest.mark.parametrize("implementation, backend", [("eager", "eager"), ("sdpa", "sdpa")])
def test_attn_implementation_is_honoured_and_gives_the_same_logits(implementation, backend):
    torch.manual_seed(0)
    model = ArlowForCausalLM(tiny_config(attn_implementation=implementation)).eval()
    assert backends(model) == {backend}
    reference = tiny_model()
    ids, mask = left_padded_batch()
    with torch.no_grad():
        got, want = model(ids, attention_mask=mask).logits, reference(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-5)


def _flash_by_config(tmp_path):
    torch.manual_seed(0)
    return ArlowForCausalLM(tiny_config(attn_implementation="flash_attention_2"))


def _flash_by_from_pretrained(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    return ArlowForCausalLM.from_pretrained(tmp_path, attn_implementation="flash_attention_2")


def _flash_by_auto_from_config(tmp_path):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(), attn_implementation="flash_attention_2")


def _flash_by_set_attn_implementation(tmp_path):
    model = tiny_model()
    model.set_attn_implementation("flash_attention_2")
    return model


@pytest.mark.skipif(is_flash_attn_2_available(), reason="flash_attn and CUDA are available here")
@pytest.mark.parametrize(
    "build",
    [_flash_by_config, _flash_by_from_pretrained, _flash_by_auto_from_config, _flash_by_set_attn_implementation],
)
def test_flash_attention_without_the_package_warns_once_and_runs_sdpa(build, tmp_path, monkeypatch):
    """Without flash_attn (or CUDA) every way of asking for it warns once and runs SDPA, with no
    network attempt (transformers 5 would otherwise fetch a flash kernel from the Hub)."""

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build(tmp_path).eval()
    flash_warnings = [w for w in caught if "flash_attn" in str(w.message)]
    assert len(flash_warnings) == 1, [str(w.message) for w in caught]
    assert backends(model) == {"sdpa"} and model.config._attn_implementation == "sdpa"
    ids, mask = left_padded_batch()
    with torch.no_grad():
        got, want = model(ids, attention_mask=mask).logits, tiny_model()(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-5)


def test_set_attn_implementation_switches_every_layer():
    model = tiny_model()
    ids = random_ids()
    with torch.no_grad():
        sdpa = model(ids).logits
        model.set_attn_implementation("eager")
        assert backends(model) == {"eager"} and model.config._attn_implementation == "eager"
        eager = model(ids, output_attentions=False).logits
        model.set_attn_implementation("sdpa")
        assert backends(model) == {"sdpa"}
    torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=1e-5)


def test_hidden_states_and_attentions_equal_llamas():
    arlow = tiny_model(cross_attention=False)
    llama = eager_llama(arlow)
    ids, mask = left_padded_batch()
    real = mask.bool()
    with torch.no_grad():
        ours = arlow(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        theirs = llama(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == arlow.config.num_hidden_layers + 1
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)
    assert len(ours.attentions) == arlow.config.num_hidden_layers
    for a, b in zip(ours.attentions, theirs.attentions):
        assert a.shape == (3, 4, 10, 10)
        rows_a, rows_b = a.transpose(1, 2)[real], b.transpose(1, 2)[real]  # (real queries, H, keys)
        torch.testing.assert_close(rows_a, rows_b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rows_a.sum(-1), torch.ones_like(rows_a.sum(-1)))


def test_output_flags_set_on_the_config_are_honoured():
    model = ArlowForCausalLM(tiny_config(output_hidden_states=True, output_attentions=True)).eval()
    with torch.no_grad():
        out = model(random_ids())
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    with torch.no_grad():
        plain = model(random_ids(), output_hidden_states=False, output_attentions=False)
    assert plain.hidden_states is None and plain.attentions is None


def test_generate_returns_hidden_states_and_attentions_like_llama():
    arlow = tiny_model(cross_attention=False)
    llama = eager_llama(arlow)
    ids, mask = left_padded_batch()
    kwargs = dict(
        attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0,
        return_dict_in_generate=True, output_hidden_states=True, output_attentions=True,
    )
    with torch.no_grad():
        ours, theirs = arlow.generate(ids, **kwargs), llama.generate(ids, **kwargs)
    assert torch.equal(ours.sequences, theirs.sequences)
    assert len(ours.hidden_states) == len(ours.attentions) == 4
    for step_ours, step_theirs in zip(ours.attentions, theirs.attentions):
        assert [a.shape for a in step_ours] == [a.shape for a in step_theirs]
        last_ours, last_theirs = step_ours[-1][..., -1, :], step_theirs[-1][..., -1, :]
        torch.testing.assert_close(last_ours, last_theirs, atol=1e-5, rtol=1e-5)
    for step_ours, step_theirs in zip(ours.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(step_ours[-1][:, -1], step_theirs[-1][:, -1], atol=1e-5, rtol=1e-5)


def test_static_cache_forward_equals_dynamic():
    model = tiny_model()
    ids = random_ids(2, 6)
    static = StaticCache(config=model.config, max_cache_len=16)
    with torch.no_grad():
        full = model(ids).logits
        prefill = model(ids[:, :4], past_key_values=static, use_cache=True).logits
        step = model(ids[:, 4:], past_key_values=static, use_cache=True).logits
    torch.testing.assert_close(torch.cat([prefill, step], 1), full, atol=1e-5, rtol=1e-5)


def test_static_cache_generate_matches_dynamic_and_reuses_its_compiled_forward():
    model = tiny_model()
    ids, mask = left_padded_batch()
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    compile_config = CompileConfig(backend="eager", fullgraph=True, dynamic=False)
    compile_config._compile_all_devices = True  # transformers auto-compiles on CUDA only
    torch._dynamo.reset()
    frames = torch._dynamo.utils.counters["stats"]
    before = frames["unique_graphs"]
    with torch.no_grad():
        dynamic = model.generate(ids, **kwargs)
        static = model.generate(ids, cache_implementation="static", compile_config=compile_config, **kwargs)
        again = model.generate(ids, cache_implementation="static", compile_config=compile_config, **kwargs)
    assert torch.equal(static, dynamic) and torch.equal(again, dynamic)
    compiled_graphs = frames["unique_graphs"] - before
    assert 1 <= compiled_graphs <= 2, f"decode steps compiled {compiled_graphs} graphs, expected reuse"


@pytest.mark.parametrize(
    "load_kwargs", [{}, dict(low_cpu_mem_usage=True), dict(device_map="cpu")], ids=["default", "low_cpu_mem", "device_map"]
)
def test_rope_tables_are_recomputed_after_meta_device_loading(tmp_path, load_kwargs):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = ArlowForCausalLM.from_pretrained(tmp_path, **load_kwargs).eval()
    fresh = RotaryEmbedding(model.config.head_dim, model.config.max_position_embeddings, model.config.rope_theta)
    assert torch.equal(loaded.model.rotary_emb.cos, fresh.cos)
    assert torch.equal(loaded.model.rotary_emb.sin, fresh.sin)
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
