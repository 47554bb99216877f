"""The generation path: one prefill per prompt shared by its G samples, and calls of prompts of
similar length, draw the same answers as expanding each prompt G times before the prefill, and
hand every answer back to its own prompt in the caller's order."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from lite_cpt.train.batching import Prompt, collate_prompts, encode_prompts, length_sorted_calls, to_device
from lite_cpt.cli import app
from lite_cpt.data.synthetic import generate
from lite_cpt.models import add_lora
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.train.rollout import (
    Sampling,
    generate_completions,
    neutral_generation_config,
    shared_prefill,
    vision_token_ids,
)
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus
from tests.helpers import tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)  # peakier logits: answers of several tokens before an end token
    model = add_lora(model, LoraConfig(r=4, alpha=8))
    with torch.no_grad():  # a trained-looking adapter: the LoRA path changes the logits
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    model.eval()
    return model, processor


def mixed_prompts() -> list[Prompt]:
    """Prompts with images and without, of different token lengths (left padding in a batch)."""
    samples = generate("mini_clevr", "test", 3) + generate("mini_geometry", "test", 2)
    return [Prompt(s.question, s.images, s.id) for s in samples] + [
        Prompt("Count to three."), Prompt("Name a colour, any colour you like, and say why it is yours.")]


def _step_logits(model, processor, prompts, group_size: int, *, shared: bool, rope_offsets: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(new tokens, [steps, rows, vocab] next-token log-probs) of one call with G copies per prompt
    (top-1 sampling: greedy, and accepted with num_return_sequences)."""
    batch = encode_prompts(processor, prompts)
    settings = dict(do_sample=True, top_k=1, max_new_tokens=6, return_dict_in_generate=True, output_logits=True,
                    suppress_tokens=vision_token_ids(processor.tokenizer), pad_token_id=processor.tokenizer.pad_token_id)
    with torch.no_grad(), neutral_generation_config(model):
        if shared:
            inputs = shared_prefill(model, batch, group_size)
            if not rope_offsets:
                inner = model.get_base_model().model
                inner.rope_deltas = torch.zeros_like(inner.rope_deltas)
            out = model.generate(**inputs, **settings)
        else:
            out = model.generate(**batch, **settings, num_return_sequences=group_size)
    return out.sequences[:, batch["input_ids"].shape[1]:], torch.stack(out.logits).log_softmax(-1)


def test_shared_prefill_gives_the_logits_of_a_prefill_per_sample(tiny):
    model, processor = tiny
    prompts = mixed_prompts()
    shared_tokens, shared = _step_logits(model, processor, prompts, 3, shared=True)
    own_tokens, own = _step_logits(model, processor, prompts, 3, shared=False)
    assert shared.shape == own.shape == (6, 3 * len(prompts), shared.shape[-1])
    # every step of every copy: the same next-token distribution, to fp32 round-off
    torch.testing.assert_close(shared, own, atol=2e-5, rtol=0)
    assert torch.equal(shared_tokens, own_tokens)
    # the check can fail: without the images' rotary offsets the copies decode at other positions
    _, offsets_dropped = _step_logits(model, processor, prompts, 3, shared=True, rope_offsets=False)
    assert not torch.allclose(offsets_dropped, own, atol=1e-3)


@pytest.mark.parametrize("prompts_per_call", [7, 2])
def test_seeded_samples_match_the_expanded_path_and_repeat(tiny, prompts_per_call):
    model, processor = tiny
    prompts = mixed_prompts()
    sampling = Sampling(group_size=4, max_new_tokens=10, temperature=1.0, top_p=0.95)
    new = generate_completions(model, processor, prompts, sampling, prompts_per_call=prompts_per_call,
                               generator_seed=11)
    again = generate_completions(model, processor, prompts, sampling, prompts_per_call=prompts_per_call,
                                 generator_seed=11)
    assert again.token_ids == new.token_ids and again.texts == new.texts
    assert len(new.token_ids) == 4 * len(prompts) and new.num_generated_tokens > 4 * len(prompts)
    other_seed = generate_completions(model, processor, prompts, sampling, prompts_per_call=prompts_per_call,
                                      generator_seed=12)
    assert other_seed.token_ids != new.token_ids
    if prompts_per_call >= len(prompts):  # one call: the same RNG stream as the expanded path
        old = generate_completions(model, processor, prompts, sampling, prompts_per_call=prompts_per_call,
                                   generator_seed=11, expand_before_prefill=True)
        assert old.token_ids == new.token_ids


