"""Rollout-based instance filtering with a scripted policy whose success rates are known."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import lite_cpt.train.rft as rft_module
from lite_cpt.arms import build_arm
from lite_cpt.arms.rif.method import RIFRFT, band_selector, estimate_success, filter_instances, learnable_groups, measure_success
from lite_cpt.train.phase import Example, Knobs, Phase
from lite_cpt.recipe import arm_config
from lite_cpt.recipe_run import ArmConfig
from lite_cpt.train.rft import Rollouts
from lite_cpt.train.rollout import Completions
from lite_cpt.tasks.base import Sample, Task, exact_match

TOKENS_PER_ANSWER = 3  # every scripted answer is three tokens long


class YesTask(Task):
    answer_instruction = ""

    def reward(self, prediction: str, sample: Sample) -> float:
        return exact_match(prediction, [sample.answer])


def scripted_examples(rates: list[float]) -> list[Example]:
    """Instance i is answered correctly with probability rates[i] (exactly, over K rollouts)."""
    task = YesTask("scripted")
    return [Example(task, Sample(id=str(i), question=f"q{i}", answer="yes", meta={"rate": rate}))
            for i, rate in enumerate(rates)]


@pytest.fixture
def scripted_policy(monkeypatch):
    """Replace generation: of the G answers to instance i, round(rate_i * G) are right.
    Returns the log of generate calls: (prompt texts, group size)."""
    calls: list[tuple[list[str], int]] = []
    by_question: dict[str, float] = {}

    def fake_generate(model, processor, prompts, sampling, **settings):
        group_size = sampling.group_size
        calls.append(([p.text for p in prompts], group_size))
        fake_generate.sources.append((model, processor, settings.get("generator_seed")))
        if fake_generate.texts is not None:
            return completions(prompts, group_size, fake_generate.texts(prompts, group_size))
        texts = []
        for prompt in prompts:
            right = round(by_question[prompt.text] * group_size)
            texts += ["yes"] * right + ["no"] * (group_size - right)
        return completions(prompts, group_size, texts)

    def completions(prompts, group_size, texts):
        ids = [[1] * TOKENS_PER_ANSWER for _ in texts]
        return Completions(prompts, group_size, ids, texts, sum(map(len, ids)))

    def register(examples: list[Example]) -> list[Example]:
        for e in examples:
            by_question[e.prompt().text] = e.sample.meta["rate"]
        return examples

    monkeypatch.setattr(rft_module, "generate_completions", fake_generate)
    fake_generate.register = register
    fake_generate.calls = calls
    fake_generate.sources = []  # (model, processor, generator seed) of every generate call
    fake_generate.texts = None  # optional (prompts, group_size) -> texts, replacing the scripted ones
    return fake_generate


@pytest.fixture
def trained_batches(monkeypatch):
    """Record the groups each policy update receives instead of running the model."""
    batches: list[list[str]] = []

    def fake_update(model, processor, optimizer, rollouts, arm, phase, guard=None, update_index=0):
        batches.append([e.sample.id for e in rollouts.examples])
        assert len(rollouts.token_ids) == rollouts.num_groups * arm.rft.group_size
        return {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "dual_clip_fraction": 0.0, "entropy": None,
                "trained_tokens": len(rollouts.token_ids) * TOKENS_PER_ANSWER, "updated": True,
                "nonfinite_skipped": 0, "unscorable_rollouts": 0}

    monkeypatch.setattr(rft_module, "policy_update", fake_update)
    return batches


def rif_arm(**rif) -> ArmConfig:
    return arm_config(name="rif_rft", rft={"group_size": 4, "prompts_per_step": 2, "cot": False, "kl": False},
                     rif={"rollouts": 4, **rif})


def phase(records: list | None = None) -> Phase:
    return Phase(index=1, name="scripted", seed=3, epochs=1.0, knobs=Knobs(4, 4096, 4),
                 on_step=(records.append if records is not None else lambda r: None), progress=lambda *_: None)


RATES = [0.0, 0.25, 0.5, 0.75, 1.0, 0.5, 0.0, 1.0]


def test_success_estimate_is_the_mean_reward_over_k_rollouts(scripted_policy):
    examples = scripted_policy.register(scripted_examples(RATES))
    rft = rif_arm().rft
    assert estimate_success(None, None, examples, 4, rft, seed=0) == RATES
    estimate = measure_success(None, None, examples, 4, rft, seed=0, rollout_batch_size=3)
    assert estimate.rates == RATES
    assert estimate.generated_tokens == len(RATES) * 4 * TOKENS_PER_ANSWER
    assert [len(texts) for texts, _ in scripted_policy.calls[-3:]] == [3, 3, 2]  # batched 3 at a time
    assert all(group == 4 for _, group in scripted_policy.calls)


def test_the_estimate_samples_the_given_policy_with_seeds_of_the_run(scripted_policy):
    examples = scripted_policy.register(scripted_examples(RATES))
    rft = rif_arm().rft
    policy, processor = torch.nn.Linear(2, 2), object()
    estimate_success(policy, processor, examples, 4, rft, seed=0)
    assert scripted_policy.sources and all(m is policy and p is processor for m, p, _ in scripted_policy.sources)

    def seeds(seed: int) -> list[int]:
        scripted_policy.sources.clear()
        measure_success(policy, processor, examples, 4, rft, seed=seed, rollout_batch_size=3)
        return [generator_seed for _, _, generator_seed in scripted_policy.sources]

    first = seeds(0)
    assert len(set(first)) == 3, "each batch of instances draws its own samples"
    assert seeds(0) == first, "the same run seed draws the same samples"
    assert not set(seeds(1)) & set(first), "another run seed draws other samples"
    second = seeds(1)
    scripted_policy.sources.clear()
    estimate_success(policy, processor, examples, 4, rft, seed=1)
    assert scripted_policy.sources[0][2] == second[0], "estimate_success passes its seed on"


@pytest.mark.parametrize("low, high, kept", [
    (0.0, 1.0, [1, 2, 3, 5]),       # drops always-wrong and always-right
    (0.25, 1.0, [2, 3, 5]),          # strictly above low
    (0.0, 0.75, [1, 2, 5]),          # strictly below high
    (0.3, 0.6, [2, 5]),
    (0.5, 0.75, []),
])
def test_filter_keeps_exactly_the_instances_inside_the_band(scripted_policy, low, high, kept):
    examples = scripted_policy.register(scripted_examples(RATES))
    success = estimate_success(None, None, examples, 4, rif_arm().rft, seed=0)
    assert filter_instances(examples, success, low, high) == [examples[i] for i in kept]


@pytest.mark.parametrize("budget, updates", [("filtered", math.ceil(4 / 2)), ("matched", math.ceil(8 / 2))])
def test_offline_filtering_trains_the_kept_instances_for_the_budget(scripted_policy, trained_batches, budget, updates):
    examples = scripted_policy.register(scripted_examples(RATES))
    model = torch.nn.Linear(2, 2)
    method = build_arm(rif_arm(mode="offline", budget=budget), model, None, lambda _: [])
    assert isinstance(method, RIFRFT)
    stats = method.train(examples, phase())
    assert len(trained_batches) == updates == stats.steps
    assert {i for batch in trained_batches for i in batch} == {"1", "2", "3", "5"}
    assert stats.extra["kept_fraction"] == 4 / 8
    filter_tokens = 8 * 4 * TOKENS_PER_ANSWER  # K = 4 rollouts of every instance
    assert stats.extra["rif_generated_tokens"] == filter_tokens
    assert stats.generated_tokens == filter_tokens + updates * 2 * 4 * TOKENS_PER_ANSWER
    assert stats.extra["rif_seconds"] >= 0


def test_offline_filtering_draws_from_the_phase_seed(scripted_policy, trained_batches):
    examples = scripted_policy.register(scripted_examples(RATES))

    def filtering_seeds(seed: int) -> list[int]:
        scripted_policy.sources.clear()
        run = phase()
        run.seed = seed
        RIFRFT(rif_arm(mode="offline"), torch.nn.Linear(2, 2), None, lambda _: []).train(examples, run)
        # the filtering calls come first, one per rollout batch of instances; training's follow
        filtering = math.ceil(len(examples) / run.knobs.rollout_batch_size)
        return [generator_seed for _, _, generator_seed in scripted_policy.sources[:filtering]]

    by_seed = {seed: filtering_seeds(seed) for seed in range(4)}
    assert filtering_seeds(0) == by_seed[0], "a rerun of the phase samples the same rollouts"
    assert len({tuple(seeds) for seeds in by_seed.values()}) == 4, "each phase seed samples its own"
    # Rollout seeds keep the 31-bit width every recorded run was sampled with.
    assert all(0 <= s < 2**rft_module.ROLLOUT_SEED_BITS for seeds in by_seed.values() for s in seeds)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_nothing_learnable_skips_the_task(scripted_policy, trained_batches, mode, caplog):
    examples = scripted_policy.register(scripted_examples([0.0, 1.0, 0.0, 1.0]))
    caplog.set_level("WARNING", logger="lite_cpt.arms.rif")
    stats = RIFRFT(rif_arm(mode=mode, budget="matched"), torch.nn.Linear(2, 2), None, lambda _: []).train(
        examples, phase())
    assert trained_batches == [] and stats.steps == 0
    assert stats.extra["kept_fraction"] == 0.0
    assert stats.generated_tokens == stats.extra["rif_generated_tokens"] == 4 * 4 * TOKENS_PER_ANSWER
    said = {"offline": "rif_rft: rollout filtering kept no instance of task scripted (band (0.0, 1.0)); "
                       "skipping its training",
            "online": "rif_rft: online filtering found no instance of task scripted inside (0.0, 1.0); "
                      "no update was made"}
    assert [r.getMessage() for r in caplog.records] == [said[mode]], "the warning names the arm, task and band"


class MemoCheckpoint:
    """The part of a mid-phase checkpoint the offline estimate uses: `memo`, holding `saved`
    (a checkpoint written after the estimate) or computing it (a fresh phase)."""

    def __init__(self, saved: dict | None = None):
        self.saved, self.keys = saved, []

    def memo(self, key, compute):
        self.keys.append(key)
        return self.saved if self.saved is not None else compute()


def test_a_resumed_offline_phase_takes_its_estimate_from_the_checkpoint(scripted_policy, trained_batches):
    """Resumed mid-task, the estimate is the one made before the task (saved with the checkpoint),
    not a new measurement of the half-trained policy: here it kept nothing, so nothing trains,
    although the policy as it is now would find every instance learnable."""
    examples = scripted_policy.register(scripted_examples([0.5, 0.5, 0.5, 0.5]))
    saved = {"rates": [0.0, 1.0, 0.0, 1.0], "generated_tokens": 123, "seconds": 1.5, "varied": [False] * 4}
    checkpoint = MemoCheckpoint(saved)
    run = dataclasses.replace(phase(), checkpoint=checkpoint)
    stats = RIFRFT(rif_arm(mode="offline"), torch.nn.Linear(2, 2), None, lambda _: []).train(examples, run)
    assert checkpoint.keys == ["rif_offline"]
    assert scripted_policy.calls == [] and trained_batches == []
    assert stats.extra == {"kept_fraction": 0.0, "rif_generated_tokens": 123, "rif_seconds": 1.5}
    # A fresh phase with a checkpointer measures (once), as a phase without one does.
    unlearnable = scripted_policy.register(scripted_examples([0.0, 1.0]))
    fresh = MemoCheckpoint()
    measured = RIFRFT(rif_arm(mode="offline"), torch.nn.Linear(2, 2), None, lambda _: []).train(
        unlearnable, dataclasses.replace(phase(), checkpoint=fresh))
    assert fresh.keys == ["rif_offline"] and scripted_policy.calls != []
    assert measured.extra["kept_fraction"] == 0.0 and measured.extra["rif_generated_tokens"] == 2 * 4 * TOKENS_PER_ANSWER


def test_a_task_with_no_instances_keeps_nothing(scripted_policy, trained_batches):
    stats = RIFRFT(rif_arm(mode="offline"), torch.nn.Linear(2, 2), None, lambda _: []).train([], phase())
    assert trained_batches == [] and stats.steps == 0 and scripted_policy.calls == []
    assert stats.extra["kept_fraction"] == 0.0 and stats.generated_tokens == 0


def test_online_filtering_refills_batches_and_counts_rollouts(scripted_policy, trained_batches):
    # 12 instances, of which 4 are learnable: every batch of 2 groups needs redrawing.
    rates = [0.0, 0.5, 1.0, 0.0, 0.25, 1.0, 0.0, 1.0, 0.75, 0.0, 0.5, 1.0]
    learnable = {"1", "4", "8", "10"}
    examples = scripted_policy.register(scripted_examples(rates))
    records: list[dict] = []
    arm = rif_arm(mode="online", budget="matched")
    stats = RIFRFT(arm, torch.nn.Linear(2, 2), None, lambda _: []).train(examples, phase(records))

    assert len(trained_batches) == math.ceil(12 / 2) == stats.steps  # matched: RFT's update count
    assert all(len(batch) == 2 and set(batch) <= learnable for batch in trained_batches)
    drawn = sum(r["drawn_groups"] for r in records)
    assert [r["kept_groups"] for r in records] == [2] * 6
    # The groups' own rollouts are trained on: nothing but G rollouts per drawn prompt is generated.
    assert sum(len(texts) for texts, _ in scripted_policy.calls) == drawn
    assert all(group == arm.rft.group_size for _, group in scripted_policy.calls)
    assert stats.generated_tokens == drawn * 4 * TOKENS_PER_ANSWER
    assert stats.extra["rif_generated_tokens"] == (drawn - 12) * 4 * TOKENS_PER_ANSWER
    assert stats.extra["kept_fraction"] == pytest.approx(12 / drawn)
    assert 0 <= stats.extra["rif_seconds"] <= stats.seconds, "the generation time of the dropped groups"
    assert all(r["generated_tokens"] == r["drawn_groups"] * 4 * TOKENS_PER_ANSWER for r in records)

    # filtered: one pass over the instances is drawn, so each learnable one is trained once.
    trained_batches.clear()
    filtered = RIFRFT(rif_arm(mode="online", budget="filtered"), torch.nn.Linear(2, 2), None,
                      lambda _: []).train(examples, phase())
    assert sorted(i for batch in trained_batches for i in batch) == sorted(learnable)
    assert filtered.steps == 2 and filtered.extra["kept_fraction"] == pytest.approx(4 / 12)


# ----------------------------------------------------------------------------- learnability


def zero_advantage_groups() -> Rollouts:
    """Five answers to each of four prompts, with the rewards of chain-of-thought RL (format
    weight 0.1) and of the soft VQA metric: three groups whose rewards are all equal although
    their mean lies inside (0, 1), and one learnable group."""
    rewards = ([0.1] * 5        # always formatted, always wrong
               + [0.9] * 5      # always right, never formatted
               + [0.64] * 5     # five identical soft VQA answers
               + [1.0, 0.1, 1.0, 0.1, 0.1])
    accuracies = [0.0] * 5 + [1.0] * 5 + [0.64] * 5 + [1.0, 0.0, 1.0, 0.0, 0.0]
    examples = scripted_examples([0.0, 1.0, 0.64, 0.4])
    return Rollouts(examples=examples, group_size=5, token_ids=[[1]] * 20, texts=[""] * 20,
                    rewards=torch.tensor(rewards), accuracies=torch.tensor(accuracies))


def test_filtering_keeps_only_groups_with_a_gradient():
    rollouts = zero_advantage_groups()
    assert rollouts.group_means().tolist() == pytest.approx([0.1, 0.9, 0.64, 0.46])  # all inside (0, 1)
    assert rollouts.success_rates().tolist() == pytest.approx([0.0, 1.0, 0.64, 0.4])
    assert learnable_groups(rollouts, 0.0, 1.0) == [3]
    assert band_selector(0.0, 1.0)(rollouts) == [3]
    assert learnable_groups(rollouts, 0.5, 1.0) == []  # the band reads the success rate, 0.4
    # The band is open at both ends: a success rate equal to a bound is outside it.
    rate = rollouts.success_rates().tolist()[3]  # 2 of 5 right: 0.4 in float32
    assert learnable_groups(rollouts, rate - 1e-6, 1.0) == [3]
    assert learnable_groups(rollouts, rate, 1.0) == []
    assert learnable_groups(rollouts, 0.0, rate + 1e-6) == [3]
    assert learnable_groups(rollouts, 0.0, rate) == []


def test_offline_filter_reads_the_accuracy_and_drops_flat_groups(scripted_policy):
    class CoTYesTask(YesTask):
        pass

    task = CoTYesTask("cot")
    examples = [Example(task, Sample(id=str(i), question=f"c{i}", answer="yes", meta={"rate": 0.0}))
                for i in range(3)]
    examples = scripted_policy.register(examples)

    def formatted(prompts, group_size):  # every answer well formatted; instance 2 right half the time
        texts = []
        for i, _ in enumerate(prompts):
            answers = ["no"] * group_size if i < 2 else ["yes", "no"] * (group_size // 2)
            texts += [f"<think>t</think><answer>{a}</answer>" for a in answers]
        return texts

    scripted_policy.texts = formatted
    rft = arm_config(name="rif_rft", rft={"group_size": 4, "cot": True, "format_weight": 0.1}).rft
    estimate = measure_success(None, None, examples, 4, rft, seed=0)
    assert estimate.rates == [0.0, 0.0, 0.5]  # accuracy, not the 0.1 the format term gives
    assert estimate.varied == [False, False, True]
    assert filter_instances(examples, estimate.rates, 0.0, 1.0, estimate.varied) == [examples[2]]
