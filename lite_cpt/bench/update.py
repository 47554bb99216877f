"""`lite-cpt bench update`: trained tokens/s of the GRPO policy update with micro-batches packed
to a token budget vs a fixed count of sequences sized for the longest one, side by side.

Both sides run `lite_cpt.train.policy_update.policy_update` (the function a run uses) on the same rollouts: the
recipe's model, prompts of its tasks, and responses of mixed lengths (uniform between one token
and `rft.max_new_tokens`, drawn with a fixed seed) with rewards that give every group a signal.
The fixed count is what fits the budget at the longest sequence (prompt limit + max_new_tokens),
as a planner sizing for the worst case picks it; the token budget packs the real lengths. Sides
alternate over the repeats and the fastest repeat of each is kept, so the ratio is measured in
one run under the same load.
"""

from __future__ import annotations

import random
import time

import torch

from lite_cpt.train.phase import Knobs, Phase, examples_of, pack_by_tokens
from lite_cpt.train.policy_update import policy_update
from lite_cpt.train.rollout_batch import Rollouts
from lite_cpt.seeding import derived_seed

BENCH_SEED = 0


def mixed_rollouts(recipe, processor, prompts: int, group_size: int, max_new_tokens: int) -> Rollouts:
    """`prompts` training prompts of the recipe's tasks (in turn) with `group_size` responses each
    of 1..max_new_tokens random text tokens, and rewards 0/1 with both values in every group."""
    from lite_cpt.train.batching import tokenizer_of
    from lite_cpt.tasks.base import build_task

    examples = []
    for index, config in enumerate(recipe.tasks):
        task = build_task(config, recipe.data.root, recipe.seed)
        share = prompts // len(recipe.tasks) + (index < prompts % len(recipe.tasks))
        examples += examples_of(task, task.load(config.source.train_split, share)) if share else []
    rng = random.Random(BENCH_SEED)
    tokenizer = tokenizer_of(processor)
    text_ids = [i for i in range(len(tokenizer)) if i not in set(tokenizer.all_special_ids)][:2000]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = len(examples) * group_size
    token_ids = [[rng.choice(text_ids) for _ in range(rng.randint(1, max_new_tokens - 1))] + [end] for _ in range(rows)]
    rewards = [float(k % 2 == 0) if k < 2 else float(rng.random() < 0.5) for _ in examples for k in range(group_size)]
    return Rollouts(examples=examples, group_size=group_size, token_ids=token_ids,
                    texts=[""] * rows, rewards=torch.tensor(rewards, dtype=torch.float32))


def update_sides(processor, rollouts: Rollouts, budget_sequences: int, max_new_tokens: int) -> dict[str, Knobs]:
    """The two knobs compared: a fixed count of `budget_sequences`, sized for the longest
    sequence these prompts can make (their longest prompt + max_new_tokens; a planner sizing by
    the recipe's prompt limit would pick fewer), and a token budget of what that count holds."""
    from lite_cpt.train.policy_update import encode_rollouts

    rows = list(range(len(rollouts.token_ids)))
    encoded = encode_rollouts(processor, rollouts, rows, cot=False)
    longest = max(row.length - len(rollouts.token_ids[r]) for r, row in zip(rows, encoded)) + max_new_tokens
    budget = budget_sequences * longest
    return {"fixed count": Knobs(budget_sequences, None, 1),
            "token budget": Knobs(budget_sequences, None, 1, micro_batch_tokens=budget, packed_sequences=len(rows))}


def _timed_update(model, processor, rollouts: Rollouts, arm, knobs: Knobs) -> tuple[float, int]:
    """(seconds, trained tokens) of one `policy_update` at `knobs`, the adapter restored after."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=arm.lr)
    start = time.perf_counter()
    result = policy_update(model, processor, optimizer, rollouts, arm, Phase(knobs, seed=BENCH_SEED))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(saved[name])
    return seconds, result["trained_tokens"]


def bench_update(recipe, *, prompts: int = 16, group_size: int = 4, max_new_tokens: int = 64,
                 budget_sequences: int = 4, repeats: int = 3) -> dict:
    """Trained tokens/s of the policy update, token budget vs fixed count, on the recipe's model
    (the first GRPO arm's settings, KL off so both sides do the same passes)."""
    from lite_cpt.models import add_lora, load_base

    arm = next((a for a in recipe.arms if "rollout" in _phases(a.method)), None)
    if arm is None:
        from lite_cpt.errors import UserError

        raise UserError("bench update needs a recipe with a GRPO arm (rft, rif_rft, multitask_rft)")
    arm = arm.model_copy(update={"rft": arm.rft.model_copy(update={"kl": False, "group_size": group_size})})
    torch.manual_seed(derived_seed(recipe.seed, "bench update"))
    base, processor = load_base(recipe)
    model = add_lora(base, recipe.model.lora, gradient_checkpointing=recipe.model.gradient_checkpointing)
    rollouts = mixed_rollouts(recipe, processor, prompts, group_size, max_new_tokens)
    sides = update_sides(processor, rollouts, budget_sequences, max_new_tokens)
    best = {name: float("inf") for name in sides}
    tokens = {}
    _timed_update(model, processor, rollouts, arm, sides["token budget"])  # warm-up
    for _ in range(repeats):
        for name, knobs in sides.items():
            seconds, tokens[name] = _timed_update(model, processor, rollouts, arm, knobs)
            best[name] = min(best[name], seconds)
    return _bench_result(rollouts, sides, best, tokens)


def _bench_result(rollouts: Rollouts, sides: dict[str, Knobs], best: dict[str, float], tokens: dict[str, int]) -> dict:
    lengths = [len(t) for t in rollouts.token_ids]
    out = {"rollouts": len(lengths), "response_tokens": {"min": min(lengths), "max": max(lengths),
                                                         "mean": sum(lengths) / len(lengths)},
           "threads": torch.get_num_threads(), "sides": {}}
    for name, knobs in sides.items():
        out["sides"][name] = {"knobs": knobs.to_json(), "seconds": best[name], "trained_tokens": tokens[name],
                              "trained_tokens_per_s": tokens[name] / best[name]}
    out["ratio"] = out["sides"]["token budget"]["trained_tokens_per_s"] / out["sides"]["fixed count"]["trained_tokens_per_s"]
    return out


def _phases(method: str) -> tuple[str, ...]:
    from lite_cpt.arms import arm_class

    return arm_class(method).phases


__all__ = ["bench_update", "mixed_rollouts", "pack_by_tokens", "update_sides"]
