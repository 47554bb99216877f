"""The policy updates a compute-matched RIF phase can afford (`rif.budget: compute`); plain
arithmetic, shared by the arm and the time plan."""

from __future__ import annotations

import math


def compute_matched_updates(instances: int, rollouts: int, epochs: float, prompts_per_step: int,
                            group_size: int) -> int:
    """Policy updates of a compute-matched offline RIF phase: plain RFT rolls out
    U = ceil(N * epochs / P) batches of P x G answers; the estimate has rolled out N x K, and
    floor((U x P x G - N x K) / (P x G)) updates spend what is left (0 when the estimate took it
    all), so the two totals differ by less than one update's rollouts."""
    per_update = prompts_per_step * group_size
    left = math.ceil(instances * epochs / prompts_per_step) * per_update - instances * rollouts
    return max(0, left // per_update)
