"""Knob search and advice: the largest micro-batch, log-prob chunk and rollout batch whose phases
fit the GPU (up to the point where the GPU is saturated), and the recipe changes that lower a
phase that does not fit."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

from lite_cpt.planner.bytes import LOGPROB_CHUNKS, default_logprob_chunk, phase_peak_gb
from lite_cpt.planner.shapes import QWEN25_VL_3B, QWEN25_VL_7B
from lite_cpt.planner.workload import SATURATING_SEQUENCES, Knobs, Workload


def _chunk_candidates(work: Workload, micro_batch: int) -> list[int]:
    """Chunk sizes from the kernel's own default down to the smallest; never above the vocab."""
    if work.logprob_chunk is not None:
        return [work.logprob_chunk]
    loss_tokens = micro_batch * (work.new_tokens if work.is_rft else work.answer_tokens)
    cap = default_logprob_chunk(loss_tokens, work.shape.vocab)
    chunks = [c for c in LOGPROB_CHUNKS if c <= cap and c <= work.shape.vocab]
    return chunks or [min(LOGPROB_CHUNKS[-1], work.shape.vocab)]


def _train_phases(work: Workload) -> tuple[str, ...]:
    return ("logprob_pass", "grpo_step") if work.is_rft else ("sft_step",)


#: Tokens per training forward pass beyond which a 3B-7B model's matmuls are compute-bound on
#: any current GPU: a larger micro-batch buys no speed, only memory (gradient accumulation
#: gives the same update), so the planner does not go past it.
SATURATING_TOKENS = 2048


