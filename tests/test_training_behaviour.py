"""What a training step must do, checked against losses written out independently here.

The references below use the model's own full logits and plain torch (no fused kernel, no
micro-batching, no production normaliser), so a wrong sign, a wrong normaliser or rows that
drift away from their rewards show up as a gradient that differs from the reference.
Gradients are read where the training loops clip them (`torch.nn.utils.clip_grad_norm_`),
i.e. exactly what the optimizer is about to step on.
"""

from __future__ import annotations

import random
import zlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lite_cpt.train.batching import IGNORE_INDEX, append_tokens, collate, encode_prompts, encode_sft, tokenizer_of
from lite_cpt.run.continual import reset_adapter
from lite_cpt.kernels import reference_grpo_advantages
from lite_cpt.models import add_lora
from lite_cpt.recipe import arm_config
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.recipe_run import ArmConfig
from lite_cpt.recipe_tasks import TaskConfig
from lite_cpt.train.policy_update import policy_update
from lite_cpt.train.rft import Rollouts, rft_reward, train_rft
from lite_cpt.arms.rif.method import band_selector, filter_instances
from lite_cpt.train.phase import Example, Knobs, Phase, micro_batches, pack_by_tokens
from lite_cpt.train.sft import SFTHooks, encode_examples, sft_loss_sum, train_sft
from lite_cpt.tasks.base import Sample, Task
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus

# Answers of different token lengths, so that any per-micro-batch normaliser weighs rows wrongly.
ANSWERS = ["a", "b c", "red square", "the quick brown fox", "7", "blue circle left", "no", "yes it is"]


class FixedAnswerTask(Task):
    answer_instruction = ""

    def reward(self, prediction: str, sample: Sample) -> float:
        return float(prediction == sample.answer)


class HashedRewardTask(Task):
    """A reward that depends on both the sample and the text (0 or 1, fixed per pair): any row
    that drifts to another sample's or another text's reward is visible."""

    answer_instruction = ""

    def reward(self, prediction: str, sample: Sample) -> float:
        return float(zlib.crc32(f"{sample.id}|{prediction}".encode()) % 2)


