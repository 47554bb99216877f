"""The SFT phase's loop: step count, epochs of shuffled examples, hooks, stats and optimizer
settings, with the step's loss replaced by a recorder (the loss itself is checked against full
logits in tests/test_training_behaviour.py)."""

from __future__ import annotations

import math

import pytest
import torch

import lite_cpt.train.sft as sft_module
from lite_cpt.train.phase import Example, Knobs, Phase
from lite_cpt.recipe import arm_config
from lite_cpt.recipe_run import ArmConfig
from lite_cpt.train.sft import SFTHooks, train_sft
from lite_cpt.tasks.base import Sample, Task


class EchoTask(Task):
    answer_instruction = ""

    def reward(self, prediction: str, sample: Sample) -> float:
        return float(prediction == sample.answer)


def examples(n: int) -> list[Example]:
    task = EchoTask("echo")
    return [Example(task, Sample(id=str(i), question=f"q{i}", answer=f"a{i}")) for i in range(n)]


@pytest.fixture
def steps(monkeypatch):
    """Each step's batch (sample ids), the knobs and whether the model was in training mode;
    the step puts a zero gradient on every parameter and reports one token per example."""
    seen: list[dict] = []

    def fake_accumulate(model, processor, batch, knobs, extra_loss):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        seen.append({"ids": [e.sample.id for e in batch], "knobs": knobs, "training": model.training,
                     "extra_loss": extra_loss})
        return 0.5 * len(seen), len(batch)

    monkeypatch.setattr(sft_module, "_accumulate", fake_accumulate)
    return seen


def arm(**settings) -> ArmConfig:
    return arm_config(name="sft", **{"batch_size": 4, **settings})


def test_steps_cover_each_example_once_per_epoch_in_a_seeded_order(steps):
    data = examples(10)
    model = torch.nn.Linear(2, 2)
    records, progress = [], []
    stats = train_sft(model, None, data, arm(), Phase(Knobs(2, None, 4), seed=7, epochs=1.5,
                                                     on_step=records.append,
                                                     progress=lambda *done: progress.append(done)))
    total = math.ceil(math.ceil(10 / 4) * 1.5)  # 3 batches an epoch, 1.5 epochs
    assert stats.steps == total == len(steps) == 5
    drawn = [i for step in steps for i in step["ids"]]
    assert all(len(step["ids"]) == 4 for step in steps)
    assert sorted(drawn[:10]) == sorted(e.sample.id for e in data), "the first epoch sees every example once"
    assert drawn[:10] != [e.sample.id for e in data], "shuffled"
    assert all(step["training"] for step in steps) and not model.training, "train mode inside, eval after"
    assert all(step["knobs"] == Knobs(2, None, 4) for step in steps)
    assert stats.trained_tokens == 4 * total and stats.last_loss == 0.5 * total
    assert [r["step"] for r in records] == list(range(1, total + 1))
    assert [r["loss"] for r in records] == [0.5 * k for k in range(1, total + 1)]
    assert all(r["tokens"] == 4 and r["seconds"] >= 0 for r in records)
    assert progress == [(k, total) for k in range(1, total + 1)]
    assert stats.seconds > 0
    assert stats.extra["phase_seconds"]["sft_step"] == pytest.approx(stats.seconds, abs=1e-4), "the time breakdown"

    first = [step["ids"] for step in steps]
    steps.clear()
    train_sft(torch.nn.Linear(2, 2), None, data, arm(), Phase(Knobs(2, None, 4), seed=7, epochs=1.5))
    assert [step["ids"] for step in steps] == first, "the same seed gives the same order"
    steps.clear()
    train_sft(torch.nn.Linear(2, 2), None, data, arm(), Phase(Knobs(2, None, 4), seed=8, epochs=1.5))
    assert [step["ids"] for step in steps] != first, "another seed another order"


def test_max_steps_caps_the_phase_and_a_short_phase_still_steps_once(steps):
    data = examples(10)
    assert train_sft(torch.nn.Linear(2, 2), None, data, arm(max_steps_per_task=2),
                     Phase(Knobs(1, None, 1), epochs=3)).steps == 2
    steps.clear()
    assert train_sft(torch.nn.Linear(2, 2), None, data[:2], arm(), Phase(Knobs(1, None, 1), epochs=0.1)).steps == 1
    assert sorted(steps[0]["ids"]) == ["0", "1"], "a task smaller than a batch trains on what it has"


def test_hooks_rewrite_batches_and_add_their_loss(steps):
    data = examples(6)
    penalty = lambda: torch.tensor(0.0)  # noqa: E731
    rngs = []

    def only_the_first_two(rng, batch):
        rngs.append(rng.random())
        return batch[:2]

    train_sft(torch.nn.Linear(2, 2), None, data, arm(batch_size=3),
              Phase(Knobs(3, None, 3), seed=1), SFTHooks(extra_loss=penalty, batch_sampler=only_the_first_two))
    assert [len(step["ids"]) for step in steps] == [2, 2]
    assert all(step["extra_loss"] is penalty for step in steps)
    assert len(set(rngs)) == 2, "the sampler draws from the phase's random stream"


@pytest.mark.parametrize("weight_decay, factor", [(None, 1.0), (0.0, 1.0), (0.1, 1 - 1e-2 * 0.1)])
def test_sft_weight_decay_is_none_unless_the_recipe_sets_one(steps, weight_decay, factor):
    # With a zero gradient AdamW moves the weights by its decay alone: w <- w * (1 - lr * wd).
    model = torch.nn.Linear(2, 2)
    before = model.weight.detach().clone()
    train_sft(model, None, examples(4), arm(lr=1e-2, weight_decay=weight_decay, max_steps_per_task=1),
              Phase(Knobs(4, None, 4)))
    torch.testing.assert_close(model.weight.detach(), before * factor)


def test_gradients_are_clipped_to_the_arms_norm(steps, monkeypatch):
    norms = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm, *a, **k: norms.append(max_norm))
    train_sft(torch.nn.Linear(2, 2), None, examples(4), arm(grad_clip=0.25), Phase(Knobs(4, None, 4), epochs=2))
    assert norms == [0.25, 0.25]
