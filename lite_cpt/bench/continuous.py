"""Continuous vs static batching of rollouts with long-tailed answer lengths (docs/rollouts.md).

Every sequence is forced to stop at a length drawn from a skewed distribution (log-normal,
capped at 1,024 tokens; the end of turn cannot come earlier), and `slots` sequences decode at a
time:

    static     : calls of `slots` sequences (transformers generate, the HF path): a call decodes
                 until its longest row ends, the finished rows idle in it
    continuous : `slots` slots, a finished sequence's slot refilled at once (vLLM's scheduler)

Two measurements:
    simulate   : decode steps of both schedules under one cost model, step(w) = 1 + width_cost·w
                 for w active rows (width_cost 0 = decode bound by reading the weights, as a 7B
                 model on a GPU at these widths; prefill left out). A model, not a timing.
    measure    : wall seconds of the tiny model, HF static calls vs vLLM with max_num_seqs =
                 slots, on the same prompts and forced lengths (run where vLLM is installed);
                 split into the scheduling ratio (decode steps of the two schedules) and each
                 engine's seconds per decode step (the engines' own speed, not the scheduling).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform

import torch

#: Log-normal answer lengths: median 180 tokens, sigma 0.9 (mean ≈ 270, a few at the cap):
#: the shape of published chain-of-thought length logs, cut at the cap.
MEDIAN, SIGMA, CAP = 180.0, 0.9, 1024


def skewed_lengths(count: int, seed: int, *, median: float = MEDIAN, sigma: float = SIGMA, cap: int = CAP
                   ) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    draws = torch.exp(math.log(median) + sigma * torch.randn(count, generator=generator, dtype=torch.float64))
    return [int(min(cap, max(1, round(float(x))))) for x in draws]


def static_steps(lengths: list[int], slots: int, width_cost: float = 0.0) -> float:
    """Cost of calls of `slots` consecutive sequences, each decoding to its longest row at full width."""
    total = 0.0
    for start in range(0, len(lengths), slots):
        call = lengths[start : start + slots]
        total += max(call) * (1 + width_cost * len(call))
    return total


def continuous_steps(lengths: list[int], slots: int, width_cost: float = 0.0) -> float:
    """Cost of `slots` slots refilled in order as sequences finish; a step costs by its active rows."""
    waiting, active, total = list(lengths), [], 0.0
    while waiting or active:
        while waiting and len(active) < slots:
            active.append(waiting.pop(0))
        total += 1 + width_cost * len(active)
        active = [left - 1 for left in active if left > 1]
    return total


def simulate(sequences: int, slots: int, seed: int, width_costs=(0.0, 0.01, 0.05)) -> dict:
    lengths = skewed_lengths(sequences, seed)
    rows = []
    for cost in width_costs:
        static, refill = static_steps(lengths, slots, cost), continuous_steps(lengths, slots, cost)
        rows.append({"width_cost": cost, "static": static, "continuous": refill, "speedup": static / refill})
    return {"sequences": sequences, "slots": slots, "mean_length": sum(lengths) / len(lengths),
            "max_length": max(lengths), "at_cap": sum(n == CAP for n in lengths), "rows": rows}


def measure(sequences: int, slots: int, seed: int, group_size: int = 4, repeats: int = 2) -> dict:
    """Wall seconds of the tiny model generating `sequences` answers of forced skewed lengths:
    HF static calls of `slots` rows vs vLLM with `slots` slots (engine start-up excluded). The
    two alternate `repeats` times and each keeps its best time (a load spike hits both alike)."""
    from lite_cpt.bench.continuous_real import hf_static_seconds, tiny_setup, vllm_timer

    lengths = skewed_lengths(sequences, seed)
    model, processor, base, prompts = tiny_setup(sequences // group_size)
    vllm_run = vllm_timer(base, processor, prompts, group_size, lengths, slots)
    hf, vllm = math.inf, math.inf
    for _ in range(repeats):
        hf = min(hf, hf_static_seconds(model, processor, prompts, group_size, lengths, slots))
        vllm = min(vllm, vllm_run())
    static, refill = static_steps(lengths, slots), continuous_steps(lengths, slots)
    return {"sequences": sequences, "slots": slots, "group_size": group_size, "tokens": sum(lengths),
            "hf_static_s": hf, "vllm_continuous_s": vllm,
            "hf_sequences_per_s": sequences / hf, "vllm_sequences_per_s": sequences / vllm,
            # what the ratio is made of: decode steps each schedule takes, and seconds per step
            "static_steps": static, "continuous_steps": refill, "scheduling_ratio": static / refill,
            "hf_ms_per_step": 1000 * hf / static, "vllm_ms_per_step": 1000 * vllm / refill}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", action="store_true", help="also time the tiny model (needs vLLM)")
    parser.add_argument("--measure-sequences", type=int, default=64)
    args = parser.parse_args()
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", "simulate": simulate(args.sequences,
                                                                                              args.slots, args.seed)}
    if args.measure:
        result["measure"] = measure(args.measure_sequences, args.slots, args.seed)
        result["load_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
