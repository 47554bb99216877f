"""SFT as the paper's SFT ran in LLaMA-Factory: linear warmup over 10 % of the steps, then cosine
decay to 0, starting over at each task; RL arms keep a constant rate."""

import math

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup

from lite_cpt.errors import UserError
from lite_cpt.train.phase import Knobs, Phase
from lite_cpt.recipe import arm_config, load_recipe, recipe_from_dict
from lite_cpt.train.sft import train_sft
from lite_cpt.train.sft_schedule import lr_factor, warmup_steps
from tests.test_rft import policy, tiny, vowel_examples  # noqa: F401


@pytest.mark.parametrize("total", [1, 7, 20, 63])
def test_the_cosine_schedule_is_transformers_one(total):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_cosine_schedule_with_warmup(optimizer, warmup_steps(total, 0.1), total)
    for step in range(total):
        assert lr_factor(step, total, "cosine", 0.1) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12)
        optimizer.step()
        reference.step()


def test_schedule_values_by_hand():
    # 20 steps: ceil(2.0) = 2 warmup steps (0, 1/2), then cos over the 18 left
    assert [lr_factor(s, 20, "cosine", 0.1) for s in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert lr_factor(11, 20, "cosine", 0.1) == pytest.approx(0.5)  # half way through the decay
    assert lr_factor(19, 20, "cosine", 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 17 / 18)))
    assert [lr_factor(s, 20, "constant", 0.0) for s in (0, 19)] == [1.0, 1.0]


def test_each_sft_step_runs_at_its_scheduled_rate(policy):
    model, processor = policy
    arm = arm_config(name="sft", lr=1e-3, batch_size=4, lr_scheduler="cosine", warmup_ratio=0.1)
    records = []
    train_sft(model, processor, vowel_examples(8), arm, Phase(Knobs(4, None, 1), epochs=5, on_step=records.append))
    assert len(records) == 10  # 2 batches x 5 epochs; ceil(1.0) = 1 warmup step
    assert [r["lr"] for r in records] == pytest.approx([1e-3 * lr_factor(s, 10, "cosine", 0.1) for s in range(10)])
    assert records[0]["lr"] == 0.0 and records[1]["lr"] == pytest.approx(1e-3)


def test_the_faithful_recipes_sft_is_llama_factorys_example_and_rl_cannot_take_a_schedule():
    recipe = load_recipe("recipes/seven_tasks.yaml", check_data=False)
    for name in ("sft", "multitask_sft"):
        arm = next(a for a in recipe.arms if a.name == name)
        # examples/train_lora/qwen2_5vl_lora_sft.yaml at LLaMA-Factory 1b1ec9b (2025-07-06)
        assert (arm.lr, arm.epochs, arm.lr_scheduler, arm.warmup_ratio) == (1.0e-4, 3.0, "cosine", 0.1)
    with pytest.raises(UserError, match="apply to SFT arms"):
        recipe_from_dict({"name": "x", "tasks": [{"name": "t", "type": "mini_clevr"}],
                          "arms": [{"name": "rft", "lr_scheduler": "cosine"}]})
