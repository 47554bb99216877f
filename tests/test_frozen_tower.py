"""The frozen vision tower carries no gradient: in train mode with gradient checkpointing on,
its outputs do not require grad and a training step's backward graph reaches none of its
nodes, as the planner assumes (it counts the tower's working set without gradients); the
bench's model is set up the same way."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lite_cpt.train.batching import Prompt, encode_sft
from lite_cpt.families.base import ModelShape
from lite_cpt.train.logprob import token_logprobs
from lite_cpt.models import add_lora
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus

#: A Qwen2.5-VL small enough to build in a moment, with the bench tokenizer's vocabulary.
SMALL_SHAPE = ModelShape(
    name="test", layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, head_dim=16, vocab=1024,
    tie_embeddings=False, vision_layers=2, vision_hidden=32, vision_intermediate=64, vision_heads=2,
    vision_out_hidden=64,
)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def reachable_nodes(root) -> set:
    """Every autograd node the backward pass from `root` visits (grad_fn.next_functions)."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(child for child, _ in node.next_functions)
    return seen


def test_a_training_step_does_not_backpropagate_into_the_vision_tower():
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    model = add_lora(model, LoraConfig(r=4, alpha=8), gradient_checkpointing=True)
    model.train()
    visual = model.get_base_model().model.visual
    outputs = []  # every tensor any module of the tower returns
    hooks = [module.register_forward_hook(lambda _m, _i, out: outputs.extend(_tensors(out)))
             for module in visual.modules()]
    image = Image.new("RGB", (56, 56), "red")
    batch, labels = encode_sft(processor, [Prompt("what is it", (image,), "x")], ["a red square"],
                               max_prompt_tokens=256, max_answer_tokens=16)
    scored = token_logprobs(model, batch, labels)
    loss = -(scored.logp * scored.mask).sum()
    for hook in hooks:
        hook.remove()

    assert outputs and not any(t.requires_grad for t in outputs)
    graph = reachable_nodes(loss.grad_fn)
    tower_nodes = {t.grad_fn for t in outputs if t.grad_fn is not None}
    assert not graph & tower_nodes
    leaves = {id(node.variable) for node in graph if type(node).__name__ == "AccumulateGrad"}
    lora = {id(p) for name, p in model.named_parameters() if "lora_" in name and p.requires_grad}
    vision_outputs = {id(t) for t in outputs}
    assert not leaves & vision_outputs  # no tower output became a leaf that requires grad
    assert lora and leaves <= lora and leaves  # the walk is real: it reaches the adapter, only it
    loss.backward()
    assert all(p.grad is None for p in visual.parameters())


def test_the_bench_model_hooks_no_embedding_either():
    """`bench step` builds its model with the run's checkpointing setup: no forward hook on the
    vision patch embedding (nor on the text embeddings: non-reentrant checkpointing needs none)."""
    from lite_cpt.bench.step import bench_config, bench_processor, build_random_model

    processor = bench_processor(4)
    config = bench_config(SMALL_SHAPE, processor)
    model = build_random_model(config, device="cpu", quantize=False, lora_r=4, dtype=torch.float32)
    inner = model.get_base_model()
    assert inner.is_gradient_checkpointing
    assert not inner.model.visual.patch_embed._forward_hooks
    assert not inner.get_input_embeddings()._forward_hooks


@pytest.mark.parametrize("enabled", [True, False])
def test_checkpointing_leaves_no_input_hook(enabled):
    model, _ = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    model = add_lora(model, LoraConfig(r=4, alpha=8), gradient_checkpointing=enabled)
    assert model.get_base_model().is_gradient_checkpointing is enabled
    assert not getattr(model.get_base_model(), "_require_grads_hooks", [])
