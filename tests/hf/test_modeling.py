"""ArlowConfig / ArlowModel / ArlowForCausalLM: HF round trips, Llama parity, generate(), errors."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
)

from arlm import ArlowConfig, ArlowForCausalLM, ArlowModel

VOCAB = 97
TINY = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=4,
    num_key_value_heads=2, num_hidden_layers=2, max_position_embeddings=64,
    attention_dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)


def tiny_config(**overrides) -> ArlowConfig:
    return ArlowConfig(**{**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides) -> ArlowForCausalLM:
    torch.manual_seed(seed)
    return ArlowForCausalLM(tiny_config(**overrides)).eval()


def random_ids(batch: int = 2, seq: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def left_padded_batch():
    ids = random_ids(3, 10)
    mask = torch.ones_like(ids)
    for row, pad in enumerate((0, 3, 6)):
        ids[row, :pad] = 0
        mask[row, :pad] = 0
    return ids, mask


def llama_twin(arlow: ArlowForCausalLM) -> LlamaForCausalLM:
    c = arlow.config
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
            max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
            rope_theta=c.rope_theta, tie_word_embeddings=c.tie_word_embeddings,
            pad_token_id=c.pad_token_id, bos_token_id=1, eos_token_id=2,
            attn_implementation="sdpa",
        )
    )
    llama.load_state_dict(arlow.state_dict(), strict=True)
    return llama.eval()


def test_seed_defaults_and_model_type():
    config = ArlowConfig()
    assert config.model_type == "arlowgpt"
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (131072, 2304, 9216)
    assert (config.num_attention_heads, config.num_key_value_heads, config.num_hidden_layers) == (12, 12, 28)
    assert config.max_position_embeddings == 2048 and config.rope_theta == 100000.0
    assert config.attention_dropout == 0.1 and config.rms_norm_eps == 1e-6
    assert config.hidden_act == "silu" and config.tie_word_embeddings and config.use_cache
    assert config.cross_attention and config.use_cross_attention and config.pad_token_id is None


def test_llama_names_and_llama_shaped_state_dict():
    model = tiny_model(cross_attention=False)
    keys = set(model.state_dict())
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
            "model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight"} <= keys
    assert keys == set(llama_twin(model).state_dict())


def test_llama_parity_logits_fp32():
    arlow = tiny_model(cross_attention=False, tie_word_embeddings=False)
    llama = llama_twin(arlow)
    ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(arlow(ids).logits, llama(ids).logits, atol=1e-5, rtol=1e-5)


def test_llama_parity_left_padded_and_greedy_generate():
    arlow = tiny_model(cross_attention=False)
    llama = llama_twin(arlow)
    ids, mask = left_padded_batch()
    with torch.no_grad():
        a, b = arlow(ids, attention_mask=mask).logits, llama(ids, attention_mask=mask).logits
        real = mask.bool()
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)
        kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert torch.equal(arlow.generate(ids, **kwargs), llama.generate(ids, **kwargs))


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_from_pretrained_round_trip(tmp_path, tie):
    model = tiny_model(tie_word_embeddings=tie)
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        saved = set(f.keys())
    assert "model.embed_tokens.weight" in saved
    assert ("lm_head.weight" in saved) is (not tie)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "arlowgpt"
    loaded = ArlowForCausalLM.from_pretrained(tmp_path).eval()
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) is tie
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_auto_classes_load_saved_directory(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ArlowConfig)
    causal = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(causal, ArlowForCausalLM) and isinstance(base, ArlowModel)
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(causal(ids).logits, model(ids).logits)
        assert torch.equal(base(ids).last_hidden_state, model.model(ids).last_hidden_state)


def test_cached_and_uncached_generate_identical():
    model = tiny_model()
    ids, mask = left_padded_batch()
    kwargs = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(ids, use_cache=True, **kwargs)
        uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (3, 20)
    assert torch.equal(cached, uncached)


def test_left_padded_rows_generate_as_alone():
    model = tiny_model()
    ids, mask = left_padded_batch()
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        batch = model.generate(ids, attention_mask=mask, **kwargs)
        for row in range(3):
            alone = model.generate(ids[row : row + 1, mask[row].bool()], **kwargs)
            assert torch.equal(batch[row, -6:], alone[0, -6:])


def test_cache_object_carries_keys_and_values():
    model = tiny_model()
    ids = random_ids(1, 6)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :4], use_cache=True)
        assert isinstance(out.past_key_values, DynamicCache)
        assert out.past_key_values.get_seq_length() == 4
        step = model(ids[:, 4:], past_key_values=out.past_key_values, use_cache=True).logits
    torch.testing.assert_close(step, full[:, 4:], atol=1e-5, rtol=1e-5)
    assert model(ids).past_key_values is not None  # eval: config.use_cache
    assert model.train()(ids).past_key_values is None  # training keeps no cache by default


def test_labels_give_shifted_cross_entropy_ignoring_minus_100():
    model = tiny_model()
    ids = random_ids()
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = random_ids(2, 16)

    def grads(checkpointing: bool):
        model = tiny_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        model(ids, labels=ids).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5)


def test_cross_attention_used_with_encoder_states_and_skipped_without():
    with_blocks = tiny_model(cross_attention=True, tie_word_embeddings=False)
    without_blocks = tiny_model(cross_attention=False, tie_word_embeddings=False)
    without_blocks.load_state_dict(with_blocks.state_dict(), strict=False)
    ids = random_ids()
    encoder = torch.randn(2, 5, 32)
    with torch.no_grad():
        plain = with_blocks(ids).logits
        crossed = with_blocks(ids, encoder_hidden_states=encoder).logits
        assert torch.equal(plain, without_blocks(ids).logits)
        assert not torch.allclose(plain, crossed, atol=1e-4)
        narrow = tiny_model(cross_attention_dim=16)
        assert narrow(ids, encoder_hidden_states=torch.randn(2, 5, 16)).logits.shape == (2, 12, VOCAB)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=30), "divisible by num_attention_heads"),
        (dict(num_key_value_heads=3), "divisible by num_key_value_heads"),
        (dict(hidden_act="gelu"), "must be 'silu' when gated_mlp=True"),
        (dict(gated_mlp=False, hidden_act="tanh"), "hidden_act must be one of"),
        (dict(norm_type="batchnorm"), "norm_type must be one of"),
        (dict(rotary_dim=3), "rotary_dim must be even"),
        (dict(rotary_dim=16), "rotary_dim must be even"),
        (dict(attention_dropout=1.5), "attention_dropout must be in"),
        (dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer"),
        (dict(pad_token_id=VOCAB), "pad_token_id must be in"),
        (dict(bos_token_id=VOCAB), r"bos_token_id must be in \[0, vocab_size=\d+\), got \d+"),
        (dict(eos_token_id=[1, -1]), r"eos_token_id must be in .*got \[1, -1\]"),
    ],
)
def test_invalid_config_raises_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


@pytest.mark.parametrize("rope", [{"type": "linear", "factor": 2.0}, {"rope_type": "dynamic", "factor": 4.0},
                                  {"rope_type": "default", "rope_theta": 500000.0}])
def test_rope_scaling_in_config_json_is_refused_not_ignored(tmp_path, rope):
    """Llama would scale the positions; Arlow has plain RoPE and used to drop the key silently."""
    tiny_config().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_scaling": rope}))
    message = r"ArlowConfig.rope_scaling=.* is not supported: Arlow applies plain RoPE .* Fix: remove rope_scaling"
    with pytest.raises(ValueError, match=message):
        AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        ArlowForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("rope", [None, {}, {"rope_type": "default"}, {"type": "default", "rope_theta": 100000.0}])
def test_plain_rope_settings_in_config_json_load(tmp_path, rope):
    tiny_config().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_scaling": rope}))
    assert AutoConfig.from_pretrained(tmp_path).rope_theta == 100000.0


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    ids = random_ids()
    with pytest.raises(ValueError, match=r"empty prompt of shape \(1, 0\)"):
        model.generate(torch.zeros((1, 0), dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"labels must have the shape of input_ids \(2, 12\)"):
        model(ids, labels=ids[:, :-1])
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        model(ids, labels=ids.float())
    with pytest.raises(ValueError, match=r"encoder_hidden_states must have shape \(batch=2, enc_seq, 32\)"):
        model(ids, encoder_hidden_states=torch.randn(2, 5, 48))
    with pytest.raises(ValueError, match="use_cross_attention is False"):
        tiny_model(use_cross_attention=False)(ids, encoder_hidden_states=torch.randn(2, 5, 32))
    with pytest.raises(ValueError, match="no cross-attention"):
        tiny_model(cross_attention=False)(ids, encoder_hidden_states=torch.randn(2, 5, 32))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(ids, inputs_embeds=torch.randn(2, 12, 32))
    with pytest.raises(ValueError, match="outside"):
        model(ids + VOCAB)
    with pytest.raises(ValueError, match=r"past_key_values \(or cache\) must be a transformers Cache"):
        model(ids, past_key_values=((ids, ids),))


def test_generate_feeds_encoder_states_to_every_step_cached_or_not():
    model = tiny_model()
    ids, encoder = random_ids(2, 5), torch.randn(2, 4, 32)
    kwargs = dict(max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        crossed = model.generate(ids, encoder_hidden_states=encoder, **kwargs)
        uncached = model.generate(ids, encoder_hidden_states=encoder, use_cache=False, **kwargs)
        plain = model.generate(ids, **kwargs)
    assert torch.equal(crossed.sequences, uncached.sequences)
    for with_encoder, without in zip(crossed.scores, plain.scores):
        assert (with_encoder - without).abs().max() > 1e-3


def test_resized_embeddings_accept_the_new_token_ids_and_check_the_new_bound():
    model = tiny_model()
    model.resize_token_embeddings(VOCAB + 3)
    new_token = torch.full((1, 4), VOCAB + 2)
    assert model(new_token).logits.shape == (1, 4, VOCAB + 3)
    with pytest.raises(ValueError, match=rf"token id {VOCAB + 3} is outside \[0, {VOCAB + 3}\)"):
        model(new_token + 1)
