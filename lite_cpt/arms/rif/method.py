"""Rollout-based instance filtering (RIF-RFT): train only on instances the policy can learn from.

An instance's success rate is estimated from K sampled answers, on the accuracy part of the
reward (without the chain-of-thought format term),

    s_i = (1/K) sum_k accuracy(answer_ik),

and it is kept when  low < s_i < high  (strictly) and its K rewards are not all equal. With the
default band (0, 1) this drops the instances that are always solved or never solved; the
second condition drops the groups whose GRPO advantage is 0 for every rollout although their
success rate is inside the band: five identical soft VQA answers (0.64 each), or every answer
formatted but wrong (reward 0.1) or right but unformatted (0.9) when the band is read on the
combined reward. Such groups cost generation and passes but give no gradient.

Modes:
- offline: estimate s_i for the task's instances once, with the adapter as it is before the
  task, then run GRPO on the kept ones;
- online: during GRPO, drop each batch's groups that are not learnable (as above) and draw
  more prompts until the batch is full (like dynamic sampling); the groups' own rollouts are
  both the estimate (K = G) and the training data, so nothing extra is generated for training.

Budgets: `filtered` trains ceil(kept * epochs / P) updates (online: draws each instance
`epochs` times at most); `matched` trains as many updates as plain RFT on the full set,
ceil(all * epochs / P), cycling over the kept instances — the update-matched comparison;
`compute` counts the estimate's rollouts against the budget: offline, the N x K estimate
rollouts plus the updates' P x G each come to plain RFT's U x P x G within one update
(`compute_matched_updates`); online, as many prompts are rolled out (kept or dropped) as plain
RFT rolls out.
Per task the arm reports kept_fraction, rif_generated_tokens (tokens generated only to filter:
the K-rollout estimate offline, the dropped groups online) and rif_seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lite_cpt.arms.base import ArmMethod
from lite_cpt.train.phase import Example, Phase, PhaseStats
from lite_cpt.train.rft import ROLLOUT_SEED_BITS, Rollouts, generate_rollouts, rft_updates, train_rft
from lite_cpt.train.rif_budget import compute_matched_updates
from lite_cpt.train.rollout import rollout_engine
from lite_cpt.seeding import derived_seed

if TYPE_CHECKING:
    from lite_cpt.arms.rl.settings import RFTConfig

log = logging.getLogger(__name__)


@dataclass
class SuccessEstimate:
    rates: list[float]  # mean accuracy of the K rollouts, one per instance
    generated_tokens: int
    seconds: float
    varied: list[bool] | None = None  # whether the K rewards differ (None: not recorded, assume so)


def measure_success(
    model,
    processor,
    examples: list[Example],
    rollouts: int,
    rft: RFTConfig,
    seed: int,
    *,
    rollout_batch_size: int = 16,
) -> SuccessEstimate:
    """K = `rollouts` sampled answers per instance (rft's sampling settings and reward),
    generated `rollout_batch_size` instances at a time; their mean accuracy per instance and
    whether their rewards differ."""
    started = time.perf_counter()
    rates: list[float] = []
    varied: list[bool] = []
    tokens = 0
    for index, start in enumerate(range(0, len(examples), rollout_batch_size)):
        chunk = examples[start : start + rollout_batch_size]
        sampled = generate_rollouts(
            model, processor, chunk, rft,
            group_size=rollouts, generator_seed=derived_seed(seed, "rif", index, bits=ROLLOUT_SEED_BITS),
            rollout_batch_size=len(chunk),
        )
        rates += [float(m) for m in sampled.success_rates()]
        varied += [not flat for flat in sampled.zero_variance().tolist()]
        tokens += sampled.generated_tokens
    return SuccessEstimate(rates, tokens, time.perf_counter() - started, varied)


def estimate_success(model, processor, examples: list[Example], rollouts: int, rft: RFTConfig, seed: int
                     ) -> list[float]:
    """Mean accuracy of `rollouts` sampled answers per instance."""
    return measure_success(model, processor, examples, rollouts, rft, seed).rates


def filter_instances(examples: list[Example], success: list[float], low: float, high: float,
                     varied: list[bool] | None = None) -> list[Example]:
    """The examples whose success rate lies strictly inside (low, high) and (when `varied` is
    given) whose rollouts' rewards differ, in their order."""
    if len(examples) != len(success) or (varied is not None and len(varied) != len(examples)):
        raise ValueError(f"{len(examples)} examples but {len(success)} success rates")
    varied = varied if varied is not None else [True] * len(examples)
    return [e for e, s, v in zip(examples, success, varied) if v and low < s < high]


def learnable_groups(rollouts: Rollouts, low: float, high: float) -> list[int]:
    """Groups whose success rate (mean accuracy) lies strictly inside (low, high) and whose
    rewards are not all equal: the ones with a non-zero GRPO advantage somewhere."""
    rates = rollouts.success_rates().tolist()
    flat = rollouts.zero_variance().tolist()
    return [g for g, (rate, constant) in enumerate(zip(rates, flat)) if not constant and low < rate < high]


def band_selector(low: float, high: float):
    """Online filter: the learnable groups (`learnable_groups`)."""

    def select(rollouts: Rollouts) -> list[int]:
        return learnable_groups(rollouts, low, high)

    return select


class RIFRFT(ArmMethod):
    """GRPO on the instances that rollout-based filtering keeps (offline or online)."""

    def train(self, examples: list[Example], phase: Phase) -> PhaseStats:
        if self.arm.rif.mode == "online":
            return self._train_online(examples, phase)
        return self._train_offline(examples, phase)

    def _train_offline(self, examples: list[Example], phase: Phase) -> PhaseStats:
        rif, rft = self.arm.rif, self.arm.rft

        # With a rollout engine (rollout.backend: vllm) every instance's K answers go to its
        # scheduler in one call, which refills finished slots: no chunk waits for its longest answer.
        per_call = len(examples) if phase.rollout_engine is not None else phase.knobs.prompts_per_call

        def measure() -> dict:
            with phase.guard("rollout"), rollout_engine(phase.rollout_engine):
                return dataclasses.asdict(measure_success(
                    self.model, self.processor, examples, rif.rollouts, rft,
                    derived_seed(phase.seed, "rif-offline", bits=ROLLOUT_SEED_BITS),
                    rollout_batch_size=max(1, per_call)))

        # The estimate is made with the adapter as it was before the task: a phase resumed from a
        # mid-phase checkpoint takes it from there instead of measuring the half-trained policy.
        checkpoint = phase.checkpoint
        estimate = SuccessEstimate(**(checkpoint.memo("rif_offline", measure) if checkpoint else measure()))
        kept = filter_instances(examples, estimate.rates, rif.low, rif.high, estimate.varied)
        extra = {
            "kept_fraction": len(kept) / len(examples) if examples else 0.0,
            "rif_generated_tokens": estimate.generated_tokens,
            "rif_seconds": round(estimate.seconds, 3),
        }
        if not kept:
            log.warning("%s: rollout filtering kept no instance of task %s (band (%s, %s)); "
                        "skipping its training", self.arm.name, phase.name, rif.low, rif.high)
            stats = PhaseStats(generated_tokens=estimate.generated_tokens, seconds=estimate.seconds)
            stats.extra.update(extra)
            return stats
        # filtered: passes over the kept set; matched: the update count of RFT on the full set;
        # compute: what RFT's rollouts leave once the estimate's are paid.
        if rif.budget == "compute":
            updates = compute_matched_updates(len(examples), rif.rollouts, phase.epochs, rft.prompts_per_step,
                                              rft.group_size)
        else:
            pool_size = len(kept) if rif.budget == "filtered" else len(examples)
            updates = rft_updates(pool_size, phase.epochs, rft.prompts_per_step)
        stats = train_rft(self.model, self.processor, kept, self.arm, phase, updates=updates) if updates \
            else PhaseStats()
        stats.generated_tokens += estimate.generated_tokens
        stats.seconds += estimate.seconds
        stats.extra.update(extra)
        return stats

    def _train_online(self, examples: list[Example], phase: Phase) -> PhaseStats:
        rif, rft = self.arm.rif, self.arm.rft
        updates = rft_updates(len(examples), phase.epochs, rft.prompts_per_step)
        # filtered: every instance is drawn `epochs` times at most; matched: draw until the
        # updates are done (each update gives up after one pass over the task's instances).
        max_draws = {"filtered": math.ceil(len(examples) * phase.epochs),
                     "compute": updates * rft.prompts_per_step}.get(rif.budget)
        stats = train_rft(self.model, self.processor, examples, self.arm, phase,
                          select=band_selector(rif.low, rif.high), updates=updates, max_draws=max_draws)
        if stats.steps == 0:
            log.warning("%s: online filtering found no instance of task %s inside (%s, %s); "
                        "no update was made", self.arm.name, phase.name, rif.low, rif.high)
        return stats
