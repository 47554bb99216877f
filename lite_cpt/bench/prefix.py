"""`lite-cpt bench prefix`: the GRPO update with each prompt scored once for its group (shared
prefix) vs once per answer (expanded), side by side on the same rollouts.

Both sides run `lite_cpt.train.policy_update.policy_update` (the function a run uses) with the KL on, so the
reference pass and the update's forward and backward all count, under the same token budget.
Answers are random text tokens whose mean length is `answer_ratio` times the mean prompt length
(images included): 0.37 is the seven-task protocol's ratio, where prompts are 73 % of the
expanded layout's tokens. Sides alternate over the repeats and the fastest repeat of each is
kept, so the ratio is measured in one run under the same load.
"""

from __future__ import annotations

import time

import torch

from lite_cpt.train.batching import encode_prompts
from lite_cpt.bench.update import _phases, mixed_rollouts
from lite_cpt.bench.vision import vision_cache_side
from lite_cpt.train.phase import Knobs, Phase
from lite_cpt.train.policy_update import (compute_advantages, expanded_micro_batches, max_prompt_tokens, policy_update,
                                          shared_prefix_micro_batches)
from lite_cpt.train.rollout_batch import Rollouts
from lite_cpt.seeding import derived_seed

BENCH_SEED = 0
SIDES = {"expanded": False, "shared prefix": True}


def mean_prompt_tokens(processor, rollouts: Rollouts, cot: bool) -> float:
    lengths = [encode_prompts(processor, [e.prompt(cot)], max_prompt_tokens(rollouts.examples))["input_ids"].shape[1]
               for e in rollouts.examples]
    return sum(lengths) / len(lengths)


def pass_tokens(model, processor, rollouts: Rollouts, arm, knobs: Knobs) -> dict[str, int]:
    """Tokens one scoring pass runs over the batch on each side: with and without padding."""
    rows = list(range(len(rollouts.token_ids)))
    advantages = compute_advantages(rollouts, arm.rft)
    out = {}
    for name, shared in SIDES.items():
        make = shared_prefix_micro_batches if shared else expanded_micro_batches
        micro = make(model, processor, rollouts, rows, advantages, arm.rft, knobs)
        out[name] = {"tokens": sum(mb.input_tokens for mb in micro),
                     "padded_tokens": sum(mb.padded_tokens for mb in micro), "micro_batches": len(micro)}
    return out


def _timed_update(model, processor, rollouts: Rollouts, arm, knobs: Knobs) -> float:
    """Seconds of one `policy_update`, the adapter restored after."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=arm.lr)
    start = time.perf_counter()
    policy_update(model, processor, optimizer, rollouts, arm, Phase(knobs, seed=BENCH_SEED))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(saved[name])
    return seconds


def bench_prefix(recipe, *, prompts: int = 8, group_size: int = 5, answer_ratio: float = 0.37,
                 budget_tokens: int = 4096, repeats: int = 3) -> dict:
    """Tokens per pass and seconds per update, shared prefix vs expanded, on the recipe's model
    (its first GRPO arm's settings with the KL on to the base, CoT off)."""
    from lite_cpt.errors import UserError
    from lite_cpt.models import add_lora, load_base

    arm = next((a for a in recipe.arms if "rollout" in _phases(a.method)), None)
    if arm is None:
        raise UserError("bench prefix needs a recipe with a GRPO arm (rft, rif_rft, multitask_rft)")
    torch.manual_seed(derived_seed(recipe.seed, "bench prefix"))
    base, processor = load_base(recipe)
    model = add_lora(base, recipe.model.lora, gradient_checkpointing=recipe.model.gradient_checkpointing)
    settings = {"kl": True, "kl_beta": 0.01, "kl_reference": "base", "group_size": group_size, "cot": False}
    probe = mixed_rollouts(recipe, processor, prompts, group_size, 2)
    prompt_mean = mean_prompt_tokens(processor, probe, cot=False)
    max_new_tokens = max(2, round(2 * answer_ratio * prompt_mean))
    rollouts = mixed_rollouts(recipe, processor, prompts, group_size, max_new_tokens)
    knobs = Knobs(group_size, None, 1, micro_batch_tokens=budget_tokens)
    arms = {name: arm.model_copy(update={"rft": arm.rft.model_copy(update={**settings, "shared_prefix": shared})})
            for name, shared in SIDES.items()}
    tokens = pass_tokens(model, processor, rollouts, arms["expanded"], knobs)
    _timed_update(model, processor, rollouts, arms["shared prefix"], knobs)  # warm-up
    best = {name: float("inf") for name in SIDES}
    for _ in range(repeats):
        for name in SIDES:
            best[name] = min(best[name], _timed_update(model, processor, rollouts, arms[name], knobs))
    vision = vision_cache_side(model, lambda: _timed_update(model, processor, rollouts, arms["shared prefix"], knobs),
                               repeats, recipe.model.vision_cache_gb)
    answers = [len(t) for t in rollouts.token_ids]
    return {
        "prompts": len(rollouts.examples), "group_size": group_size, "mean_prompt_tokens": prompt_mean,
        "mean_answer_tokens": sum(answers) / len(answers), "budget_tokens": budget_tokens,
        "threads": torch.get_num_threads(),
        "sides": {name: {**tokens[name], "seconds": best[name]} for name in SIDES},
        "token_ratio": tokens["expanded"]["tokens"] / tokens["shared prefix"]["tokens"],
        "speedup": best["expanded"] / best["shared prefix"],
        "vision_cache": vision,  # the shared-prefix update with and without the vision cache
    }


def layout_comparison(measured: dict, arm_shares_prefix: bool, other: str) -> dict:
    """The GRPO update with shared prefixes vs expanded rows, from the two updates measured on
    the same rollouts by `lite-cpt bench gpu` (the arm's layout as grpo_step, the other as
    `other`, with `pass_tokens` of the batch): tokens per pass, peak GiB, seconds and the ratios
    expanded / shared."""
    sides = (measured.get("grpo_step", {}), measured.get(other, {}))
    shared, expanded = sides if arm_shares_prefix else sides[::-1]
    tokens = measured.get(other, {}).get("layout_tokens") or {}
    out = {}
    for name, row, side in (("shared_prefix", shared, "shared prefix"), ("expanded", expanded, "expanded")):
        out[name] = {"tokens": tokens.get(side, {}).get("tokens"), "seconds": row.get("seconds"),
                     "peak_gb": None if row.get("bytes") is None else row["bytes"] / 2**30, "error": row.get("error")}
    for ratio, key in (("token_ratio", "tokens"), ("speedup", "seconds"), ("memory_ratio", "peak_gb")):
        a, b = out["expanded"][key], out["shared_prefix"][key]
        out[ratio] = a / b if a is not None and b else None
    return out
