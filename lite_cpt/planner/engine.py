"""The vLLM rollout engine in the plan (`rollout.backend: vllm`; docs/rollouts.md).

vLLM runs in the trainer's process. While it generates (rollouts, RIF's estimate, evaluation) it
holds its share of the GPU, `rollout.gpu_memory_utilization x gpu_gb`, beside what the trainer
keeps resident: its CUDA context and vision feature cache, and without rollout.offload_trainer
also its frozen base, adapter, AdamW moments and KL reference adapter (with it they wait in host
memory, copied out and back around each engine call: `offload_notes`). The share:

    weights    the frozen-weight bytes of the trainer's own plan. vLLM loads the same base (NF4
               through bitsandbytes when the trainer is NF4; embeddings, head and vision tower in
               16 bits), so its copy is taken to cost what the trainer's does: an approximation
               (vLLM fuses qkv and gate/up and packs the 4-bit weights its own way).
    adapter    one LoRA slot (`max_loras=1`) at the rank rounded up to vLLM's bucket, in the
               compute dtype, on the adapted language-model linears.
    overhead   ENGINE_OVERHEAD_GIB: the profile run's activation peak, non-torch memory, CUDA graphs.
    KV cache   the rest, in blocks of KV_BLOCK_TOKENS tokens of `kv_bytes_per_token` each.

While the policy trains the engine sleeps (level 1: weights to host memory, KV cache freed), so
logprob_pass, grpo_step and sft_step keep their plan. A generation phase's peak is the trainer's
resident state (with allocator slack and the CUDA context) plus the share. Sequences decoding at once:

    slots = min(max_num_seqs, KV tokens // KV tokens of one sequence)

A sequence holds its expected answer and its prompt; a rollout shares its prompt's full blocks
with the other samples of its group (vLLM's prefix cache) until the group's longest answer ends
(timeplan.rollout_kv_tokens), an evaluation request holds its prompt alone.

The engine fits when its share holds weights + adapter + overhead + one full-length sequence
(the longest prompt and the longest max_new_tokens: vLLM refuses to start without room for one),
and the trainer's resident state + the share stay within the usable memory (at start vLLM also
checks that its share is free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from lite_cpt.planner.bytes import (
    CUDA_CONTEXT_GIB, FRAGMENTATION, GIB, device_peak_gb, engine_resident_bytes, frozen_weight_bytes, offload_bytes,
    kv_bytes_per_token,
)
from lite_cpt.planner.search import advice_for
from lite_cpt.planner.shapes import lora_parameters
from lite_cpt.planner.calibration import Calibration
from lite_cpt.planner.engine_slots import KV_BLOCK_TOKENS, engine_slots
from lite_cpt.planner.timeplan import (
    counts_of, engine_decode, evaluation_sequence_tokens, rollout_kv_tokens, training_phases,
)
from lite_cpt.planner.workload import SATURATING_SEQUENCES, Workload, workload_of

#: GiB vLLM holds besides weights and KV cache: the profile run's PyTorch activation peak (at
#: the default batched-token budget: 1.26 GiB for Llama-3-8B in vLLM PR #10511's log, 1.42 GiB
#: for Qwen2.5-7B in vLLM issue #13882's), non-torch memory (0.03-0.20 GiB in single-GPU logs,
#: #13882 and #14447) and CUDA graphs (0.36 GiB estimated in the log of gpustack/runner PR #251):
#: about 2 GiB. Qwen-VL's vision encoder is profiled at the largest image the pixel budget
#: allows, which a large model.max_pixels can push above this.
ENGINE_OVERHEAD_GIB = 2.0
GENERATION_PHASES = ("rollout", "evaluation")


@dataclass(frozen=True)
class Engine:
    """The vLLM engine's share of the GPU and what it holds (sizes in GiB)."""

    gpu_gb: float
    utilization: float
    max_num_seqs: int
    weights_gb: float
    adapter_gb: float
    kv_bytes_per_token: float
    longest_sequence: int  # tokens: the longest prompt and the longest max_new_tokens (max_model_len)
    sequence_tokens: dict[str, float]  # KV tokens of one sequence (rollout_kv_tokens), per task and "evaluation"
    overhead_gb: float = ENGINE_OVERHEAD_GIB

    @property
    def share_gb(self) -> float:
        return self.utilization * self.gpu_gb

    @property
    def fixed_gb(self) -> float:
        return self.weights_gb + self.adapter_gb + self.overhead_gb

    @property
    def kv_cache_gb(self) -> float:
        return self.share_gb - self.fixed_gb  # below 0: the share does not hold the weights

    @property
    def kv_tokens(self) -> int:
        tokens = max(0.0, self.kv_cache_gb) * GIB / self.kv_bytes_per_token
        return int(tokens // KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS

    @property
    def holds_longest(self) -> bool:
        return self.kv_tokens >= self.longest_sequence

    @property
    def useful_sequences(self) -> int:
        """Sequences worth decoding at once: decode saturates at SATURATING_SEQUENCES."""
        return min(self.max_num_seqs, SATURATING_SEQUENCES)

    def slots(self) -> dict[str, int]:
        return {name: engine_slots(self.kv_tokens, self.max_num_seqs, tokens)
                for name, tokens in self.sequence_tokens.items()}

    def share_for(self, sequences: int, tokens: float) -> float:
        """GiB of a share whose KV cache holds `sequences` of `tokens` (one block spare for rounding)."""
        return self.fixed_gb + (sequences * tokens + KV_BLOCK_TOKENS) * self.kv_bytes_per_token / GIB

    def utilization_range(self, trainer_gb: float, usable_gb: float) -> tuple[float, float, float]:
        """(the smallest utilization that starts: one full-length sequence, the smallest that holds
        `useful_sequences` of every task's expected length, the largest the trainer's `trainer_gb`
        leaves room for within `usable_gb`), in hundredths."""
        longest = max(self.sequence_tokens.values(), default=self.longest_sequence)
        useful = max(self.share_for(self.useful_sequences, longest), self.share_for(1, self.longest_sequence))
        return (_ceil(self.share_for(1, self.longest_sequence) / self.gpu_gb), _ceil(useful / self.gpu_gb),
                math.floor(100 * (usable_gb - trainer_gb) / self.gpu_gb) / 100)

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu_memory_utilization": self.utilization, "share_gb": round(self.share_gb, 3),
            "weights_gb": round(self.weights_gb, 3), "adapter_gb": round(self.adapter_gb, 3),
            "overhead_gb": self.overhead_gb, "kv_cache_gb": round(self.kv_cache_gb, 3), "kv_tokens": self.kv_tokens,
            "longest_sequence": self.longest_sequence, "holds_longest": self.holds_longest,
            "max_num_seqs": self.max_num_seqs,
            "sequence_tokens": {k: round(v, 1) for k, v in self.sequence_tokens.items()}, "slots": self.slots(),
        }

    def describe(self) -> list[str]:
        slots = ", ".join(f"{name} {n}" for name, n in self.slots().items())
        return [
            f"vLLM engine (rollout.backend: vllm), awake in rollout and evaluation: share "
            f"{self.utilization:g} x {self.gpu_gb:g} = {self.share_gb:.2f} GiB = weights {self.weights_gb:.2f} + "
            f"LoRA slot {self.adapter_gb:.2f} + overhead {self.overhead_gb:.2f} + KV cache {self.kv_cache_gb:.2f} GiB "
            f"({self.kv_tokens:,} tokens; one full-length sequence: {self.longest_sequence:,})",
            f"sequences decoding at once (min(max_num_seqs {self.max_num_seqs}, KV tokens / a sequence's: its "
            f"answer and its prompt, a group's prompt blocks shared by its samples)): {slots}",
        ]


