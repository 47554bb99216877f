"""The KL reference as a frozen second adapter: the previous task's policy, on the same base."""

from __future__ import annotations

import pytest
import torch

from lite_cpt.train.batching import Prompt, append_tokens, encode_prompts
from lite_cpt.train.logprob import token_logprobs
from lite_cpt.models import add_lora, save_adapter
from lite_cpt.train.reference_adapter import REFERENCE_ADAPTER, hold_reference, reference_policy
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    return add_lora(model, LoraConfig(r=4, alpha=8)), processor


def scored_batch(processor):
    prompts = [Prompt("Name a colour."), Prompt("Count to three.")]
    batch = encode_prompts(processor, prompts, None)
    answers = [processor.tokenizer("red blue", add_special_tokens=False)["input_ids"],
               processor.tokenizer("one two three", add_special_tokens=False)["input_ids"]]
    return append_tokens(batch, answers, processor.tokenizer.pad_token_id)


def logp(model, batch, labels) -> torch.Tensor:
    with torch.no_grad():
        return token_logprobs(model, batch, labels).logp


def train_a_little(model, seed: int) -> None:
    """Stand-in for a task's training: move every policy LoRA weight (B included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=gen))


def test_reference_is_the_previous_tasks_policy_not_the_base(tiny, tmp_path):
    model, processor = tiny
    batch, labels = scored_batch(processor)
    trainable_before = [n for n, p in model.named_parameters() if p.requires_grad]
    with model.disable_adapter():
        base = logp(model, batch, labels)

    hold_reference(model)  # task 1 starts from a fresh adapter: its reference is the base
    with reference_policy(model, "previous_task"):
        torch.testing.assert_close(logp(model, batch, labels), base, rtol=0, atol=1e-6)

    train_a_little(model, seed=1)  # task 1
    end_of_task_1 = logp(model, batch, labels)
    assert not torch.allclose(end_of_task_1, base, atol=1e-3)

    hold_reference(model)  # task 2 starts
    train_a_little(model, seed=2)
    with reference_policy(model, "previous_task"):
        reference = logp(model, batch, labels)
    with reference_policy(model, "base"):
        torch.testing.assert_close(logp(model, batch, labels), base, rtol=0, atol=1e-6)
    torch.testing.assert_close(reference, end_of_task_1, rtol=0, atol=1e-6)
    assert not torch.allclose(reference, base, atol=1e-3)
    assert not torch.allclose(logp(model, batch, labels), end_of_task_1, atol=1e-3)  # the policy is back

    # Only the policy adapter trains; the reference is frozen, and saving writes the policy alone.
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable_before
    assert all(not p.requires_grad for n, p in model.named_parameters() if f".{REFERENCE_ADAPTER}." in n)
    assert model.active_adapter == "default"
    saved = save_adapter(model, tmp_path / "task_2")
    assert (saved / "adapter_model.safetensors").exists() and not (saved / REFERENCE_ADAPTER).exists()


def test_reference_policy_names_its_error(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="previous_task"):
        with reference_policy(model, "initial"):
            pass


def test_planner_counts_the_reference_adapter_it_holds(tmp_path):
    """The plan of a GRPO arm with kl_reference: previous_task carries one more frozen adapter in
    every phase (rollouts, passes, update, evaluation) — the bytes hold_reference really adds,
    with no gradient or optimizer state; kl_reference: base or no KL hold none."""
    from lite_cpt.planner import GIB, plan, resolve_shape
    from lite_cpt.planner.shapes import lora_parameters
    from lite_cpt.recipe import recipe_from_dict
    from tests.helpers import tiny_recipe

    def rft_arm(name: str, **rft) -> dict:
        return {"name": name, "method": "rft", "rft": {"group_size": 2, "prompts_per_step": 2, **rft}}

    raw = tiny_recipe(tmp_path, arms=[rft_arm("prev", kl_reference="previous_task"), rft_arm("base", kl_reference="base"),
                                      rft_arm("nokl", kl=False)])
    raw["model"]["lora"] = {"r": 4, "alpha": 8}
    recipe = recipe_from_dict(raw)
    planned = plan(recipe, 24)
    n = lora_parameters(resolve_shape(recipe.model), 4, recipe.model.lora.target_modules)
    for phase in ("rollout", "logprob_pass", "grpo_step", "evaluation"):
        assert planned.arms["prev"].phases[phase].components["reference_adapter"] == pytest.approx(n * 4 / GIB)
        for other in ("base", "nokl"):
            assert "reference_adapter" not in planned.arms[other].phases[phase].components
    # What the planner counts is what the model holds: one more fp32 adapter, nothing trainable.
    model, _ = build_tiny_model(recipe.model.tiny, tiny_corpus(0))
    model = add_lora(model, recipe.model.lora)
    before = {name: p for name, p in model.named_parameters()}
    trainable = {name for name, p in before.items() if p.requires_grad}
    hold_reference(model)
    added = {name: p for name, p in model.named_parameters() if name not in before}
    assert sum(p.numel() * p.element_size() for p in added.values()) == n * 4
    assert not any(p.requires_grad for p in added.values())
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable


@pytest.mark.parametrize("kl, beta, reference", [(True, 0.01, "previous_task"), (True, 0.0, "previous_task"),
                                                 (False, 0.01, "previous_task"), (True, 0.01, "base")])
def test_one_answer_to_whether_an_arm_holds_a_reference_adapter(kl, beta, reference):
    """The KL is one fact (on with a positive beta), and the planner reads the same answer as
    the trainer and the calibration: `rft.holds_reference`."""
    from lite_cpt.planner import workload_of
    from lite_cpt.recipe import recipe_from_dict

    raw = {"name": "t", "model": {"name": "tiny"}, "tasks": [{"name": "a", "type": "mini_clevr", "train_size": 4,
                                                              "test_size": 2}],
           "arms": [{"name": "rft", "rft": {"kl": kl, "kl_beta": beta, "kl_reference": reference}}]}
    recipe = recipe_from_dict(raw)
    rft = recipe.arms[0].rft
    assert rft.uses_kl == (kl and beta > 0)
    assert rft.holds_reference == (kl and beta > 0 and reference == "previous_task")
    assert workload_of(recipe, recipe.arms[0]).reference_adapter == rft.holds_reference
