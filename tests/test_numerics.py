"""Non-finite losses and gradients: the guard lets a finite update through, skips a non-finite
one, and stops after K in a row with a message naming what to look at."""

from __future__ import annotations

import pytest
import torch

from lite_cpt.train.numerics import NonFiniteGuard, NonFiniteTraining


def test_guard_counts_skips_and_stops_after_the_limit_with_the_knobs():
    guard = NonFiniteGuard(2, "lr=0.001, kl_beta=0.01, dtype=torch.bfloat16")
    assert guard.allow(1, {"loss": 0.5}, torch.tensor(1.0))
    assert not guard.allow(2, {"loss": float("nan")}, torch.tensor(1.0))
    guard.stop_if_diverged()  # one in a row: tolerated
    assert guard.allow(3, {"loss": 0.4}, torch.tensor(2.0))  # a finite update resets the run
    assert not guard.allow(4, {"loss": 0.4}, torch.tensor(float("inf")))
    assert not guard.allow(4, {"loss": 0.4}, torch.tensor(float("inf")))  # a second step of update 4
    guard.stop_if_diverged()
    assert not guard.allow(5, {"loss": float("nan"), "kl": 0.25}, torch.tensor(float("nan")))
    with pytest.raises(NonFiniteTraining) as stop:
        guard.stop_if_diverged()
    message = str(stop.value)
    for words in ("2 updates in a row (updates 4 to 5)", "loss=nan", "kl=0.25", "learning rate", "KL",
                  "precision", "lr=0.001", "faults.max_consecutive_nonfinite"):
        assert words in message
    assert guard.state() == {"consecutive": 2, "skipped": 4, "run": (4, 5)}


@pytest.mark.parametrize("value, words", [(1e6, "reached |w| = 1e+06"), (float("inf"), "are not finite"),
                                          (float("nan"), "are not finite")])
def test_weights_past_the_limit_or_not_finite_stop_with_the_update_and_the_knobs(value, words):
    guard = NonFiniteGuard(3, "lr=1e+06, dtype=torch.float32", max_weight=1e4)
    weights = [torch.zeros(3), torch.tensor([0.5, -9999.0])]
    guard.check_weights(7, weights)  # within the limit
    weights[1][0] = value
    with pytest.raises(NonFiniteTraining) as stop:
        guard.check_weights(7, weights)
    message = str(stop.value)
    assert message.startswith(f"training diverged: after update 7 the adapter's weights {words}")
    assert "faults.max_adapter_weight=10000" in message and "lr=1e+06" in message


def test_sampling_on_non_finite_probabilities_is_the_divergence_message():
    from lite_cpt.train.numerics import sampling_guard

    with pytest.raises(NonFiniteTraining, match="sampling the rollouts of update 3 met non-finite probabilities"):
        with sampling_guard(3):
            torch.multinomial(torch.tensor([[float("nan"), 1.0]]), 1)
    with pytest.raises(RuntimeError, match="other"), sampling_guard(3):
        raise RuntimeError("other")


def _sft(losses):
    return [{"event": "step", "loss": v} for v in losses]


def _rft(rewards, stds=None, tokens=None):
    return [{"event": "step", "loss": 0.0, "reward_mean": r, "reward_std": (stds or [0.0] * len(rewards))[i],
             "generated_tokens": (tokens or [12] * len(rewards))[i]} for i, r in enumerate(rewards)]


def test_a_flat_phase_is_named_and_a_moving_or_short_one_is_not():
    from lite_cpt.train.numerics import flat_phase

    assert flat_phase(_sft([6.240275859832764] * 3)) == "the loss stayed at 6.24 over all 3 updates"
    assert flat_phase(_sft([4.84, 6.24, 6.24])) is None
    assert flat_phase(_sft([6.24, 6.24])) is None  # too short to say
    assert flat_phase(_sft([float("nan")] * 3)) is None  # skipped updates are the guard's business
    assert flat_phase(_rft([0.5, 0.5, 0.5], tokens=[0, 0, 0])) == "every rollout answer was empty over all 3 updates"
    assert flat_phase(_rft([0.0, 0.0, 0.0])).startswith("the reward was 0 on every rollout of all 3 updates")
    assert flat_phase(_rft([0.5, 0.5, 0.5], stds=[0.5, 0.5, 0.5])) is None  # groups with a spread: learning
    assert flat_phase(_rft([0.0, 0.25, 0.0])) is None


# ---------------------------------------------------------------------------------------------
# The guard inside the training loops

import math  # noqa: E402

import lite_cpt.train.policy_update as update_module  # noqa: E402
import lite_cpt.train.rft as rft_module  # noqa: E402
import lite_cpt.train.sft as sft_module  # noqa: E402
from lite_cpt.run.continual import reset_adapter  # noqa: E402
from lite_cpt.train.phase import Phase  # noqa: E402
from lite_cpt.recipe import arm_config as arm_entry  # noqa: E402
from lite_cpt.train.rft import train_rft  # noqa: E402
from lite_cpt.train.sft import train_sft  # noqa: E402
from tests.test_rft import KNOBS, arm_config, lora_params, policy, tiny, vowel_examples  # noqa: E402,F401