def _ceil(share: float) -> float:
    return math.ceil(100 * share - 1e-9) / 100


def engine_of(recipe, works: list[Workload], gpu_gb: float, cal, counts_by_arm: list) -> Engine | None:
    """The recipe's vLLM engine on a `gpu_gb` GPU (None with rollout.backend hf): one per process,
    shared by every arm; expected sequence lengths from the time plan's (`counts_by_arm`, one per
    work), the evaluation's from the first arm that decodes chains of thought (else the first)."""
    if recipe.rollout.backend != "vllm":
        return None
    from lite_cpt.train.vllm_backend import lora_rank_bucket

    work = works[0]
    adapter = lora_parameters(work.shape, lora_rank_bucket(work.lora_r), work.lora_targets) * work.act_bytes
    longest = max(w.prompt_tokens + max(w.new_tokens if w.is_rft else 0, w.eval_new_tokens) for w in works)
    tokens: dict[str, float] = {}
    for w, counts in zip(works, counts_by_arm):
        if w.is_rft:
            for task in training_phases(counts) or counts.tasks:
                tokens[task.name] = max(tokens.get(task.name, 0.0), rollout_kv_tokens(w, cal, task, w.group_size))
    evaluating = next((i for i, w in enumerate(works) if w.is_rft), 0)
    tokens["evaluation"] = evaluation_sequence_tokens(works[evaluating], cal, counts_by_arm[evaluating])
    return Engine(gpu_gb=gpu_gb, utilization=recipe.rollout.gpu_memory_utilization,
                  max_num_seqs=recipe.rollout.max_num_seqs, weights_gb=sum(frozen_weight_bytes(work).values()) / GIB,
                  adapter_gb=adapter / GIB, kv_bytes_per_token=kv_bytes_per_token(work), longest_sequence=longest,
                  sequence_tokens=tokens)


