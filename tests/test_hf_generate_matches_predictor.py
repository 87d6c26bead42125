"""HF ``generate()`` (greedy) and the xLM ``ARLMPredictor`` (greedy) agree token for token on the
same weights: one network, one decoding, two faces."""

import torch

from arlm import RotaryTransformerARLMModel
from arlm.hf.export import xlm_to_hf
from arlm.predictor_arlm import ARLMPredictor

from .conftest import TINY_MODEL_KWARGS, VOCAB_SIZE

PAD, EOS = 0, 3


def test_generate_greedy_equals_predictor_greedy(simple_tokenizer):
    torch.manual_seed(0)
    xlm = RotaryTransformerARLMModel(**dict(TINY_MODEL_KWARGS, num_layers=2, padding_idx=PAD)).eval()
    hf = xlm_to_hf(xlm, simple_tokenizer)
    prompts = torch.randint(7, VOCAB_SIZE, (3, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(prompts)
    for row, pad in enumerate((0, 2, 5)):
        prompts[row, :pad], mask[row, :pad] = PAD, 0
    max_new = 12
    predictor = ARLMPredictor(
        max_steps=max_new, max_length=9 + max_new, tokenizer=simple_tokenizer,
        sampling_method="greedy", model=xlm,
    )
    with torch.no_grad():
        predicted = predictor.predict({"input_ids": prompts, "attention_mask": mask})
        generated = hf.generate(
            prompts, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
            pad_token_id=PAD, eos_token_id=EOS,
        )
    assert predicted["output_start_idx"] == 9
    ours = predicted["ids"][:, 9:]
    theirs = torch.nn.functional.pad(generated[:, 9:], (0, max_new - (generated.shape[1] - 9)), value=PAD)
    assert torch.equal(ours, theirs)
    assert len(set(ours.flatten().tolist())) > 3  # a real continuation, not one repeated token
