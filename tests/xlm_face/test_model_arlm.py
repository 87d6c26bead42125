import pytest
import torch

from arlm.network.config import DecoderConfig
from arlm.model_arlm import RotaryTransformerARLMModel
from tests.conftest import TINY_MODEL_KWARGS, VOCAB_SIZE

B, L = 2, 16


def random_ids(batch=B, seq=L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(7, VOCAB_SIZE, (batch, seq), generator=g)


def causal_3d(mask_2d):
    L = mask_2d.shape[1]
    return torch.ones(L, L, dtype=torch.bool).tril()[None] & mask_2d.bool()[:, None, :]


def test_output_shape(tiny_model):
    assert tiny_model(random_ids()).shape == (B, L, VOCAB_SIZE)


def test_partial_mask_with_trailing_padded_keys(tiny_model):
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[:, -4:] = False
    logits = tiny_model(random_ids(), causal_3d(mask), positions=torch.arange(L).expand(B, L))
    assert logits.shape == (B, L, VOCAB_SIZE)
    assert torch.isfinite(logits).all()


def test_gradients_reach_parameters():
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS)
    model(random_ids()).logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("tie", [False, True])
def test_weight_decay_split_is_disjoint_and_exhaustive(tie):
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS, tie_word_embeddings=tie)
    decay = {n for n, _ in model.get_named_params_for_weight_decay()}
    no_decay = {n for n, _ in model.get_named_params_for_no_weight_decay()}
    assert decay and no_decay
    assert not decay & no_decay
    assert decay | no_decay == {n for n, _ in model.named_parameters()}
    assert "model.layers.0.self_attn.q_proj.weight" in decay
    assert "model.embed_tokens.weight" in no_decay
    assert not any(n.endswith("bias") or "norm" in n for n in decay)


@pytest.mark.parametrize("mask_kind", [None, "2d", "3d"])
def test_future_tokens_do_not_change_past_logits(tiny_model, mask_kind):
    x = random_ids()
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1 - 7) % (VOCAB_SIZE - 7) + 7
    ones = torch.ones(B, L, dtype=torch.long)
    mask = {None: None, "2d": ones, "3d": causal_3d(ones)}[mask_kind]
    a, b = tiny_model(x, mask), tiny_model(x2, mask)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], atol=1e-5, rtol=0)
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_right_padded_rows_match_unpadded(tiny_model):
    x = random_ids()
    lengths = [L, 10]
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    padded = x.masked_fill(~mask.bool(), 0)
    logits = tiny_model(padded, mask)
    for b, n in enumerate(lengths):
        alone = tiny_model(x[b : b + 1, :n])
        torch.testing.assert_close(logits[b : b + 1, :n], alone, atol=1e-5, rtol=1e-5)


def test_left_padded_row_matches_unpadded_with_positions(tiny_model):
    x = random_ids(batch=1, seq=10)
    pad = 6
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), x], dim=1)
    mask = torch.cat([torch.zeros(1, pad), torch.ones(1, 10)], dim=1).long()
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    logits = tiny_model(padded, mask, positions=positions)
    torch.testing.assert_close(logits[:, pad:], tiny_model(x), atol=1e-5, rtol=1e-5)


def test_2d_and_equivalent_3d_mask_agree(tiny_model):
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 11:] = 0
    x = random_ids()
    real = mask.bool()  # a padded query's output is unspecified (its RoPE position differs)
    torch.testing.assert_close(tiny_model(x, mask)[real], tiny_model(x, causal_3d(mask))[real], atol=0, rtol=0)


def test_fully_padded_row_gives_no_nan(tiny_model):
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1] = 0
    assert torch.isfinite(tiny_model(random_ids(), mask)).all()
    assert torch.isfinite(tiny_model(random_ids(), causal_3d(mask))).all()


def test_rope_tables_are_not_in_state_dict(tiny_model):
    keys = tiny_model.state_dict().keys()
    assert not any("rotary_emb" in k for k in keys)
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" in keys


def test_tied_embeddings_share_storage():
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS, tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_padding_idx_row_starts_at_zero():
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS, padding_idx=0)
    assert model.model.embed_tokens.weight[0].abs().sum() == 0


def test_a_tied_head_keeps_the_zeroed_padding_row_and_the_embedding_draw():
    """The head shares the embedding's weight: initialising the head again drew over the zeroed
    padding row and the embedding's own draw."""
    torch.manual_seed(0)
    tied = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS, padding_idx=0, tie_word_embeddings=True)
    assert tied.lm_head.weight[0].abs().sum() == 0
    torch.manual_seed(0)
    untied = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS, padding_idx=0)
    assert torch.equal(tied.model.embed_tokens.weight, untied.model.embed_tokens.weight)


@pytest.mark.parametrize(
    "options",
    [
        dict(norm="rmsnorm", activation="swiglu", bias=False),
        dict(num_kv_heads=1, rope_theta=500000.0),
        dict(final_layer_without_normalization=True, activation="gelu"),
    ],
)
def test_decoder_options_build_and_stay_causal(options):
    torch.manual_seed(0)
    kwargs = dict(TINY_MODEL_KWARGS, nhead=4, rotary_emb_dim=8, **options)
    model = RotaryTransformerARLMModel(**kwargs).eval()
    x = random_ids()
    x2 = x.clone()
    x2[:, -1] = 7
    torch.testing.assert_close(model(x)[:, :-1], model(x2)[:, :-1], atol=1e-5, rtol=0)