def engine_counts(recipe, arm, cal, gpu_gb: float | None):
    """The arm's counts (timeplan.Counts) with the KV cache of the recipe's vLLM engine on a
    `gpu_gb` GPU, as `lite-cpt plan` sizes them for every arm of the recipe; without a GPU size
    (a CPU) or with rollout.backend hf, `counts_of` alone."""
    counts = counts_of(recipe, arm, cal)
    if gpu_gb is None or recipe.rollout.backend != "vllm":
        return counts
    works = [workload_of(recipe, a) for a in recipe.arms]
    return on_engine(counts, engine_of(recipe, works, gpu_gb, cal, [counts_of(recipe, a, cal) for a in recipe.arms]))


def on_engine(counts, engine: Engine | None):
    """`counts` (timeplan.Counts) with the engine's KV cache, which sizes its slots."""
    return counts if engine is None else replace(counts, engine_kv_tokens=engine.kv_tokens)


def trainer_resident_gb(work: Workload, phase: str) -> float:
    """GiB the trainer holds while the engine generates in `phase` (allocator slack, CUDA context)."""
    return device_peak_gb(sum(engine_resident_bytes(work, phase).values()))


def engine_phase(phase, work: Workload, engine: Engine, usable_gb: float):
    """`phase` (a PhasePlan of rollout or evaluation) with the engine generating: the trainer's
    resident state plus the engine's share, which knobs do not change."""
    tensors = engine_resident_bytes(work, phase.name)
    components = {k: v / GIB for k, v in tensors.items()}
    components["fragmentation"] = sum(tensors.values()) * FRAGMENTATION / GIB
    components["cuda_context"] = CUDA_CONTEXT_GIB
    components.update(engine_weights=engine.weights_gb, engine_adapter=engine.adapter_gb,
                      engine_overhead=engine.overhead_gb, engine_kv_cache=max(0.0, engine.kv_cache_gb))
    engine_gb = max(engine.share_gb, engine.fixed_gb)
    peak = trainer_resident_gb(work, phase.name) + engine_gb
    return replace(phase, instant="vllm_generate", components=components, peak_gb=peak, naive_peak_gb=peak,
                   min_peak_gb=peak, allocated_gb=sum(tensors.values()) / GIB + engine_gb,
                   fits=peak <= usable_gb and engine.holds_longest)


def with_engine(arms: dict, engine: Engine, usable_gb: float) -> tuple[dict, list[str]]:
    """The arm plans with their rollout and evaluation phases on the engine, their fit and advice
    redone (the transformers generation phases' advice no longer applies); and notes."""
    trainer = max(trainer_resident_gb(arm.workload, p) for arm in arms.values() for p in arm.phases
                  if p in GENERATION_PHASES)
    advice, notes = engine_advice(engine, trainer, usable_gb)
    out = {}
    for name, arm in arms.items():
        phases = {p: engine_phase(v, arm.workload, engine, usable_gb) if p in GENERATION_PHASES else v
                  for p, v in arm.phases.items()}
        lines: list[str] = []
        for phase, plan in phases.items():
            if not plan.fits:
                found = advice if phase in GENERATION_PHASES else advice_for(arm.workload, phase, usable_gb)
                lines += [a for a in found if a not in lines]
        fits = all(p.fits for p in phases.values())
        lines += [a for a in arm.advice if not fits and "frozen model alone" in a]
        out[name] = replace(arm, phases=phases, fits=fits, advice=lines)
    return out, notes