def saturating_micro_batch(work: Workload) -> int:
    """Sequences per micro-batch that fill SATURATING_TOKENS (at least one)."""
    sequence = work.prompt_tokens + (work.new_tokens if work.is_rft else work.answer_tokens)
    return max(1, min(work.max_micro_batch, SATURATING_TOKENS // max(1, sequence)))


def saturating_rollout_batch(work: Workload) -> int:
    return max(1, min(work.prompts_per_step, SATURATING_SEQUENCES // max(1, work.rollout_group)))


def choose_eval_batch(work: Workload, usable_gb: float) -> Workload:
    """`work` with its evaluation batch chosen when the recipe leaves it at auto: the most prompts
    per generate call, up to SATURATING_SEQUENCES, whose evaluation phase (greedy, one sequence
    per prompt, KV cache for the evaluation's max_new_tokens) fits `usable_gb`; 1 when none does."""
    if not work.eval_batch_auto:
        return work
    floor = floor_knobs(work)
    for candidate in range(SATURATING_SEQUENCES, 0, -1):
        chosen = dataclasses.replace(work, eval_batch=candidate)
        if phase_peak_gb(chosen, "evaluation", floor) <= usable_gb:
            return chosen
    return dataclasses.replace(work, eval_batch=1)


def choose_knobs(work: Workload, usable_gb: float) -> tuple[Knobs, bool]:
    """The largest knobs, up to the point where the GPU is saturated (SATURATING_TOKENS,
    SATURATING_SEQUENCES), whose phases fit `usable_gb`: rollout batch first, then the
    micro-batch (largest first), then the log-prob chunk; knobs the recipe fixes stay as they
    are. Returns (knobs, whether every phase of the arm fits); the smallest knobs when none fit."""
    def fits(phase: str, knobs: Knobs) -> bool:
        return phase_peak_gb(work, phase, knobs) <= usable_gb

    rollout_batch = work.rollout_batch_size or 1
    if work.is_rft and work.rollout_batch_size is None:
        for candidate in range(saturating_rollout_batch(work), 0, -1):
            if fits("rollout", Knobs(1, LOGPROB_CHUNKS[-1], candidate)):
                rollout_batch = candidate
                break
    if work.micro_batch_size is not None:
        micro_batches = [work.micro_batch_size]
    else:
        micro_batches = list(range(saturating_micro_batch(work), 0, -1))
    for mb in micro_batches:
        for chunk in _chunk_candidates(work, mb):
            knobs = Knobs(mb, chunk, rollout_batch)
            if all(fits(p, knobs) for p in _train_phases(work)):
                knobs = with_token_budget(work, knobs, usable_gb)
                return knobs, all(fits(p, knobs) for p in work.phases)
    smallest = Knobs(micro_batches[-1], _chunk_candidates(work, micro_batches[-1])[-1], rollout_batch)
    return with_token_budget(work, smallest, usable_gb), False


def longest_sequence(work: Workload) -> int:
    """Tokens of the longest sequence a training micro-batch may hold."""
    return work.prompt_tokens + (work.new_tokens if work.is_rft else work.answer_tokens)


def with_token_budget(work: Workload, knobs: Knobs, usable_gb: float) -> Knobs:
    """`knobs` (sized for the longest sequences) with a token budget: what that micro-batch
    holds (or the recipe's budget), packed with up to as many shorter sequences as fit the GPU
    when they share it (each brings its image and its share of the loss buffers). No sequence is
    shorter than its image's tokens, which bounds how many the budget can hold. Unchanged when
    the recipe turns packing off."""
    if not work.pack_by_tokens:
        return knobs
    budget = work.pinned_token_budget or knobs.micro_batch_size * longest_sequence(work)
    most = min(work.max_micro_batch, max(1, budget // (work.image_tokens + 1)))
    for rows in range(most, 1, -1):
        packed = replace(knobs, micro_batch_tokens=budget, packed_sequences=rows)
        if all(phase_peak_gb(work, p, packed) <= usable_gb for p in _train_phases(work)):
            return packed
    return replace(knobs, micro_batch_tokens=budget, packed_sequences=1)


def floor_knobs(work: Workload) -> Knobs:
    """The smallest knobs: micro-batch 1 (or the recipe's fixed value), smallest chunk, 1 prompt."""
    mb = 1 if work.micro_batch_size is None else work.micro_batch_size
    return Knobs(mb, _chunk_candidates(work, mb)[-1], work.rollout_batch_size or 1)



# --------------------------------------------------------------------------------------------
# Advice: recipe changes that lower the phases that do not fit


def _halve(value: int, floor: int = 1) -> int:
    return max(floor, value // 2)


def _modifications(work: Workload, phase: str) -> list[tuple[str, Workload]]:
    """(advice text, modified workload) for the recipe knobs that affect `phase`."""
    arm = f"arms.{work.arm}"
    out: list[tuple[str, Workload]] = []

    def add(text: str, **changes: Any) -> None:
        out.append((text, dataclasses.replace(work, **changes)))

    if work.micro_batch_size not in (None, 1) and phase in ("sft_step", "grpo_step", "logprob_pass"):
        add(f"set {arm}.micro_batch_size: auto (now {work.micro_batch_size})", micro_batch_size=None)
    if work.rollout_batch_size not in (None, 1) and phase == "rollout":
        add(f"set {arm}.rft.rollout_batch_size: auto (now {work.rollout_batch_size})", rollout_batch_size=None)
    if work.logprob_chunk is not None and work.logprob_chunk > LOGPROB_CHUNKS[-1] and phase in ("sft_step", "grpo_step"):
        add(f"set model.logprob_chunk: auto (now {work.logprob_chunk})", logprob_chunk=None)
    if phase in ("rollout", "grpo_step", "logprob_pass") and work.group_size > 2:
        g = _halve(work.group_size, 2)
        add(f"reduce rft.group_size ({arm}.rft.group_size: {work.group_size} -> {g})", group_size=g)
    if phase == "rollout" and work.rif_rollouts > work.group_size:
        k = max(work.group_size, _halve(work.rif_rollouts))
        add(f"reduce rif.rollouts ({arm}.rif.rollouts: {work.rif_rollouts} -> {k})", rif_rollouts=k)
    if phase in ("rollout", "grpo_step", "logprob_pass") and work.new_tokens > 16:
        add(f"lower rft.max_new_tokens ({arm}.rft.max_new_tokens: {work.new_tokens} -> {_halve(work.new_tokens)})",
            new_tokens=_halve(work.new_tokens))
    if phase == "sft_step" and work.answer_tokens > 16:
        add(f"lower tasks.*.max_answer_tokens ({work.answer_tokens} -> {_halve(work.answer_tokens)})",
            answer_tokens=_halve(work.answer_tokens))
    if work.image_tokens > 64 and work.shape.name != "tiny":
        tokens = _halve(work.image_tokens)
        add(f"lower model.max_pixels (to {tokens * work.shape.pixels_per_image_token} = {tokens} image tokens)",
            image_tokens=tokens, prompt_tokens=max(tokens, work.prompt_tokens - (work.image_tokens - tokens)))
    if work.prompt_tokens > 256:
        shorter = max(work.image_tokens + 64, (work.prompt_tokens * 3) // 4)
        if shorter < work.prompt_tokens:
            add(f"lower tasks.*.max_prompt_tokens ({work.prompt_tokens} -> {shorter})", prompt_tokens=shorter)
    if phase == "evaluation" and work.eval_batch > 1:
        add(f"lower evaluation.generation.batch_size ({work.eval_batch} -> {_halve(work.eval_batch)})",
            eval_batch=_halve(work.eval_batch))
    if work.quantization != "nf4":
        add(f"use model.quantization: nf4 (now {work.quantization})", quantization="nf4")
    if not work.gradient_checkpointing and phase in ("sft_step", "grpo_step"):
        add("set model.gradient_checkpointing: true", gradient_checkpointing=True)
    if work.lora_r > 8:
        add(f"lower model.lora.r ({work.lora_r} -> {_halve(work.lora_r)})", lora_r=_halve(work.lora_r))
    if work.shape.layers == QWEN25_VL_7B.layers and work.shape.hidden == QWEN25_VL_7B.hidden:
        add("use a smaller model (model.name: Qwen/Qwen2.5-VL-3B-Instruct)", shape=QWEN25_VL_3B)
    return out


ADVICE_PER_PHASE = 4


def advice_for(work: Workload, phase: str, usable_gb: float, limit: int = ADVICE_PER_PHASE) -> list[str]:
    """Recipe changes that lower `phase` at the smallest knobs, with their effect.

    Changes that make the phase fit come first; within each group the order of
    `_modifications` holds, which lists the least disruptive knobs first.
    """
    before = phase_peak_gb(work, phase, floor_knobs(work))
    ranked = []
    for priority, (text, changed) in enumerate(_modifications(work, phase)):
        after = phase_peak_gb(changed, phase, floor_knobs(changed))
        if after < before - 0.01:
            fits = after <= usable_gb
            verdict = "fits" if fits else "still over"
            ranked.append(((not fits, priority),
                           f"{text}: {phase} at the smallest knobs {before:.1f} -> {after:.1f} GiB ({verdict})"))
    ranked.sort(key=lambda item: item[0])
    return [text for _, text in ranked[:limit]]