def test_length_sorted_calls_keep_each_answer_with_its_prompt(tiny):
    model, processor = tiny
    prompts = mixed_prompts()
    prompts = prompts[::2] + prompts[1::2]  # interleave long and short prompts
    sampling = Sampling(group_size=1, max_new_tokens=8)
    alone = [generate_completions(model, processor, [p], sampling).token_ids[0] for p in prompts]
    sorted_calls = generate_completions(model, processor, prompts, sampling, prompts_per_call=2)
    assert sorted_calls.token_ids == alone  # the caller's order, each answer its own prompt's
    assert len(set(map(tuple, alone))) > 2  # the prompts do get different answers (the check can fail)
    # greedy G copies of one prompt are its greedy answer G times, wherever it sat
    copies = generate_completions(model, processor, prompts, Sampling(group_size=3, max_new_tokens=8),
                                  prompts_per_call=2)
    assert copies.token_ids == [row for row in alone for _ in range(3)]


def test_min_new_tokens_holds_the_end_of_turn_back(tiny):
    """A measurement's fixed length: with min_new_tokens every answer decodes that many tokens."""
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    end, word = processor.tokenizer.convert_tokens_to_ids("<|im_end|>"), 300
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features)
    with torch.no_grad():  # logits that favour the end of turn first, then one ordinary token
        head.weight.zero_()
        head.bias.zero_()
        head.bias[end], head.bias[word] = 10.0, 5.0
    model.lm_head = head
    prompts = mixed_prompts()
    free = generate_completions(model, processor, prompts, Sampling(max_new_tokens=12))
    assert all(ids == [end] for ids in free.token_ids)  # the answers end at once on their own
    held = generate_completions(model, processor, prompts, Sampling(max_new_tokens=12, min_new_tokens=12))
    assert all(ids == [word] * 12 for ids in held.token_ids)


def test_calls_group_prompts_of_similar_length(tiny):
    _, processor = tiny
    prompts = mixed_prompts() * 2
    lengths = [encode_prompts(processor, [p])["input_ids"].shape[1] for p in prompts]
    calls = list(length_sorted_calls(processor, prompts, 3))
    assert sorted(i for indices, _ in calls for i in indices) == list(range(len(prompts)))
    padded = sum(batch["input_ids"].numel() for _, batch in calls)
    in_order = sum(3 * max(lengths[s : s + 3]) if s + 3 <= len(prompts) else len(lengths[s:]) * max(lengths[s:])
                   for s in range(0, len(prompts), 3))
    assert padded == sum(len(i) * max(lengths[j] for j in i) for i, _ in calls) < in_order
    for indices, batch in calls:  # each call is exactly the processor's batch of its prompts
        together = encode_prompts(processor, [prompts[i] for i in indices])
        assert batch.keys() == together.keys()
        assert all(torch.equal(batch[k], together[k]) for k in batch)


def test_collated_prompts_equal_the_processors_batch(tiny):
    _, processor = tiny
    prompts = mixed_prompts()
    one_by_one = collate_prompts([encode_prompts(processor, [p]) for p in prompts], processor.tokenizer.pad_token_id)
    together = encode_prompts(processor, prompts)
    assert one_by_one.keys() == together.keys()
    for key in together:
        assert torch.equal(one_by_one[key], together[key]), key
    assert to_device(one_by_one, torch.device("cpu"))["pixel_values"].shape[0] > 0


def test_bench_rollout_runs_both_paths_on_the_same_work(tmp_path):
    arms = [{"name": "rft", "lr": 1e-3, "rft": {"group_size": 3, "prompts_per_step": 4, "max_new_tokens": 3,
                                                  "cot": False}}]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, arms=arms))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "rollout", str(recipe), "--prompts", "5", "--prompts-per-call", "2",
                                      "--repeats", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "shared / expanded" in result.output
    saved = json.loads(out.read_text())
    assert saved["prompts"] == 5 and saved["group_size"] == 3 and saved["max_new_tokens"] == 3
    paths = saved["paths"]
    assert set(paths) == {"expanded", "shared"}
    for row in paths.values():
        assert row["generated_tokens"] > 0
        assert row["sequences_per_s"] == pytest.approx(15 / row["seconds"], rel=0.02)
    assert saved["ratio"] == pytest.approx(paths["expanded"]["seconds"] / paths["shared"]["seconds"], rel=0.02)