def engine_advice(engine: Engine, trainer_gb: float, usable_gb: float) -> tuple[list[str], list[str]]:
    """(advice when the engine does not fit, notes when it does): the rollout.gpu_memory_utilization
    that holds the weights, overhead and `useful_sequences` of every task's expected length, within
    what the trainer's resident state (`trainer_gb`, its largest in a generation phase) leaves."""
    start, useful, largest = engine.utilization_range(trainer_gb, usable_gb)
    now = engine.utilization
    fits = engine.holds_longest and trainer_gb + max(engine.share_gb, engine.fixed_gb) <= usable_gb
    if largest < start:
        return [f"the trainer's resident state while vLLM generates ({trainer_gb:.1f} GiB) leaves "
                f"{usable_gb - trainer_gb:.1f} GiB, less than the engine's weights, LoRA slot and overhead "
                f"({engine.fixed_gb:.1f} GiB) and one full-length sequence need ({start * engine.gpu_gb:.1f} GiB): "
                "set rollout.backend: hf, or use a GPU with more memory"], []
    chosen = min(useful, largest)
    slots = replace(engine, utilization=chosen).slots().values()
    what = (f"vLLM's share {chosen * engine.gpu_gb:.1f} GiB decodes {min(slots)}-{max(slots)} sequences at once "
            f"(by task); {start:.2f} starts it, {useful:.2f} holds {engine.useful_sequences} of every task's; "
            f"above {largest:.2f} the trainer's {trainer_gb:.1f} GiB does not fit")
    if not fits:
        return [f"set rollout.gpu_memory_utilization: {chosen:.2f} (now {now:g}; "
                f"--set rollout.gpu_memory_utilization={chosen:.2f}): {what}"], []
    fewest = min(engine.slots().values())
    if chosen > now and fewest < engine.useful_sequences:
        return [], [f"vLLM decodes as few as {fewest} sequences at once at rollout.gpu_memory_utilization {now:g}; "
                    f"--set rollout.gpu_memory_utilization={chosen:.2f}: {what}"]
    return [], []


def engine_decode_notes(work: Workload, cal: Calibration) -> list[str]:
    """Which decode figures priced the engine's phases (rollouts, RIF's estimate, evaluation):
    its own (measured, or derived for the reference card), or transformers generate's, which the
    plan says."""
    decode = engine_decode(work, cal)
    per_step = f"{decode.decode_step_s * 1e3:.2f} ms per step + {decode.decode_s_per_sequence * 1e3:.3f} ms per sequence"
    derived = cal.is_reference
    measure = "measure the engine with `lite-cpt bench gpu --recipe RECIPE --json F` where vLLM is installed"
    if decode is not cal:
        if derived:
            return [f"vLLM's decode (rollouts, RIF's estimate, evaluation) priced with the engine's own figures, derived "
                    f"for the reference card (transformers' bnb weight path without its per-layer launches; "
                    f"lite_cpt/planner/calibration.py): {per_step}; {measure}"]
        return [f"vLLM's decode (rollouts, RIF's estimate, evaluation) priced with the engine's own figures, "
                f"measured on {cal.device}: {per_step}"]
    where = "derived for the reference card" if derived else f"measured on {cal.device}"
    if cal.has_engine_decode:
        where += f"; its engine figures are of {cal.model}"
    return [f"vLLM's decode (rollouts, RIF's estimate, evaluation) priced with transformers generate's figures "
            f"({where}: {per_step}); vLLM's continuous batching decodes faster per step, so these phases are likely "
            f"over-estimated: {measure}"]


def offload_notes(work: Workload, cal: Calibration) -> list[str]:
    """What rollout.offload_trainer moves around each engine call, and at what rate."""
    if not work.offload_trainer:
        return []
    moved = offload_bytes(work, "rollout") / GIB
    where = "derived" if cal.is_reference else f"measured on {cal.device}"
    return [f"the trainer's state ({moved:.1f} GiB: frozen base, adapters, optimizer moments) waits in host memory "
            f"while vLLM generates (rollout.offload_trainer), copied out and back around each engine call at "
            f"{cal.host_copy_gb_per_s:.0f} GB/s ({where}); it needs as much free (pinned) host memory, beside the "
            "engine's own weights while it sleeps"]