def test_partial_rotary_leaves_other_channels_unrotated():
    model = RotaryTransformerARLMModel(**dict(TINY_MODEL_KWARGS, rotary_emb_dim=4))
    assert model.model.rotary_emb.cos.shape[-1] == 4


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(d_model=30, nhead=4), r"d_model \(30\) must be divisible .* heads \(4\)"),
        (dict(rotary_emb_dim=15), r"rotary_emb_dim must be even .* got 15"),
        (dict(rotary_emb_dim=32), r"head_dim=16.* got 32"),
        (dict(activation="tanh"), r"activation must be one of .* 'tanh'"),
        (dict(norm="batchnorm"), r"norm must be one of"),
        (dict(num_kv_heads=3, nhead=2), r"nhead \(2\) must be divisible by num_kv_heads, the number of key/value heads \(3\)"),
        (dict(dropout=1.5), r"dropout must be in \[0, 1\), got 1.5"),
        (dict(padding_idx=57), r"padding_idx must be in \[0, num_embeddings=57\), got 57"),
    ],
)
def test_invalid_configuration_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        RotaryTransformerARLMModel(**dict(TINY_MODEL_KWARGS, **overrides))


def test_token_id_out_of_range(tiny_model):
    x = random_ids()
    x[0, 3] = VOCAB_SIZE
    with pytest.raises(ValueError, match=r"token id 57 is outside \[0, 57\)"):
        tiny_model(x)
    x[0, 3] = -1
    with pytest.raises(ValueError, match=r"token id -1 is outside"):
        tiny_model(x)


def test_sequence_longer_than_max_length(tiny_model):
    with pytest.raises(ValueError, match=r"sequence length 65 exceeds max_length 64"):
        tiny_model(random_ids(seq=65))


def test_positions_beyond_max_length(tiny_model):
    with pytest.raises(ValueError, match=r"positions must be in \[0, max_length=64\)"):
        tiny_model(random_ids(), positions=torch.full((B, L), 64))


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(B, L + 1, dtype=torch.long), r"attention_mask must have shape .* got \(2, 17\)"),
        (torch.ones(B, L, L, L, dtype=torch.bool), r"attention_mask must have shape"),
        (torch.ones(B, L), r"must be bool or integer .* got torch.float32"),
    ],
)
def test_bad_mask(tiny_model, mask, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(random_ids(), mask)


def test_empty_batch(tiny_model):
    with pytest.raises(ValueError, match=r"empty batch"):
        tiny_model(torch.zeros(0, L, dtype=torch.long))


def test_float_token_ids(tiny_model):
    with pytest.raises(ValueError, match=r"integer tensor, got dtype torch.float32"):
        tiny_model(random_ids().float())


def test_config_derived_fields():
    cfg = DecoderConfig(vocab_size=10, d_model=64, n_layers=1, n_heads=4)
    assert (cfg.n_kv_heads, cfg.d_ff, cfg.rotary_dim, cfg.head_dim) == (4, 256, 16, 16)


@pytest.mark.parametrize("padded", [False, True])
def test_key_padding_mask_reaches_sdpa_only_when_it_hides_something(tiny_model, sdpa_calls, padded):
    mask = torch.ones(B, L, dtype=torch.long)
    if padded:
        mask[0, :3] = 0
    tiny_model(random_ids(), attention_mask=mask)
    if padded:
        assert sdpa_calls and all(m is not None and not causal for m, causal in sdpa_calls)
    else:
        assert sdpa_calls and all(m is None and causal for m, causal in sdpa_calls)


def test_padding_idx_defaults_to_zero():
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS)
    assert model.model.embed_tokens.padding_idx == 0
    assert RotaryTransformerARLMModel(**TINY_MODEL_KWARGS, padding_idx=None).model.embed_tokens.padding_idx is None


@pytest.mark.parametrize("tie", [False, True])
def test_save_pretrained_from_pretrained_round_trip(tmp_path, tie):
    torch.manual_seed(0)
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS, tie_word_embeddings=tie).eval()
    model.save_pretrained(tmp_path)
    assert {"model.safetensors", "config.json"} <= {p.name for p in tmp_path.iterdir()}
    loaded = RotaryTransformerARLMModel.from_pretrained(tmp_path).eval()
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tie
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_push_to_hub_uploads_what_from_pretrained_loads(tmp_path, monkeypatch):
    """``push_to_hub`` (what xlm-core's push_to_hub job calls) with the Hub replaced by a folder."""
    from huggingface_hub import HfApi, RepoUrl

    uploaded = {}

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        import shutil

        uploaded[repo_id] = shutil.copytree(folder_path, tmp_path / repo_id)

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    torch.manual_seed(0)
    model = RotaryTransformerARLMModel(**TINY_MODEL_KWARGS).eval()
    model.push_to_hub("me/arlm-tiny", commit_message="test")
    loaded = RotaryTransformerARLMModel.from_pretrained(uploaded["me/arlm-tiny"]).eval()
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
