"""GRPO phase on the random tiny Qwen2.5-VL: zero-variance groups, learning, KL paths, rewards."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

import lite_cpt.train.policy_update as update_module
import lite_cpt.train.rft as rft_module
from lite_cpt.arms import build_arm
from lite_cpt.arms.rl.method import JointRFT, SequentialRFT
from lite_cpt.train.phase import Example, Knobs, Phase
from lite_cpt.run.continual import reset_adapter
from lite_cpt.models import add_lora
from lite_cpt.recipe import arm_config as arm_entry
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.recipe_run import ArmConfig
from lite_cpt.train.policy_update import (
    accumulate_policy_gradient,
    compute_advantages,
    policy_update,
    prepare_micro_batches,
)
from lite_cpt.train.rft import Rollouts, generate_rollouts, reward_parts, rft_reward, train_rft
from lite_cpt.train.logprob import token_logprobs
from lite_cpt.tasks import TASK_TYPES
from lite_cpt.tasks.base import Sample, Task
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus

VOWELS = "aeiou"
KNOBS = Knobs(micro_batch_size=8, logprob_chunk=None, rollout_batch_size=8)  # train_rft's former defaults


class VowelTask(Task):
    """Reward 1 when the answer starts with a lower-case vowel: learnable from any prompt."""

    answer_instruction = ""

    def reward(self, prediction: str, sample: Sample) -> float:
        return 1.0 if prediction[:1] and prediction[0] in VOWELS else 0.0


def vowel_examples(n: int, image: bool = False) -> list[Example]:
    task = VowelTask("vowel")
    picture = Image.new("RGB", (56, 56), (200, 40, 40)) if image else None
    return [Example(task, Sample(id=str(i), question=f"Say something about item {i}.", answer="a", images=(picture,) if picture else ()))
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    with torch.no_grad():
        # A random head with std 0.02 gives almost uniform logits that no adapter can move far;
        # a sharper head makes the toy policy steerable in a few steps.
        model.lm_head.weight.mul_(8.0)
    model = add_lora(model, LoraConfig(r=8, alpha=16))
    return model, processor


@pytest.fixture
def policy(tiny):
    model, processor = tiny
    reset_adapter(model, seed=0)
    model.zero_grad(set_to_none=True)
    return model, processor


def lora_params(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def arm_config(**rft) -> ArmConfig:
    settings = {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 2, "cot": False, "kl": False}
    settings.update(rft)
    return arm_entry(name="rft", lr=2e-2, rft=settings)


def scripted_rollouts(processor, examples: list[Example], rewards: list[float], group_size: int) -> Rollouts:
    """Fixed responses ("a" / "b" tokens + end of turn) with the given rewards."""
    tokenizer = processor.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = [tokenizer("a" if r else "b", add_special_tokens=False)["input_ids"] + [end] for r in rewards]
    return Rollouts(examples=examples, group_size=group_size, token_ids=ids,
                    texts=["a" if r else "b" for r in rewards], rewards=torch.tensor(rewards))


def test_equal_reward_groups_give_exactly_zero_gradient(policy):
    model, processor = policy
    arm = arm_config()
    examples = vowel_examples(2)
    # Group 0 is always right, group 1 always wrong: no variance anywhere.
    flat = scripted_rollouts(processor, examples, [1, 1, 1, 1, 0, 0, 0, 0], group_size=4)
    advantages = compute_advantages(flat, arm.rft)
    assert torch.equal(advantages, torch.zeros(8))
    # The full loss path over every row, including the zero-advantage ones.
    with torch.no_grad():  # a non-zero adapter, so that a wrong path would leak gradient
        for p in lora_params(model).values():
            p.add_(0.05 * torch.randn_like(p))
    rows = list(range(8))
    micro = prepare_micro_batches(model, processor, flat, rows, advantages, arm.rft, Knobs(3, None, 8))
    accumulate_policy_gradient(model, micro, arm.rft, total_tokens=16, total_rows=8)
    grads = [p.grad for p in lora_params(model).values()]
    assert all(g is not None for g in grads)
    assert all(torch.count_nonzero(g) == 0 for g in grads)

    # The same path with one informative group does produce a gradient (the check can fail).
    model.zero_grad(set_to_none=True)
    mixed = scripted_rollouts(processor, examples, [1, 1, 1, 1, 1, 0, 0, 1], group_size=4)
    advantages = compute_advantages(mixed, arm.rft)
    assert torch.equal(advantages[:4], torch.zeros(4)) and advantages[4:].abs().min() > 0
    micro = prepare_micro_batches(model, processor, mixed, rows, advantages, arm.rft, Knobs(3, None, 8))
    accumulate_policy_gradient(model, micro, arm.rft, total_tokens=16, total_rows=8)
    with_flat_group = {n: p.grad.clone() for n, p in lora_params(model).items()}
    assert any(torch.count_nonzero(g) > 0 for g in with_flat_group.values())

    # ...and the always-right group adds nothing to it: scoring only the informative rows
    # (with the same batch normaliser) gives the same gradient.
    model.zero_grad(set_to_none=True)
    micro = prepare_micro_batches(model, processor, mixed, [4, 5, 6, 7], advantages, arm.rft, Knobs(4, None, 8))
    accumulate_policy_gradient(model, micro, arm.rft, total_tokens=16, total_rows=8)
    for name, p in lora_params(model).items():
        torch.testing.assert_close(p.grad, with_flat_group[name], rtol=1e-4, atol=1e-6)


def test_batch_without_reward_variance_makes_no_update(policy):
    model, processor = policy
    arm = arm_config()
    rollouts = scripted_rollouts(processor, vowel_examples(2), [1, 1, 1, 1, 0, 0, 0, 0], group_size=4)
    params = list(lora_params(model).values())
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1.0, weight_decay=0.1)
    result = policy_update(model, processor, optimizer, rollouts, arm, Phase(Knobs(4, None, 8)))
    assert result["updated"] is False and result["loss"] == 0.0 and result["trained_tokens"] == 0
    assert not optimizer.state  # not even weight decay or momentum touched the adapter
    assert all(torch.equal(a, b) for a, b in zip(before, params))


def test_response_with_an_image_placeholder_is_left_out_of_the_gradient(policy):
    model, processor = policy
    arm = arm_config()
    rollouts = scripted_rollouts(processor, vowel_examples(2, image=True), [1, 0, 0, 0, 1, 1, 0, 0], group_size=4)
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    rollouts.token_ids[1] = [image_pad] + rollouts.token_ids[1]  # sampled by an untrained policy
    params = list(lora_params(model).values())
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    result = policy_update(model, processor, optimizer, rollouts, arm, Phase(Knobs(8, None, 8)))
    assert result["updated"] and result["unscorable_rollouts"] == 1
    assert result["trained_tokens"] == 7 * 2  # the other seven responses, two tokens each


def test_grpo_raises_the_reward_and_moves_only_the_adapter(policy):
    model, processor = policy
    arm = arm_config(group_size=8, prompts_per_step=4, max_new_tokens=1)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapter = {n: p.detach().clone() for n, p in lora_params(model).items()}
    examples = vowel_examples(16)

    def mean_reward() -> float:  # 128 sampled answers under a fixed seed
        return float(generate_rollouts(model, processor, examples, arm.rft, group_size=8, generator_seed=99).rewards.mean())

    before = mean_reward()
    stats = train_rft(model, processor, examples, arm, Phase(Knobs(32, None, 8)), updates=20)
    after = mean_reward()
    # From ~0.12 (chance) to ~0.9; a flipped gradient sign drives it to ~0.05 instead.
    assert before < 0.3 and after > before + 0.4, (before, after)
    assert stats.steps > 0 and stats.generated_tokens == 20 * 4 * 8
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)
    assert any(not torch.equal(p, adapter[n]) for n, p in lora_params(model).items())


@pytest.mark.parametrize("reference", ["previous_task", "base"])
def test_kl_reference_is_scored_only_when_the_kl_is_on(policy, monkeypatch, reference):
    model, processor = policy
    calls = []
    original = update_module.reference_policy

    def counting_reference_policy(model, kind):
        calls.append(kind)
        return original(model, kind)

    monkeypatch.setattr(update_module, "reference_policy", counting_reference_policy)
    records: list[dict] = []
    train_rft(model, processor, vowel_examples(4), arm_config(max_new_tokens=1, kl=False),
              Phase(KNOBS, seed=1, on_step=records.append), updates=3)
    assert calls == [] and all(r["kl"] == 0.0 for r in records)

    records.clear()
    arm = arm_config(max_new_tokens=1, kl=True, kl_beta=0.5, kl_reference=reference)
    stats = train_rft(model, processor, vowel_examples(4), arm, Phase(KNOBS, seed=1, on_step=records.append),
                      updates=3)
    assert calls and set(calls) == {reference}
    assert stats.steps == 3  # with the KL on, every rollout is scored and every batch steps
    # The adapter has moved away from the reference by the later steps: a positive k3 estimate.
    assert records[0]["kl"] >= 0.0 and records[-1]["kl"] > 0.0


def test_update_count_records_and_arms(policy):
    model, processor = policy
    arm = arm_config(max_new_tokens=2, inner_epochs=2)
    records: list[dict] = []
    stats = train_rft(model, processor, vowel_examples(5), arm, Phase(KNOBS, epochs=1.5, on_step=records.append))
    assert len(records) == math.ceil(5 * 1.5 / 2)  # ceil(n * epochs / prompts_per_step)
    assert {"loss", "reward_mean", "reward_std", "zero_variance_fraction", "kl", "clip_fraction", "entropy",
            "generated_tokens", "trained_tokens", "seconds"} <= set(records[0])
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    assert all(0 < r["step_seconds"] <= r["seconds"] <= stats.seconds for r in records)
    assert stats.generated_tokens == sum(r["generated_tokens"] for r in records)
    assert stats.trained_tokens == sum(r["trained_tokens"] for r in records)
    # the time breakdown the task_end record compares with the time plan, to 0.1 ms
    measured = stats.extra["phase_seconds"]
    assert set(measured) == {"rollout", "logprob_pass", "grpo_step"}
    assert measured["rollout"] > 0 and measured["grpo_step"] > 0 and measured["logprob_pass"] >= 0
    assert sum(measured.values()) <= stats.seconds + 1e-3
    capped = arm_entry(name="rft", max_steps_per_task=2, rft=arm.rft)
    assert len(_records_of(model, processor, capped, vowel_examples(5))) == 2

    phase = Phase(index=1, name="vowel", seed=0, epochs=1.0, knobs=Knobs(4, 4096, 4), on_step=lambda r: None,
                  progress=lambda *_: None)
    for name, cls, joint in (("rft", SequentialRFT, False), ("multitask_rft", JointRFT, True)):
        method = build_arm(arm_entry(name=name, rft=arm.rft), model, processor, lambda _: [])
        assert type(method) is cls and method.joint is joint
    assert method.train(vowel_examples(2), phase).steps <= 1


def test_a_step_of_one_prompt_trains_on_that_prompts_group(policy):
    model, processor = policy
    records: list[dict] = []
    stats = train_rft(model, processor, vowel_examples(3), arm_config(prompts_per_step=1, max_new_tokens=1),
                      Phase(KNOBS, on_step=records.append), updates=2)
    assert len(records) == 2 and stats.generated_tokens == sum(r["generated_tokens"] for r in records) >= 2 * 4


def test_a_phase_without_examples_makes_no_update(policy):
    model, processor = policy
    before = lora_snapshot(model)
    records: list[dict] = []
    stats = train_rft(model, processor, [], arm_config(), Phase(KNOBS, on_step=records.append), updates=3)
    assert (stats.steps, stats.generated_tokens, records) == (0, 0, [])
    assert all(torch.equal(p, before[n]) for n, p in lora_params(model).items())


def test_rollouts_read_only_the_tasks_last_prompt_tokens(policy):
    """Rollouts are sampled from prompts cut (on the left) to the task's max_prompt_tokens: two
    prompts that differ only before that window give the same answers under one seed."""
    from lite_cpt.recipe_tasks import TaskConfig

    model, processor = policy
    rft = arm_config(max_new_tokens=4).rft

    def answers(head: str, limit: int) -> list[list[int]]:
        task = VowelTask("vowel", config=TaskConfig(name="vowel", type="textvqa", max_prompt_tokens=limit))
        question = head + ", then more" * 8 + ". Say something about item 3."
        example = Example(task, Sample(id="3", question=question, answer="a"))
        return generate_rollouts(model, processor, [example], rft, group_size=4, generator_seed=11).token_ids

    assert answers("Zebra", 1024) != answers("Apple", 1024), "the whole prompt is read when it fits"
    assert answers("Zebra", 24) == answers("Apple", 24)


def _records_of(model, processor, arm, examples) -> list[dict]:
    records: list[dict] = []
    train_rft(model, processor, examples, arm, Phase(KNOBS, on_step=records.append))
    return records


def test_rollouts_are_reproducible_and_remax_scores_a_greedy_baseline(policy):
    model, processor = policy
    rft = arm_config(max_new_tokens=4).rft
    examples = vowel_examples(3)
    first = generate_rollouts(model, processor, examples, rft, group_size=4, generator_seed=7)
    again = generate_rollouts(model, processor, examples, rft, group_size=4, generator_seed=7)
    other = generate_rollouts(model, processor, examples, rft, group_size=4, generator_seed=8)
    assert first.token_ids == again.token_ids and torch.equal(first.rewards, again.rewards)
    assert first.token_ids != other.token_ids
    assert first.baseline is None and first.generated_tokens == sum(map(len, first.token_ids))

    remax = arm_config(max_new_tokens=4, advantage="remax").rft
    rollouts = generate_rollouts(model, processor, examples, remax, group_size=4, generator_seed=7, with_baseline=True)
    assert rollouts.baseline.shape == (3,) and len(rollouts.baseline_tokens) == 3
    advantages = compute_advantages(rollouts, remax)
    expected = rollouts.rewards.view(3, 4) - rollouts.baseline.view(3, 1)
    torch.testing.assert_close(advantages, expected.reshape(-1))


def test_a_phase_is_reproducible_from_its_seed(policy):
    model, processor = policy
    arm = arm_config(max_new_tokens=2)

    def adapter_after_phase(seed: int) -> list[torch.Tensor]:
        reset_adapter(model, seed=0)
        train_rft(model, processor, vowel_examples(6), arm, Phase(KNOBS, seed=seed), updates=2)
        return [p.detach().clone() for p in lora_params(model).values()]

    first = adapter_after_phase(5)
    assert all(torch.equal(a, b) for a, b in zip(first, adapter_after_phase(5)))
    assert not all(torch.equal(a, b) for a, b in zip(first, adapter_after_phase(6)))


def test_cot_reward_mixes_accuracy_and_format():
    task = TASK_TYPES["mini_scienceqa"]("scienceqa")
    sample = task.load("train", 1)[0]
    example = Example(task, sample)
    right, wrong = sample.answer, next(c for c in "ABCD" if c != sample.answer)
    cot = arm_config(cot=True, format_weight=0.1).rft
    assert "<think>" in task.prompt(sample, cot=True)
    assert rft_reward(example, f"<think>look</think><answer>{right}</answer>", cot) == pytest.approx(1.0)
    assert rft_reward(example, f"<think>look</think><answer>{wrong}</answer>", cot) == pytest.approx(0.1)
    # Right answer inside the tag but text around it: accuracy without the format reward.
    assert rft_reward(example, f"so <answer>{right}</answer>", cot) == pytest.approx(0.9)
    assert rft_reward(example, "no tags at all", cot) == 0.0
    plain = arm_config(cot=False).rft
    assert rft_reward(example, right, plain) == 1.0
    assert rft_reward(example, f"<answer>{right}</answer>", plain) == 0.0  # no extraction without CoT


def test_a_tasks_format_weight_overrides_the_arms():
    from lite_cpt.recipe_tasks import TaskConfig

    task = TASK_TYPES["mini_scienceqa"]("scienceqa", config=TaskConfig(name="scienceqa", type="mini_scienceqa",
                                                                       format_weight=0.5))
    sample = task.load("train", 1)[0]
    wrong = next(c for c in "ABCD" if c != sample.answer)
    cot = arm_config(cot=True, format_weight=0.1).rft
    # EasyR1's r1v weighting: a well-formatted wrong answer earns 0.5, not the arm's 0.1
    assert reward_parts(Example(task, sample), f"<think>t</think><answer>{wrong}</answer>", cot) == (0.5, 0.0)
    assert reward_parts(Example(task, sample), f"<answer>{sample.answer}</answer>", cot) == (0.5, 1.0)


# ----------------------------------------------------------------------------- KL reference, dropout, steps


def lora_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lora_params(model).items()}


def test_kl_reference_of_the_second_task_is_the_policy_after_the_first(policy, monkeypatch):
    model, processor = policy
    arm = arm_config(max_new_tokens=2, kl=True, kl_beta=0.1)  # kl_reference: previous_task (default)
    assert arm.rft.kl_reference == "previous_task"
    train_rft(model, processor, vowel_examples(4), arm, Phase(KNOBS, seed=1), updates=3)  # task 1
    after_task_1 = lora_snapshot(model)

    captured: list = []
    original = update_module.prepare_micro_batches

    def capturing(*args, **kwargs):
        micro_batches = original(*args, **kwargs)
        captured.extend(micro_batches)
        return micro_batches

    monkeypatch.setattr(update_module, "prepare_micro_batches", capturing)
    train_rft(model, processor, vowel_examples(4), arm, Phase(KNOBS, seed=2), updates=2)  # task 2
    assert captured and all(mb.ref_logp is not None for mb in captured)

    def logps(weights=None):
        with torch.no_grad():
            if weights is not None:
                for name, param in lora_params(model).items():
                    param.copy_(weights[name])
            return [mb.score(model, temperature=1.0).logp for mb in captured]

    after_task_2 = logps()
    with model.disable_adapter():
        base = logps()
    end_of_task_1 = logps(after_task_1)
    for mb, policy_1, base_row, policy_2 in zip(captured, end_of_task_1, base, after_task_2):
        torch.testing.assert_close(mb.ref_logp, policy_1, rtol=0, atol=1e-5)
        assert not torch.allclose(mb.ref_logp, base_row, atol=1e-3)
    assert any(not torch.allclose(a, b, atol=1e-3) for a, b in zip(after_task_2, end_of_task_1))


def test_no_dropout_in_any_rl_pass(monkeypatch):
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    model = add_lora(model, LoraConfig(r=8, alpha=16, dropout=0.5))
    with torch.no_grad():
        for p in lora_params(model).values():
            p.add_(0.2 * torch.randn_like(p))  # B != 0, so dropout would change the outputs
    calls = []
    original = update_module.grpo_loss

    def recording(logp, old_logp, *args, **kwargs):
        calls.append((logp.detach().clone(), old_logp.clone()))
        return original(logp, old_logp, *args, **kwargs)

    monkeypatch.setattr(update_module, "grpo_loss", recording)
    arm = arm_config(max_new_tokens=2, kl=True, kl_beta=0.1, inner_epochs=2)
    train_rft(model, processor, vowel_examples(4), arm, Phase(KNOBS, seed=1), updates=1)
    first_logp, first_old = calls[0]  # the first pass: the policy has not stepped yet
    torch.testing.assert_close(first_logp, first_old, rtol=0, atol=1e-5)  # ratio exactly 1
    assert any(m.p == 0.5 for m in model.modules() if isinstance(m, torch.nn.Dropout))  # restored for SFT


@pytest.mark.parametrize("mini_batches", [1, 2])
def test_mini_batches_per_rollout_step_with_the_old_policy_fixed(policy, monkeypatch, mini_batches):
    model, processor = policy
    calls = []
    original = update_module.grpo_loss

    def recording(logp, old_logp, advantages, *args, **kwargs):
        calls.append((logp.detach().clone(), old_logp.clone()))
        return original(logp, old_logp, advantages, *args, **kwargs)

    monkeypatch.setattr(update_module, "grpo_loss", recording)
    arm = arm_config(max_new_tokens=2, kl=True, kl_beta=0.1, prompts_per_step=2,
                     mini_batches_per_rollout=mini_batches)
    optimizer = torch.optim.AdamW(list(lora_params(model).values()), lr=arm.lr)
    rollouts = scripted_rollouts(processor, vowel_examples(2), [1, 0, 1, 0, 0, 1, 0, 1], group_size=4)
    result = policy_update(model, processor, optimizer, rollouts, arm, Phase(KNOBS))
    assert result["optimizer_steps"] == mini_batches
    assert len(calls) == mini_batches  # one micro-batch per mini-batch (whole groups of 4)
    torch.testing.assert_close(calls[0][0], calls[0][1], rtol=0, atol=1e-6)  # the first step is on-policy
    if mini_batches == 2:
        # the second mini-batch is scored by the stepped policy against the rollout-time one
        assert not torch.allclose(calls[1][0], calls[1][1], atol=1e-4)


def test_rl_arms_default_to_easyr1s_weight_decay(policy, monkeypatch):
    model, processor = policy
    seen = []
    original = torch.optim.AdamW

    def recording(params, **kwargs):
        seen.append(kwargs["weight_decay"])
        return original(params, **kwargs)

    monkeypatch.setattr(rft_module.torch.optim, "AdamW", recording)
    train_rft(model, processor, vowel_examples(2), arm_config(max_new_tokens=1), Phase(KNOBS, seed=1), updates=1)
    explicit = arm_entry(name="rft", weight_decay=0.0, rft={"group_size": 4, "max_new_tokens": 1, "cot": False})
    train_rft(model, processor, vowel_examples(2), explicit, Phase(KNOBS, seed=1), updates=1)
    assert seen == [1e-2, 0.0]