def _nan_on(calls: set[int], original):
    count = [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        loss, stats = original(*args, **kwargs)
        return (loss * float("nan"), stats) if count[0] in calls else (loss, stats)

    return wrapped


def test_grpo_update_with_nan_loss_is_skipped_without_touching_weights_or_moments(policy, monkeypatch, caplog):
    model, processor = policy
    monkeypatch.setattr(update_module, "grpo_loss", _nan_on({1}, update_module.grpo_loss))
    before = {n: p.detach().clone() for n, p in lora_params(model).items()}
    records, states = [], []
    original_update = rft_module.policy_update

    def watched(model_, processor_, optimizer, *args, **kwargs):
        result = original_update(model_, processor_, optimizer, *args, **kwargs)
        states.append((len(optimizer.state), {n: p.detach().clone() for n, p in lora_params(model_).items()}))
        return result

    monkeypatch.setattr(rft_module, "policy_update", watched)
    stats = train_rft(model, processor, vowel_examples(4), arm_config(kl=True),
                      Phase(KNOBS, seed=3, on_step=records.append), updates=2)
    first_moments, first_weights = states[0]
    assert first_moments == 0  # AdamW never stepped: no exp_avg / exp_avg_sq yet
    assert all(torch.equal(first_weights[n], before[n]) for n in before)
    assert records[0]["nonfinite_skipped"] == 1 and records[0]["updated"] is False
    assert math.isnan(records[0]["loss"])
    assert records[1]["nonfinite_skipped"] == 0 and records[1]["updated"] is True
    assert states[1][0] > 0
    assert stats.steps == 1 and stats.extra["nonfinite_skipped"] == 1
    assert "update 1: non-finite loss or gradient" in caplog.text and "skipped" in caplog.text


def test_consecutive_nan_grpo_updates_stop_the_phase_naming_step_loss_parts_and_knobs(policy, monkeypatch):
    model, processor = policy
    monkeypatch.setattr(update_module, "grpo_loss", _nan_on(set(range(1, 100)), update_module.grpo_loss))
    records = []
    with pytest.raises(NonFiniteTraining, match=r"3 updates in a row \(updates 1 to 3\) .*loss=nan, kl=.*kl_beta=0.01"):
        train_rft(model, processor, vowel_examples(4), arm_config(kl=True),
                  Phase(KNOBS, max_nonfinite=3, on_step=records.append), updates=5)
    # every update the message counts is logged (kl_beta=1e300 used to count 3 where 2 were logged)
    assert [(r["step"], r["updated"]) for r in records] == [(1, False), (2, False), (3, False)]


def test_sft_step_with_nan_loss_is_skipped_and_counted_and_k_in_a_row_stop(policy, monkeypatch):
    model, processor = policy
    original = sft_module.rows_loss_sum
    count = [0]

    def nan_first(*args, **kwargs):
        count[0] += 1
        nll, tokens = original(*args, **kwargs)
        return (nll * float("nan") if count[0] == 1 else nll), tokens

    monkeypatch.setattr(sft_module, "rows_loss_sum", nan_first)
    before = {n: p.detach().clone() for n, p in lora_params(model).items()}
    records = []
    arm = arm_entry(name="sft", lr=1e-2, batch_size=2, max_steps_per_task=1)
    stats = train_sft(model, processor, vowel_examples(4), arm, Phase(KNOBS, on_step=records.append))
    assert records[0]["updated"] is False and stats.steps == 0 and stats.extra["nonfinite_skipped"] == 1
    assert all(torch.equal(p, before[n]) for n, p in lora_params(model).items())

    monkeypatch.setattr(sft_module, "rows_loss_sum", lambda *a, **k: (original(*a, **k)[0] * float("nan"), 1))
    arm = arm_entry(name="sft", lr=1e-2, batch_size=2, max_steps_per_task=4)
    with pytest.raises(NonFiniteTraining, match=r"2 updates in a row \(updates 1 to 2\) .*loss=nan.*lr=0.01"):
        train_sft(model, processor, vowel_examples(4), arm, Phase(KNOBS, max_nonfinite=2))


def test_a_runaway_learning_rate_stops_sft_and_grpo_after_the_first_update(policy, monkeypatch):
    """lr=1e6: the loss stays finite while one AdamW step moves every weight by about 1e6."""
    model, processor = policy
    arm = arm_entry(name="sft", lr=1e6, batch_size=2, max_steps_per_task=4)
    with pytest.raises(NonFiniteTraining, match=r"after update 1 the adapter's weights reached .*lr=1000000.0"):
        train_sft(model, processor, vowel_examples(4), arm, Phase(KNOBS))
    reset_adapter(model, seed=0)
    rewards = iter([1.0, 0.0] * 100)  # every group of 2 has a spread: a gradient on the first update
    monkeypatch.setattr(rft_module, "reward_parts", lambda *a: (next(rewards), 0.0))
    rft_arm = arm_config(kl=True).model_copy(update={"lr": 1e6})
    with pytest.raises(NonFiniteTraining, match=r"after update 1 the adapter's weights .*kl_beta=0.01"):
        train_rft(model, processor, vowel_examples(4), rft_arm, Phase(KNOBS), updates=3)
