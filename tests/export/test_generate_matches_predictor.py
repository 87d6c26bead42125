"""One network, one decoding, two faces: on the same weights, ``ArlowForCausalLM.generate``
(greedy), ``ARLMPredictor`` (greedy) over the xLM face and ``ARLMPredictor`` over the Hugging Face
face agree token for token, with either cache."""

import pytest
import torch

from arlm import RotaryTransformerARLMModel
from arlm.export.exporter import xlm_to_hf
from arlm.predictor_arlm import ARLMPredictor
from arlm.types_arlm import ARLMModel

from tests.conftest import TINY_MODEL_KWARGS, VOCAB_SIZE

PAD, EOS, MAX_NEW = 0, 3, 12


def left_padded_prompts():
    prompts = torch.randint(7, VOCAB_SIZE, (3, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(prompts)
    for row, pad in enumerate((0, 2, 5)):
        prompts[row, :pad], mask[row, :pad] = PAD, 0
    return prompts, mask


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_predictor_over_either_face_equals_generate(simple_tokenizer, cache):
    torch.manual_seed(0)
    xlm = RotaryTransformerARLMModel(**dict(TINY_MODEL_KWARGS, num_layers=2, padding_idx=PAD)).eval()
    hf = xlm_to_hf(xlm, simple_tokenizer)
    assert isinstance(xlm, ARLMModel) and isinstance(hf, ARLMModel)
    prompts, mask = left_padded_prompts()

    def predicted(model):
        predictor = ARLMPredictor(
            max_steps=MAX_NEW, max_length=9 + MAX_NEW, tokenizer=simple_tokenizer,
            sampling_method="greedy", model=model, cache=cache,
        )
        out = predictor.predict({"input_ids": prompts, "attention_mask": mask})
        assert out["output_start_idx"] == 9
        return out["ids"][:, 9:]

    with torch.no_grad():
        over_xlm, over_hf = predicted(xlm), predicted(hf)
        generated = hf.generate(
            prompts, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
            pad_token_id=PAD, eos_token_id=EOS,
        )
    theirs = torch.nn.functional.pad(generated[:, 9:], (0, MAX_NEW - (generated.shape[1] - 9)), value=PAD)
    assert torch.equal(over_xlm, theirs) and torch.equal(over_hf, theirs)
    assert len(set(over_xlm.flatten().tolist())) > 3  # a real continuation, not one repeated token