def examples(task: Task, n: int) -> list[Example]:
    return [Example(task, Sample(id=str(i), question=f"Describe item {i}.", answer=ANSWERS[i % len(ANSWERS)]))
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # a steerable toy policy (see tests/test_rft.py)
    return add_lora(model, LoraConfig(r=8, alpha=16)), processor


@pytest.fixture
def model(tiny):
    """A non-zero adapter (LoRA B = 0 would leave A's gradient at exactly 0, hiding errors)."""
    model, processor = tiny
    reset_adapter(model, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trainable(model).values():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    model.zero_grad(set_to_none=True)
    return model, processor


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def stepped_grads(monkeypatch):
    """The gradients each optimizer step of the code under test is about to use."""
    seen: list[dict[str, torch.Tensor]] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, *args, **kwargs):
        params = list(params)
        seen.append({str(i): p.grad.detach().clone() for i, p in enumerate(params) if p.grad is not None})
        return clip(params, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    return seen


def reference_grad(model, loss_fn) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    grads = {str(i): p.grad.detach().clone() for i, p in enumerate(trainable(model).values())}
    model.zero_grad(set_to_none=True)
    return grads


def assert_same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    assert any(torch.count_nonzero(g) for g in want.values()), "the reference gradient must not be trivially 0"
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=2e-4, atol=1e-6)


def full_logits_logp(model, batch: dict, labels: torch.Tensor, temperature: float = 1.0):
    """log p(label) at every labelled position from the model's own logits; mask of those positions."""
    logits = model(**batch).logits[:, :-1].float() / temperature
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask.float()


# ----------------------------------------------------------------------------- SFT


def sft_nll(model, processor, batch_examples: list[Example], max_answer_tokens: int = 64) -> torch.Tensor:
    """Token-mean NLL of the answers over the whole batch, from full logits."""
    batch, labels = encode_sft(processor, [e.prompt() for e in batch_examples],
                               [e.task.target(e.sample) for e in batch_examples],
                               max_prompt_tokens=1024, max_answer_tokens=max_answer_tokens)
    logp, mask = full_logits_logp(model, batch, labels)
    return -logp.sum() / mask.sum()


@pytest.mark.parametrize("micro_batch_size", [1, 3, 8])
def test_sft_step_gradient_is_the_whole_batch_token_mean_nll(model, stepped_grads, micro_batch_size):
    model, processor = model
    batch = examples(FixedAnswerTask("fixed"), 8)
    want = reference_grad(model, lambda: sft_nll(model, processor, batch))
    train_sft(model, processor, batch, arm_config(name="sft", batch_size=8, max_steps_per_task=1, grad_clip=1e9).model_copy(update={"lr": 0.0}),
              Phase(Knobs(micro_batch_size, None, 8)))
    [got] = stepped_grads
    assert_same_grads(got, want)


def test_sft_lowers_the_training_nll(model):
    model, processor = model
    batch = examples(FixedAnswerTask("fixed"), 8)
    with torch.no_grad():
        before = float(sft_nll(model, processor, batch))
    train_sft(model, processor, batch, arm_config(name="sft", lr=5e-3, batch_size=4), Phase(Knobs(2, None, 8), epochs=4))
    with torch.no_grad():
        after = float(sft_nll(model, processor, batch))
    assert after < 0.7 * before, (before, after)


def one_logged_step(model, processor, batch_examples: list[Example], hooks: SFTHooks | None = None) -> dict:
    """The record of one SFT step over the whole batch that leaves the weights as they were."""
    records = []
    arm = arm_config(name="sft", batch_size=len(batch_examples), max_steps_per_task=1).model_copy(update={"lr": 0.0})
    train_sft(model, processor, batch_examples, arm, Phase(Knobs(3, None, 8), on_step=records.append), hooks)
    [record] = records
    return record


def test_sft_trains_on_answers_cut_to_the_tasks_limit(model):
    model, processor = model
    task = FixedAnswerTask("fixed", config=TaskConfig(name="fixed", type="textvqa", max_answer_tokens=2))
    batch = examples(task, 8)
    record = one_logged_step(model, processor, batch)
    answer_lengths = [len(tokenizer_of(processor)(e.sample.answer)["input_ids"]) for e in batch]
    assert max(answer_lengths) > 2
    assert record["tokens"] == sum(min(n, 2) + 1 for n in answer_lengths), "each answer cut to 2, then end of turn"
    with torch.no_grad():
        assert record["loss"] == pytest.approx(float(sft_nll(model, processor, batch, max_answer_tokens=2)), rel=1e-4)


def test_sft_step_loss_is_the_answer_nll_plus_the_hooks_penalty(model):
    model, processor = model
    batch = examples(FixedAnswerTask("fixed"), 4)
    plain = one_logged_step(model, processor, batch)["loss"]
    penalised = one_logged_step(model, processor, batch,
                                SFTHooks(extra_loss=lambda: torch.tensor(0.25, requires_grad=True)))["loss"]
    with torch.no_grad():
        assert plain == pytest.approx(float(sft_nll(model, processor, batch)), rel=1e-4)
    assert penalised == pytest.approx(plain + 0.25, rel=1e-5)


def test_sft_loss_of_a_task_without_limits_reads_the_last_1024_prompt_tokens(model):
    """A task built without a config (no max_prompt_tokens) keeps the recipe's default window:
    two prompts that differ only before their last 1024 tokens score the same."""
    model, processor = model
    task = FixedAnswerTask("fixed")

    def nll(head: str, clauses: int) -> float:
        question = head + ", then more" * clauses + ". Describe item 3."
        with torch.no_grad():
            total, n_tokens = sft_loss_sum(model, processor, [Example(task, Sample(id="0", question=question,
                                                                                   answer="red square"))])
        return float(total) / n_tokens

    assert len(tokenizer_of(processor)(", then more" * 200)["input_ids"]) > 1024
    assert nll("Zebra", 10) != pytest.approx(nll("Apple", 10), rel=1e-6), "a short prompt's head matters"
    assert nll("Zebra", 200) == pytest.approx(nll("Apple", 200), rel=1e-6)


@pytest.mark.parametrize("cot", [False, True])
def test_sft_rows_are_the_batch_encoding_of_the_prompts_and_targets(tiny, cot):
    """The rows an SFT step packs hold what the batch loss encodes: the prompt and target of
    each example, chain-of-thought ones when asked."""
    _, processor = tiny
    batch = examples(FixedAnswerTask("fixed"), 3)
    for example in batch:
        example.sample.meta["rationale"] = "count the items"
    got, labels = collate(encode_examples(processor, batch, cot=cot), tokenizer_of(processor).pad_token_id)
    want, want_labels = encode_sft(processor, [e.prompt(cot) for e in batch], [e.task.target(e.sample, cot) for e in batch],
                                   max_prompt_tokens=1024, max_answer_tokens=64)
    assert torch.equal(labels, want_labels)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


# ----------------------------------------------------------------------------- GRPO


def scripted_rollouts(processor, batch_examples: list[Example], rewards: list[float], group_size: int) -> Rollouts:
    """Responses of 1 to 5 tokens (plus end of turn), one per reward, cycling through ANSWERS."""
    tokenizer = tokenizer_of(processor)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    texts = [ANSWERS[(3 * i) % len(ANSWERS)] for i in range(len(rewards))]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:5] + [end] for t in texts]
    assert len({len(i) for i in ids}) > 2, "responses of several lengths"
    return Rollouts(examples=batch_examples, group_size=group_size, token_ids=ids, texts=texts,
                    rewards=torch.tensor(rewards, dtype=torch.float32))


