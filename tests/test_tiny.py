import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from lite_cpt.train.batching import Prompt, encode_prompts
from lite_cpt.data.synthetic import generate
from lite_cpt.recipe_model import TinyModelConfig
from lite_cpt.tiny.model import SPECIAL_TOKENS, build_tiny_model, save_tiny_model, tiny_corpus


def test_tiny_model_is_deterministic_and_reloads(tmp_path):
    cfg = TinyModelConfig()
    corpus = tiny_corpus(0)
    model_a, processor = build_tiny_model(cfg, corpus)
    model_b, _ = build_tiny_model(cfg, corpus)
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(a, b), name
    other, _ = build_tiny_model(cfg.model_copy(update={"seed": 1}), corpus)
    assert not torch.equal(other.lm_head.weight, model_a.lm_head.weight)

    tokenizer = processor.tokenizer
    for token in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    assert tokenizer.eos_token == "<|im_end|>"

    samples = generate("mini_clevr", "test", 2)
    batch = encode_prompts(processor, [Prompt(s.question, s.images) for s in samples])
    image_id = model_a.config.image_token_id
    # 56x56 pixels -> 4x4 patches of 14 -> 2x2 merged image tokens per image
    assert (batch["input_ids"] == image_id).sum().item() == 2 * 4
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]

    path = save_tiny_model(model_a, processor, tmp_path / "tiny")
    reloaded = AutoModelForImageTextToText.from_pretrained(path)
    reprocessor = AutoProcessor.from_pretrained(path)
    batch2 = encode_prompts(reprocessor, [Prompt(s.question, s.images) for s in samples])
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    with torch.no_grad():
        assert torch.allclose(model_a(**batch).logits, reloaded(**batch2).logits, atol=1e-6)
    # The vision tower really runs: a different image changes the output.
    other_images = generate("mini_clevr", "train", 2)
    batch3 = encode_prompts(processor, [Prompt(s.question, o.images) for s, o in zip(samples, other_images)])
    with torch.no_grad():
        assert not torch.allclose(model_a(**batch).logits, model_a(**batch3).logits)


def test_decoding_keeps_cot_tags_and_drops_control_tokens():
    from lite_cpt.train.rollout import decode_completions

    _, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    tokenizer = processor.tokenizer
    ids = tokenizer("<think>two</think><answer>4</answer>", add_special_tokens=False)["input_ids"]
    ids += [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id]
    assert decode_completions(tokenizer, [ids]) == ["<think>two</think><answer>4</answer>"]


def test_generation_never_emits_vision_markers():
    from lite_cpt.train.rollout import Sampling, generate_completions, vision_token_ids

    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    banned = vision_token_ids(processor.tokenizer)
    assert len(banned) == 4
    with torch.no_grad():
        # Make the markers the most likely tokens everywhere: only the suppression stops them.
        model.lm_head.weight[banned] += 10.0
    samples = generate("mini_clevr", "test", 2)
    out = generate_completions(model, processor, [Prompt(s.question, s.images) for s in samples],
                               Sampling(group_size=3, max_new_tokens=5, temperature=1.0), generator_seed=0)
    assert out.num_generated_tokens > 0
    assert not any(t in banned for row in out.token_ids for t in row)
