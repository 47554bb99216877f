"""One reinforcement fine-tuning phase: GRPO on one task's prompts (or all tasks', for joint arms).

Each policy update:

1. takes `prompts_per_step` prompts and samples G = `group_size` answers for each;
2. scores every answer with the task's own reward (the evaluation metric, or its binary form
   with the task's `rl_reward: binary`); in chain-of-thought mode
   r = (1 - w) * accuracy(extracted answer) + w * format(text),  w = the task's `format_weight`
   or the arm's;
3. turns rewards into advantages with the recipe's estimator (grpo / rloo / remax, where remax's
   baseline is the reward of one greedy answer per prompt);
4. runs `inner_epochs` passes of `mini_batches_per_rollout` optimizer steps each, with the
   clipped surrogate (lite_cpt.kernels.grpo_loss, EasyR1's PPO regime) over the LoRA parameters
   and the k3 KL to the reference when `kl` is on. The reference is the policy after the
   previous task, a frozen second adapter copied when the phase starts (`kl_reference:
   previous_task`, the paper's setup), or the base with the adapters off (`kl_reference: base`).

Steps 1-2 and the phase loop live here; steps 3-4 are lite_cpt.train.policy_update.

Dropout is off in every pass of a GRPO phase: rollouts are sampled without it, and the loss's
ratio compares log-probs of that same policy, so the no-grad passes (old policy, reference) run
in eval mode and the gradient pass runs with its dropout probabilities set to 0 (train mode
stays on for gradient checkpointing). EasyR1 trains Qwen2.5-VL with no dropout either (its LoRA
has none, the model has none). `model.lora.dropout` applies to SFT only.

A rollout whose advantage is exactly 0 contributes exactly 0 gradient when the KL is off (the
clipped surrogate is r * A), so its forward and backward passes are skipped; its tokens still
count in the loss normaliser, which keeps the loss equal to the one over the whole batch. A
batch in which every group has equal rewards therefore makes no optimizer step at all — no
AdamW momentum or weight decay moves the adapter — which is the "no reward variance, no
update" property behind RFT's resistance to forgetting.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from lite_cpt.run.checkpoint import end_of_update, load_stream_state, restore_phase, stream_state
from lite_cpt.train.numerics import NonFiniteGuard, sampling_guard
from lite_cpt.train.phase import Example, Phase, PhaseStats, adamw
from lite_cpt.train.policy_update import max_prompt_tokens, policy_update
from lite_cpt.train.reference_adapter import hold_reference
from lite_cpt.train.rollout import Sampling, generate_completions, model_dtype, rollout_engine
from lite_cpt.train.rollout_batch import Rollouts
from lite_cpt.seeding import derived_seed
from lite_cpt.train.truncation import count_rollouts

if TYPE_CHECKING:
    from lite_cpt.arms.rl.settings import RFTConfig
    from lite_cpt.recipe_run import ArmConfig

#: `select(rollouts) -> indices of the groups to train on` (online instance filtering).
GroupSelector = Callable[["Rollouts"], list[int]]

#: Rollout seeds are 31-bit: the width every recorded run was sampled with.
ROLLOUT_SEED_BITS = 31


#: AdamW weight decay of RL arms unless the recipe sets one (EasyR1's OptimConfig.weight_decay).
RL_WEIGHT_DECAY = 1e-2


def reward_parts(example: Example, text: str, rft: RFTConfig) -> tuple[float, float]:
    """(reward, accuracy) of one answer: with CoT the reward is (1 - w) * accuracy + w *
    format_reward(text), w = the task's format_weight or else the arm's; without, the accuracy."""
    accuracy = example.task.rl_score(text, example.sample, rft.cot)
    if not rft.cot:
        return accuracy, accuracy
    task_weight = getattr(example.task.config, "format_weight", None)
    weight = rft.format_weight if task_weight is None else task_weight
    return (1.0 - weight) * accuracy + weight * example.task.format_reward(text), accuracy


def rft_reward(example: Example, text: str, rft: RFTConfig) -> float:
    """Task reward of one answer (see `reward_parts`)."""
    return reward_parts(example, text, rft)[0]



# ---------------------------------------------------------------------------------------------
# Rollouts


def generate_rollouts(
    model,
    processor,
    examples: list[Example],
    rft: RFTConfig,
    *,
    group_size: int,
    generator_seed: int,
    rollout_batch_size: int = 8,
    with_baseline: bool = False,
) -> Rollouts:
    """Sample `group_size` answers per example (rft's temperature / top_p / length) and score them.

    `rollout_batch_size` is the number of prompts per generate call (x `group_size` sequences).
    With `with_baseline`, one greedy answer per example is generated as well and its reward
    stored as the remax baseline; that pass takes as many sequences per call as the sampled one.
    Inside `rollout.rollout_engine(engine)` a vLLM engine generates instead (all prompts in one
    continuously batched call) and the sampled tokens' log-probs come back too.
    """
    prompts = [e.prompt(rft.cot) for e in examples]
    limit = max_prompt_tokens(examples)
    sampled = generate_completions(
        model, processor, prompts,
        Sampling(group_size, rft.max_new_tokens, rft.temperature, rft.top_p, rft.top_k, rft.repetition_penalty),
        prompts_per_call=max(1, rollout_batch_size),
        max_prompt_tokens=limit,
        generator_seed=generator_seed,
    )
    parts = [reward_parts(examples[row // group_size], text, rft) for row, text in enumerate(sampled.texts)]
    baseline = baseline_tokens = None
    if with_baseline:
        greedy = generate_completions(
            model, processor, prompts,
            Sampling(max_new_tokens=rft.max_new_tokens, repetition_penalty=rft.repetition_penalty),
            prompts_per_call=group_size * max(1, rollout_batch_size), max_prompt_tokens=limit,
        )
        baseline = torch.tensor([rft_reward(e, t, rft) for e, t in zip(examples, greedy.texts)],
                                dtype=torch.float32)
        baseline_tokens = [len(ids) for ids in greedy.token_ids]
    return Rollouts(
        examples=list(examples),
        group_size=group_size,
        token_ids=sampled.token_ids,
        texts=sampled.texts,
        rewards=torch.tensor([reward for reward, _ in parts], dtype=torch.float32),
        baseline=baseline,
        baseline_tokens=baseline_tokens,
        accuracies=torch.tensor([accuracy for _, accuracy in parts], dtype=torch.float32),
        truncated=sampled.truncated,
        sampler_logp=sampled.logprobs,
    )


# ---------------------------------------------------------------------------------------------
# The phase


def rft_updates(num_examples: int, epochs: float, prompts_per_step: int) -> int:
    """Policy updates for `epochs` passes over `num_examples` prompts: ceil(n * epochs / P)."""
    return math.ceil(num_examples * epochs / prompts_per_step) if num_examples else 0


class ExampleStream:
    """Examples in a fresh seeded shuffle per pass, endlessly."""

    def __init__(self, examples: list[Example], seed: int):
        self.examples = examples
        self.rng = random.Random(seed)
        self.queue: list[Example] = []

    def take(self, n: int) -> list[Example]:
        if not self.examples:
            raise ValueError("no examples to draw prompts from")  # shuffling nothing would loop forever
        while len(self.queue) < n:
            shuffled = self.examples[:]
            self.rng.shuffle(shuffled)
            self.queue.extend(shuffled)
        taken, self.queue = self.queue[:n], self.queue[n:]
        return taken

    def state(self) -> dict:
        return stream_state(self.rng, self.queue, self.examples)

    def load(self, state: dict) -> None:
        self.queue = load_stream_state(state, self.rng, self.examples)


@dataclass
class FilterTotals:
    """What online filtering drew and dropped over a phase."""

    drawn: int = 0  # candidate groups rolled out
    kept: int = 0
    dropped_tokens: int = 0
    dropped_seconds: float = 0.0  # generation time, attributed to dropped groups pro rata

    def as_extra(self) -> dict:
        return {"kept_fraction": self.kept / self.drawn if self.drawn else 0.0,
                "rif_generated_tokens": self.dropped_tokens, "rif_seconds": round(self.dropped_seconds, 3)}


@dataclass
class GroupDraw:
    """The groups one policy update trains on, and every group rolled out to find them."""

    kept: list[Rollouts]
    candidates: list[Rollouts]
    prompts_drawn: int


@dataclass
class DrawPlan:
    """How a phase draws prompts: a seeded stream, the optional online filter and its totals,
    and the phase's cap on drawn prompts (None = no cap)."""

    stream: ExampleStream
    select: GroupSelector | None = None
    max_draws: int | None = None
    totals: FilterTotals = field(default_factory=FilterTotals)
    drawn: int = 0


def draw_groups(model, processor, rft: RFTConfig, phase: Phase, plan: DrawPlan, step: int) -> GroupDraw:
    """Roll out groups for update `step`: `prompts_per_step` prompts, or with `plan.select`,
    candidates until that many groups are kept or one pass over the examples has been drawn
    (or the phase's draw cap is spent)."""
    max_prompts = len(plan.stream.examples) if plan.select is not None else rft.prompts_per_step
    if plan.max_draws is not None:
        max_prompts = min(max_prompts, plan.max_draws - plan.drawn)
    draw = GroupDraw([], [], 0)
    while (filled := sum(p.num_groups for p in draw.kept)) < rft.prompts_per_step:
        want = min(rft.prompts_per_step - filled, max_prompts - draw.prompts_drawn)
        if want <= 0:
            break
        started = time.perf_counter()
        with phase.guard("rollout"), sampling_guard(step + 1), rollout_engine(phase.rollout_engine):
            rollouts = generate_rollouts(
                model, processor, plan.stream.take(want), rft, group_size=rft.group_size,
                generator_seed=derived_seed(phase.seed, "rollout", step, len(draw.candidates),
                                            bits=ROLLOUT_SEED_BITS),
                rollout_batch_size=phase.knobs.prompts_per_call, with_baseline=rft.advantage == "remax",
            )
        draw.prompts_drawn += want
        draw.candidates.append(rollouts)
        if plan.select is None:
            draw.kept.append(rollouts)
            continue
        _keep_selected(rollouts, plan, draw, time.perf_counter() - started)
    plan.drawn += draw.prompts_drawn
    return draw


def _keep_selected(rollouts: Rollouts, plan: DrawPlan, draw: GroupDraw, seconds: float) -> None:
    """Add the groups `plan.select` keeps to `draw`, and count what it drops."""
    kept = sorted(set(plan.select(rollouts)))
    dropped = rollouts.subset([g for g in range(rollouts.num_groups) if g not in kept])
    totals = plan.totals
    totals.drawn += rollouts.num_groups
    totals.kept += len(kept)
    totals.dropped_tokens += dropped.generated_tokens
    totals.dropped_seconds += seconds * dropped.num_groups / rollouts.num_groups
    if kept:
        draw.kept.append(rollouts.subset(kept))


def train_rft(model, processor, examples: list[Example], arm: ArmConfig, phase: Phase, *,
              select: GroupSelector | None = None, updates: int | None = None,
              max_draws: int | None = None) -> PhaseStats:
    """GRPO over `examples` for ceil(len * phase.epochs / prompts_per_step) policy updates (or
    `updates`), capped by `arm.max_steps_per_task`, with the memory knobs of `phase.knobs`.

    With `select` (online instance filtering) each update draws candidate prompts, rolls out
    their groups and keeps the groups `select` returns, drawing again until `prompts_per_step`
    groups are kept or one pass over `examples` has been drawn for this update; the kept groups'
    rollouts are the ones trained on. `max_draws` caps the candidate prompts of the whole phase
    (the phase ends when it is spent). Generated tokens of dropped groups are reported as
    `extra["rif_generated_tokens"]`, the share of kept groups as `extra["kept_fraction"]`.
    """
    rft = arm.rft
    total = rft_updates(len(examples), phase.epochs, rft.prompts_per_step) if updates is None else updates
    if arm.max_steps_per_task is not None:
        total = min(total, arm.max_steps_per_task)
    stats = PhaseStats()
    plan = DrawPlan(ExampleStream(examples, phase.seed), select, max_draws)
    if examples and total > 0:
        if rft.holds_reference:
            hold_reference(model)  # the policy as this phase starts: the previous task's
        with dropout_off(model):
            _run_updates(model, processor, arm, phase, plan, total, stats)
    if select is not None:
        stats.extra.update(plan.totals.as_extra())
    return stats


@contextmanager
def dropout_off(model):
    """Dropout probabilities set to 0 inside (train mode stays on, for gradient checkpointing)."""
    modules = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    saved = [m.p for m in modules]
    for module in modules:
        module.p = 0.0
    try:
        yield
    finally:
        for module, p in zip(modules, saved):
            module.p = p


def _plan_state(plan: DrawPlan) -> dict:
    return {"stream": plan.stream.state(), "drawn": plan.drawn, "totals": dataclasses.asdict(plan.totals)}


def _load_plan_state(plan: DrawPlan, state: dict) -> None:
    plan.stream.load(state["stream"])
    plan.drawn = state["drawn"]
    plan.totals = FilterTotals(**state["totals"])


def _run_updates(model, processor, arm: ArmConfig, phase: Phase, plan: DrawPlan, total: int,
                 stats: PhaseStats) -> None:
    """The update loop; with `phase.checkpoint` it resumes from, and saves, mid-phase state:
    the updates done, the draw plan (stream position, online-filter counters), the partial
    statistics and the non-finite counters (the checkpointer adds weights, optimizer, RNGs)."""
    weight_decay = RL_WEIGHT_DECAY if arm.weight_decay is None else arm.weight_decay
    optimizer, _ = adamw(model, arm.lr, weight_decay, "train_rft")
    if phase.rollout_engine is not None:  # its moments wait in host memory while the engine generates
        phase.rollout_engine.track_optimizer(optimizer)
    kl_beta = arm.rft.kl_beta if arm.rft.uses_kl else 0.0
    guard = NonFiniteGuard(phase.max_nonfinite, f"lr={arm.lr}, kl_beta={kl_beta}, dtype={model_dtype(model)}",
                           phase.max_weight)
    first, elapsed = 0, 0.0
    if (saved := restore_phase(phase, optimizer)) is not None:
        first, elapsed = saved["step"], saved["elapsed"]
        _load_plan_state(plan, saved["plan"])
        for key, value in saved["stats"].items():
            setattr(stats, key, value)
        guard.load(saved["guard"])
    start = time.perf_counter()
    model.train()
    for step in range(first, total):
        step_start = time.perf_counter()
        draw = draw_groups(model, processor, arm.rft, phase, plan, step)
        stats.generated_tokens += sum(c.generated_tokens for c in draw.candidates)
        for drawn in draw.candidates:
            count_rollouts(stats.extra, drawn.task_names(), drawn.truncated or [False] * len(drawn.token_ids))
        add_phase_seconds(stats, rollout=time.perf_counter() - step_start)
        if not draw.kept:
            # Nothing learnable in a whole pass (or the draw budget is spent): the policy will not
            # change, so drawing again would only repeat the verdict.
            break
        batch = Rollouts.concat(draw.kept)
        update_start = time.perf_counter()
        update = policy_update(model, processor, optimizer, batch, arm, phase, guard, step + 1)
        logprob = update.get("logprob_seconds", 0.0)
        add_phase_seconds(stats, logprob_pass=logprob, grpo_step=time.perf_counter() - update_start - logprob)
        stats.steps += int(update["updated"])
        stats.trained_tokens += update["trained_tokens"]
        stats.last_loss = update["loss"]
        stats.extra["nonfinite_skipped"] = guard.skipped
        if phase.on_step is not None:
            record = {"step": step + 1, **update_metrics(draw, update), "step_seconds": time.perf_counter() - step_start,
                      "seconds": elapsed + time.perf_counter() - start}
            if plan.select is not None:
                record.update(drawn_groups=sum(c.num_groups for c in draw.candidates), kept_groups=batch.num_groups)
            phase.on_step(record)
        guard.stop_if_diverged()
        phase.advance(step + 1, total)
        end_of_update(phase, step + 1, optimizer, lambda: {
            "step": step + 1, "elapsed": elapsed + time.perf_counter() - start, "plan": _plan_state(plan),
            "stats": dataclasses.asdict(stats), "guard": guard.state()})
    model.eval()
    stats.seconds = elapsed + time.perf_counter() - start


def add_phase_seconds(stats: PhaseStats, **seconds: float) -> None:
    """Add measured seconds per time-plan phase to `stats.extra["phase_seconds"]` (the task_end
    record logs them beside the plan's `predicted_seconds`)."""
    measured = stats.extra.setdefault("phase_seconds", {})
    for name, value in seconds.items():
        measured[name] = round(measured.get(name, 0.0) + value, 4)


def update_metrics(draw: GroupDraw, update: dict) -> dict:
    """The metrics.jsonl fields of one policy update over the groups drawn for it."""
    seen = Rollouts.concat(draw.candidates)
    return {
        "loss": update["loss"],
        "reward_mean": float(seen.rewards.mean()),
        "reward_std": float(seen.rewards.std(unbiased=False)),
        "zero_variance_fraction": float(seen.zero_variance().float().mean()),
        "kl": update["kl"],
        "clip_fraction": update["clip_fraction"],
        "dual_clip_fraction": update["dual_clip_fraction"],
        "entropy": update["entropy"],
        "generated_tokens": seen.generated_tokens,
        "truncated_fraction": sum(seen.truncated) / len(seen.truncated) if seen.truncated else 0.0,
        "trained_tokens": update["trained_tokens"],
        "updated": update["updated"],
        "nonfinite_skipped": update["nonfinite_skipped"],
        "unscorable_rollouts": update["unscorable_rollouts"],
    }
