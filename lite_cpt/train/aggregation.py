"""How the GRPO loss of one optimizer step averages its tokens (`rft.aggregation`).

    token-mean        every token of the mini-batch weighs the same: the sum of the per-token
                      losses over the mini-batch's response tokens (EasyR1's `loss_avg_mode:
                      token` over a whole mini-batch, as verl and later EasyR1 normalise it)
    seq-mean          each rollout's own token mean, averaged over the mini-batch's rollouts
    micro-token-mean  what EasyR1 did at the paper's period (hiyouga/EasyR1 58a2c95, 2025-06-27,
                      verl/workers/actor/dp_actor.py `update_policy`): the mini-batch is split into
                      micro-batches of `rft.loss_micro_batch` consecutive rollouts
                      (`micro_batch_size_per_device_for_update: 4`); each micro-batch's loss is its
                      own token mean, divided by the number of micro-batches (the accumulation
                      count), and summed. A token of a short micro-batch weighs more than one of a
                      long micro-batch.

The micro-batches of micro-token-mean are a property of the loss, not of memory: lite-cpt's
physical micro-batches (packed for the GPU) never straddle two of them, so the gradient is the
same whatever the packing. Rollouts of the mini-batch that carry no gradient (advantage 0 without
the KL) still count in their micro-batch's tokens, as they do in EasyR1.
"""

from __future__ import annotations

AGGREGATIONS = ("token-mean", "seq-mean", "micro-token-mean")


def loss_groups(rows: list[int], lengths: list[int], aggregation: str, micro_batch: int
                ) -> list[tuple[list[int], float | None]]:
    """The mini-batch's `rows` as the groups its loss normalises over, each with its
    denominator: for micro-token-mean the micro-batches of `micro_batch` consecutive rollouts,
    each with (its response tokens) x (the number of micro-batches); otherwise one group of all
    rows with None (the caller normalises over the whole mini-batch)."""
    if aggregation != "micro-token-mean":
        return [(list(rows), None)]
    chunks = [rows[start:start + micro_batch] for start in range(0, len(rows), micro_batch)]
    return [(chunk, float(max(1, sum(lengths[r] for r in chunk)) * len(chunks))) for chunk in chunks]


def kernel_aggregation(aggregation: str) -> str:
    """The aggregation of the loss kernel within one physical micro-batch."""
    return "seq-mean" if aggregation == "seq-mean" else "token-mean"


def loss_share(aggregation: str, tokens: float, rollouts: int, total_tokens: float, total_rows: int,
               normaliser: float | None) -> float:
    """The weight of a physical micro-batch's kernel loss (its `tokens` over `rollouts`) in the
    mini-batch's loss (`total_tokens` over `total_rows`)."""
    if aggregation == "micro-token-mean":
        return tokens / normaliser
    if aggregation == "seq-mean":
        return rollouts / total_rows
    return tokens / total_tokens