def grpo_reference_loss(model, processor, rollouts: Rollouts, aggregation: str) -> torch.Tensor:
    """One pass over every rollout: -A * logp per token (the clipped surrogate's gradient at
    ratio 1), averaged over all tokens (token-mean) or per rollout then over all rollouts
    (seq-mean); rollouts with A = 0 contribute 0 but count in the average."""
    advantages = reference_grpo_advantages(rollouts.rewards, rollouts.group_size)
    prompts = [rollouts.examples[r // rollouts.group_size].prompt() for r in range(len(rollouts.texts))]
    batch = encode_prompts(processor, prompts)
    batch, labels = append_tokens(batch, rollouts.token_ids, tokenizer_of(processor).pad_token_id)
    logp, mask = full_logits_logp(model, batch, labels)
    per_token = -advantages.unsqueeze(1) * logp
    if aggregation == "token-mean":
        return per_token.sum() / mask.sum()
    return (per_token.sum(dim=1) / mask.sum(dim=1)).mean()


def grpo_arm(aggregation: str) -> ArmConfig:
    """An rft arm of 4 prompts x G=4 with no KL and no clipping of the gradient."""
    return arm_config(name="rft", lr=1e-3, grad_clip=1e9,
                     rft={"group_size": 4, "prompts_per_step": 4, "cot": False, "kl": False, "temperature": 1.0,
                          "aggregation": aggregation})


GRPO_REWARDS = [1, 0, 0, 1,  1, 1, 1, 1,  0, 0, 1, 0,  0, 0, 0, 0]  # groups 2 and 4 carry no signal


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean"])
@pytest.mark.parametrize("micro_batch_size", [1, 3, 16])
def test_policy_update_gradient_is_the_whole_batch_grpo_loss(model, stepped_grads, aggregation, micro_batch_size):
    model, processor = model
    arm = grpo_arm(aggregation)
    rollouts = scripted_rollouts(processor, examples(FixedAnswerTask("fixed"), 4), GRPO_REWARDS, 4)
    want = reference_grad(model, lambda: grpo_reference_loss(model, processor, rollouts, aggregation))
    params = list(trainable(model).values())
    optimizer = torch.optim.SGD(params, lr=0.0)
    result = policy_update(model, processor, optimizer, rollouts, arm, Phase(Knobs(micro_batch_size, None, 8)))
    assert result["updated"]
    [got] = stepped_grads
    assert_same_grads(got, want)


# ----------------------------------------------------------------------------- token-budget micro-batches


def mixed_length_examples(task: Task, n: int) -> list[Example]:
    """Questions of 1 to n clauses and answers of several token lengths: sequences of mixed length."""
    return [Example(task, Sample(id=str(i), question="Describe item %d" % i + ", then more" * (i * 5 % n),
                                 answer=ANSWERS[i % len(ANSWERS)])) for i in range(n)]


def sequence_lengths(processor, batch_examples: list[Example]) -> list[int]:
    from lite_cpt.train.sft import encode_examples

    return [row.length for row in encode_examples(processor, batch_examples)]


@pytest.mark.parametrize("budget", [1, 120, 200, 100_000])
def test_sft_token_budget_micro_batches_give_the_whole_batch_gradient(model, stepped_grads, budget):
    model, processor = model
    batch = mixed_length_examples(FixedAnswerTask("fixed"), 8)
    lengths = sequence_lengths(processor, batch)
    assert len(set(lengths)) > 3, lengths
    packed = pack_by_tokens(lengths, budget, 8)
    if budget in (120, 200):  # micro-batches of several sizes, each within the budget
        assert len({len(p) for p in packed}) > 1, packed
        assert all(len(p) * max(lengths[i] for i in p) <= budget for p in packed if len(p) > 1)
    want = reference_grad(model, lambda: sft_nll(model, processor, batch))
    arm = arm_config(name="sft", batch_size=8, max_steps_per_task=1, grad_clip=1e9).model_copy(update={"lr": 0.0})
    train_sft(model, processor, batch, arm, Phase(Knobs(8, None, 8, micro_batch_tokens=budget, packed_sequences=8)))
    [got] = stepped_grads
    assert_same_grads(got, want)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean"])
@pytest.mark.parametrize("budget", [1, 150, 100_000])
def test_policy_update_token_budget_micro_batches_give_the_whole_batch_gradient(model, stepped_grads,
                                                                                aggregation, budget):
    model, processor = model
    arm = grpo_arm(aggregation)
    rollouts = scripted_rollouts(processor, mixed_length_examples(FixedAnswerTask("fixed"), 4), GRPO_REWARDS, 4)
    want = reference_grad(model, lambda: grpo_reference_loss(model, processor, rollouts, aggregation))
    optimizer = torch.optim.SGD(list(trainable(model).values()), lr=0.0)
    phase = Phase(Knobs(16, None, 8, micro_batch_tokens=budget, packed_sequences=16))
    assert policy_update(model, processor, optimizer, rollouts, arm, phase)["updated"]
    [got] = stepped_grads
    assert_same_grads(got, want)


@given(st.lists(st.integers(1, 50), max_size=30), st.integers(1, 200), st.integers(1, 8))
def test_pack_by_tokens_keeps_every_sequence_once_within_budget_and_count(lengths, budget, max_sequences):
    packed = pack_by_tokens(lengths, budget, max_sequences)
    assert sorted(i for p in packed for i in p) == list(range(len(lengths)))
    for part in packed:
        assert 1 <= len(part) <= max_sequences
        assert len(part) == 1 or len(part) * max(lengths[i] for i in part) <= budget
    # greedy, longest first: a micro-batch closes only when the next sequence does not fit it
    for part, following in zip(packed, packed[1:]):
        nxt = following[0]
        assert len(part) == max_sequences or (len(part) + 1) * lengths[part[0]] > budget or lengths[nxt] > lengths[part[0]]


def test_fixed_count_micro_batches_without_a_budget():
    assert micro_batches([5, 3, 9, 1, 2], Knobs(2, None, 1)) == [[0, 1], [2, 3], [4]]
    assert micro_batches([5, 3, 9, 1, 2], Knobs(8, None, 1, micro_batch_tokens=10)) == [[2], [0, 1], [4, 3]]


# ----------------------------------------------------------------------------- rollouts and rewards


@st.composite
def rollout_cuts(draw):
    groups, size = draw(st.integers(1, 6)), draw(st.integers(2, 4))
    picks = draw(st.lists(st.lists(st.integers(0, groups - 1), max_size=groups), min_size=1, max_size=3))
    return groups, size, picks


def labelled_rollouts(groups: int, size: int, offset: int = 0) -> Rollouts:
    """Row (g, k) says who it is in its text, tokens, reward, accuracy and baseline."""
    task = FixedAnswerTask("t")
    rows = [(offset + g, k) for g in range(groups) for k in range(size)]
    return Rollouts(
        examples=[Example(task, Sample(id=str(offset + g), question="q", answer="a")) for g in range(groups)],
        group_size=size,
        token_ids=[[g, k] for g, k in rows],
        texts=[f"{g}:{k}" for g, k in rows],
        rewards=torch.tensor([g * 10.0 + k for g, k in rows]),
        accuracies=torch.tensor([(g * 10.0 + k) / 4 for g, k in rows]),  # the reward's accuracy part
        baseline=torch.tensor([offset + g * 1.0 for g in range(groups)]),
        baseline_tokens=[offset + g for g in range(groups)],
    )


def assert_rows_consistent(rollouts: Rollouts) -> None:
    assert len(rollouts.texts) == len(rollouts.token_ids) == rollouts.rewards.numel() \
        == rollouts.num_groups * rollouts.group_size
    for row, text in enumerate(rollouts.texts):
        g, k = map(int, text.split(":"))
        assert rollouts.examples[row // rollouts.group_size].sample.id == str(g)
        assert rollouts.token_ids[row] == [g, k] and rollouts.rewards[row] == g * 10.0 + k
        assert rollouts.accuracies[row] == (g * 10.0 + k) / 4
    for group, example in enumerate(rollouts.examples):
        assert rollouts.baseline[group] == float(example.sample.id) == rollouts.baseline_tokens[group]


@given(rollout_cuts())
def test_rows_keep_their_example_text_tokens_and_reward_through_subset_and_concat(cuts):
    groups, size, picks = cuts
    source = labelled_rollouts(groups, size)
    parts = [source.subset(p) for p in picks] + [labelled_rollouts(2, size, offset=100)]
    joined = Rollouts.concat(parts)
    assert_rows_consistent(joined)
    assert [e.sample.id for e in joined.examples] == [str(g) for p in picks for g in p] + ["100", "101"]
    assert_rows_consistent(joined.subset(list(range(joined.num_groups))[::-1]))


def test_offline_filter_keeps_the_instances_whose_own_rate_is_in_band():
    batch = examples(FixedAnswerTask("t"), 7)
    rates = [0.0, 0.5, 1.0, 0.25, 0.0, 0.75, 1.0]
    kept = filter_instances(batch, rates, 0.0, 1.0)
    assert [e.sample.id for e in kept] == ["1", "3", "5"]
    assert [e.sample.id for e in filter_instances(batch, rates, 0.3, 1.0)] == ["1", "5"]
    with pytest.raises(ValueError):
        filter_instances(batch, rates[:-1], 0.0, 1.0)


def test_online_filtering_trains_on_the_kept_groups_with_their_own_rewards(model, monkeypatch):
    model, processor = model
    import lite_cpt.train.rft as rft_module

    drawn: list[Rollouts] = []
    trained: list[Rollouts] = []
    generate, update = rft_module.generate_rollouts, rft_module.policy_update

    def recording_generate(*args, **kwargs):
        drawn.append(generate(*args, **kwargs))
        return drawn[-1]

    def recording_update(model, processor, optimizer, rollouts, arm, phase, guard=None, update_index=0):
        trained.append(rollouts)
        return update(model, processor, optimizer, rollouts, arm, phase, guard, update_index)

    monkeypatch.setattr(rft_module, "generate_rollouts", recording_generate)
    monkeypatch.setattr(rft_module, "policy_update", recording_update)
    arm = arm_config(name="rft", lr=1e-3, rft={"group_size": 2, "prompts_per_step": 3, "max_new_tokens": 2,
                                              "cot": False, "kl": False})
    task = HashedRewardTask("hashed")
    train_rft(model, processor, examples(task, 12), arm, Phase(Knobs(8, None, 8), seed=3), updates=3,
              select=band_selector(0.0, 1.0))

    def rows(r: Rollouts) -> list[tuple]:
        return [(r.examples[i // r.group_size].sample.id, r.texts[i], tuple(r.token_ids[i]), float(r.rewards[i]))
                for i in range(len(r.texts))]

    def groups(r: Rollouts) -> list[tuple]:
        flat = rows(r)
        return [tuple(flat[g * r.group_size:(g + 1) * r.group_size]) for g in range(r.num_groups)]

    assert trained and drawn
    in_band = [g for r in drawn for g in groups(r) if len({row[3] for row in g}) > 1]
    dropped = [g for r in drawn for g in groups(r) if len({row[3] for row in g}) == 1]
    assert in_band and dropped, "the seed must give both kinds of group for this test to mean anything"
    trained_groups = [g for r in trained for g in groups(r)]
    assert sorted(trained_groups) == sorted(in_band)
    for batch in trained:
        for i, text in enumerate(batch.texts):
            example = batch.examples[i // batch.group_size]
            assert float(batch.rewards[i]) == rft_reward(example, text, arm.rft)


def test_hashed_reward_task_is_not_constant():
    task = HashedRewardTask("hashed")
    sample = Sample(id="0", question="q", answer="a")
    assert {task.reward(t, sample) for t in ("a", "b", "c", "d", "e", "f")} == {0.0, 1.0}
    rng = random.Random(0)
    assert len({task.reward("a", Sample(id=str(rng.random()), question="q", answer="a")) for _ in range(20)}) == 2


def test_rows_encoded_one_by_one_collate_to_the_batch_encoding():
    """Packing re-collates rows encoded on their own: the same tensors as encoding the batch at
    once, images (and text-only rows without any) included."""
    from lite_cpt.train.batching import answer_ids, collate, encode_rows
    from lite_cpt.recipe import load_recipe
    from lite_cpt.tasks.base import build_task

    recipe = load_recipe("recipes/tiny.yaml", [], check_data=False)
    _, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    prompts, completions = [], []
    for config, benchmark in ((recipe.tasks[0], False), (recipe.evaluation.general[2], True), (recipe.tasks[3], False)):
        task = build_task(config, recipe.data.root, 0, benchmark=benchmark)  # image, text-only, image
        for sample in task.load(config.source.test_split, 2):
            prompts.append(Example(task, sample).prompt())
            completions.append(answer_ids(processor, task.target(sample), 64))
    assert {len(p.images) for p in prompts} == {0, 1}
    pad = tokenizer_of(processor).pad_token_id
    want, want_labels = append_tokens(encode_prompts(processor, prompts), completions, pad)
    order = [3, 0, 5, 1, 4, 2]  # any subset, in any order, collates like the batch of those rows
    rows = encode_rows(processor, prompts, completions, None)
    got, labels = collate(rows, pad)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert torch.equal(labels, want_labels)
    subset, _ = collate([rows[i] for i in order], pad)
    again, _ = append_tokens(encode_prompts(processor, [prompts[i] for i in order]), [completions[i] for i in order], pad)
    for key in again:
        assert torch.equal(subset[key], again[key]), key


def test_bench_update_compares_both_micro_batchings_on_the_same_rollouts(tmp_path):
    """`lite-cpt bench update` at a small size: both sides run the run's policy update over the
    same mixed-length rollouts and train the same tokens; the budget packs fewer micro-batches."""
    from lite_cpt.bench.update import bench_update
    from lite_cpt.recipe import recipe_from_dict
    from tests.helpers import tiny_recipe

    raw = tiny_recipe(tmp_path, arms=[{"name": "rft", "rft": {"group_size": 2, "prompts_per_step": 2, "cot": False}}])
    result = bench_update(recipe_from_dict(raw), prompts=3, group_size=2, max_new_tokens=12, budget_sequences=2,
                          repeats=1)
    fixed, budget = result["sides"]["fixed count"], result["sides"]["token budget"]
    assert fixed["trained_tokens"] == budget["trained_tokens"] > 0
    assert budget["knobs"]["micro_batch_tokens"] >= 2 * result["response_tokens"]["max"]
    assert result["ratio"] == pytest.approx(budget["trained_tokens_per_s"] / fixed["trained_tokens_per_s"])
    assert 1 <= result["response_tokens"]["min"] < result["response_tokens"]["max"] <= 12


def test_bench_prefix_scores_each_prompt_once_per_group(tmp_path):
    """`lite-cpt bench prefix` at a small size: the shared layout runs each prompt once per group,
    so a pass holds (G - 1) x the prompts' tokens fewer than the expanded one."""
    from lite_cpt.bench.prefix import bench_prefix
    from lite_cpt.recipe import recipe_from_dict
    from tests.helpers import tiny_recipe

    raw = tiny_recipe(tmp_path, arms=[{"name": "rft", "rft": {"group_size": 3, "prompts_per_step": 2, "cot": False}}])
    result = bench_prefix(recipe_from_dict(raw), prompts=3, group_size=3, answer_ratio=0.5, repeats=1)
    expanded, shared = result["sides"]["expanded"], result["sides"]["shared prefix"]
    prompt_tokens = result["mean_prompt_tokens"] * result["prompts"]
    assert expanded["tokens"] - shared["tokens"] == pytest.approx((3 - 1) * prompt_tokens)
    assert result["token_ratio"] == pytest.approx(expanded["tokens"] / shared["tokens"]) and result["token_ratio"] > 1
    assert expanded["seconds"] > 0 and shared["seconds"] > 0
    # the vision cache, warm: the reference pass and the update each showed the tower every image
    vision = result["vision_cache"]
    assert vision["without"]["tower_images"] == 2 * result["prompts"] and vision["with"]["tower_images"] == 0
    assert vision["with"]["seconds"] > 0 and vision["speedup"] == vision["without"]["seconds"] / vision["with"]["seconds"]
