"""Shared-prefix scoring equals the expanded layout: the same per-token log-probs and the same
LoRA gradients, on each family's tiny model, with uneven answer lengths, padding, several
prompts per micro-batch and images of different sizes."""

import pytest
import torch
from PIL import Image

from lite_cpt.train.batching import Prompt, collate, encode_rows, tokenizer_of
from lite_cpt.run.continual import reset_adapter
from lite_cpt.train.logprob import token_logprobs
from lite_cpt.models import add_lora
from lite_cpt.train.phase import Knobs, Phase
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.train.policy_update import policy_update
from lite_cpt.train.shared_prefix import (encode_groups, pack_groups, packed_token_logprobs, shared_prefix_mask,
                                    split_group)
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus

FAMILIES = ["qwen2_5_vl", "qwen3_vl", "text"]


@pytest.fixture(scope="module", params=FAMILIES)
def lora_model(request):
    torch.manual_seed(0)
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0, request.param), request.param)
    model = add_lora(model.float(), LoraConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # LoRA B starts at zero: give it values so its gradient path is exercised too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.eval()
    return request.param, model, processor


def _groups(family: str, answers_per_prompt=(3, 1, 2)):
    """Prompts with images of different sizes (none for the text family) and answers of uneven
    lengths, in rollout order (prompt-major)."""
    generator = torch.Generator().manual_seed(1)
    sizes = [(56, 56), (84, 56), (56, 112)]
    prompts, completions = [], []
    for i, count in enumerate(answers_per_prompt):
        images = () if family == "text" else (Image.new("RGB", sizes[i], (40 * i, 90, 200 - 30 * i)),)
        prompt = Prompt(f"question {i}: how many shapes are there" + " and why" * i, images, f"s{i}")
        for k in range(count):
            length = int(torch.randint(1, 9, (1,), generator=generator))
            ids = torch.randint(10, 200, (length,), generator=generator).tolist()
            prompts.append(prompt)
            completions.append(ids)
    return prompts, completions


def _expanded(model, processor, prompts, completions):
    rows = encode_rows(processor, prompts, completions, None)
    batch, labels = collate(rows, tokenizer_of(processor).pad_token_id)
    scored = token_logprobs(model, batch, labels)
    # each row's answer-token log-probs, in order
    return [scored.logp[i][scored.mask[i].bool()] for i in range(len(rows))]


def _packed(model, processor, prompts, completions):
    groups = encode_groups(processor, prompts, completions, list(range(len(prompts))), None)
    packed = pack_groups(model, processor, groups)
    scored = packed_token_logprobs(model, packed)
    assert packed.rows == list(range(len(prompts)))
    return [scored.logp[a][scored.mask[a].bool()] for a in range(len(prompts))], packed


def _lora_grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_packed_logprobs_and_lora_gradients_equal_the_expanded_layouts(lora_model):
    family, model, processor = lora_model
    prompts, completions = _groups(family)
    weights = [torch.randn(len(c), generator=torch.Generator().manual_seed(7 + i)) for i, c in enumerate(completions)]

    model.zero_grad()
    expanded = _expanded(model, processor, prompts, completions)
    sum(w @ lp for w, lp in zip(weights, expanded)).backward()
    grads_expanded = _lora_grads(model)

    model.zero_grad()
    packed, batch = _packed(model, processor, prompts, completions)
    sum(w @ lp for w, lp in zip(weights, packed)).backward()
    grads_packed = _lora_grads(model)

    for e, p, c in zip(expanded, packed, completions):
        assert e.shape == p.shape == (len(c),)
        torch.testing.assert_close(p, e, atol=1e-5, rtol=1e-5)
    assert grads_expanded and grads_expanded.keys() == grads_packed.keys()
    assert any(g.abs().sum() > 0 for g in grads_expanded.values())
    for name in grads_expanded:
        torch.testing.assert_close(grads_packed[name], grads_expanded[name], atol=1e-5, rtol=1e-4, msg=name)
    # one prompt per group: P + sum(R) tokens per row instead of G copies of the prompt
    expanded_tokens = sum(r.length for r in encode_rows(processor, prompts, completions, None))
    assert batch.inputs["input_ids"].shape[0] == 3
    assert int((batch.segments >= 0).sum()) < expanded_tokens


def test_a_group_split_in_parts_scores_as_one(lora_model):
    family, model, processor = lora_model
    prompts, completions = _groups(family, answers_per_prompt=(4,))
    groups = encode_groups(processor, prompts, completions, [10, 11, 12, 13], None)
    parts = split_group(groups[0], lambda length, answers: answers <= 2)
    assert [p.rows for p in parts] == [[10, 11], [12, 13]]
    whole = packed_token_logprobs(model, pack_groups(model, processor, groups))
    split = packed_token_logprobs(model, pack_groups(model, processor, parts))
    torch.testing.assert_close(split.logp, whole.logp, atol=1e-5, rtol=1e-5)


def test_the_mask_shows_each_answer_the_prompt_and_its_own_past_only():
    segments = torch.tensor([[0, 0, 1, 1, 2, -1]])
    allowed = shared_prefix_mask(segments, torch.float32)[0, 0] == 0
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],  # answer 2 does not see answer 1
        [0, 0, 0, 0, 0, 1],  # padding sees only itself
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)


@pytest.mark.parametrize("knobs", [Knobs(3, None, 8), Knobs(8, None, 8, micro_batch_tokens=60)],
                         ids=["fixed-count", "token-budget"])
def test_a_policy_update_with_shared_prefixes_equals_the_expanded_one(knobs):
    """Two mini-batches (old policy scored), the KL on (reference scored), uneven answers: the
    adapter after the update is the same either way."""
    from tests.test_rft import arm_config, scripted_rollouts, vowel_examples

    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    model = add_lora(model.float(), LoraConfig(r=4, alpha=8))
    after = {}
    for shared in (False, True):
        reset_adapter(model, seed=0)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))
        arm = arm_config(kl=True, kl_beta=0.1, kl_reference="base", prompts_per_step=2, mini_batches_per_rollout=2,
                         shared_prefix=shared)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=1.0)  # Adam's first step is about sign(grad): noise-level grads would flip
        rollouts = scripted_rollouts(processor, vowel_examples(4, image=True),
                                     [1, 0, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0], group_size=4)
        rollouts.token_ids[1] = rollouts.token_ids[1] * 3  # uneven answer lengths
        result = policy_update(model, processor, optimizer, rollouts, arm, Phase(knobs))
        assert result["optimizer_steps"] == 2
        after[shared] = ({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                         result)
    (expanded, r_expanded), (shared, r_shared) = after[False], after[True]
    for name in expanded:
        torch.testing.assert_close(shared[name], expanded[name], atol=1e-5, rtol=1e-4, msg=name)
    for key in ("loss", "kl", "clip_fraction", "trained_tokens"):
        assert r_shared[key] == pytest.approx(r_expanded[key], rel=1e-4, abs=1e-6), key
