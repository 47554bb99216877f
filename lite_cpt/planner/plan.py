"""Plans: peak memory of every phase of every arm of a recipe on a GPU of a given size, with the
chosen knobs and advice; and the knobs a run uses (`resolve_knobs`)."""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from typing import Any

from lite_cpt.errors import UserError
from lite_cpt.planner.bytes import (
    ADAPTER_BYTES,
    CUDA_CONTEXT_GIB,
    FRAGMENTATION,
    GIB,
    NF4_DOUBLE_QUANT,
    SAFETY_MARGIN,
    default_logprob_chunk,
    device_peak_gb,
    frozen_weight_bytes,
    phase_peak_gb,
    tensor_peak_bytes,
)
from lite_cpt.planner.search import advice_for, choose_eval_batch, choose_knobs, floor_knobs
from lite_cpt.planner.shapes import lora_layout, parameter_counts, resolve_shape, total_parameters
from lite_cpt.planner.calibration import REFERENCE_24GB, Calibration, check_calibration
from lite_cpt.planner.engine import Engine, engine_decode_notes, engine_of, offload_notes, on_engine, with_engine
from lite_cpt.planner.timeplan import ArmTime, arm_time, base_evaluation_seconds, counts_of
from lite_cpt.planner.workload import PHASES, Knobs, Workload, arm_phases, image_tokens_of, workload_of


@dataclass
class PhasePlan:
    name: str
    arm: str
    instant: str  # the moment of the peak (backward, prefill, decode_end ...)
    components: dict[str, float]  # GiB, adding up to peak_gb
    peak_gb: float  # with the fused log-prob, at the chosen knobs
    naive_peak_gb: float  # same knobs, logits materialised
    min_peak_gb: float  # at the smallest knobs
    allocated_gb: float  # live tensors only: comparable with torch.cuda.max_memory_allocated
    fits: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "peak_gb": round(self.peak_gb, 3),
            "naive_peak_gb": round(self.naive_peak_gb, 3),
            "min_peak_gb": round(self.min_peak_gb, 3),
            "allocated_gb": round(self.allocated_gb, 3),
            "fits": self.fits,
            "arm": self.arm,
            "instant": self.instant,
            "components": {k: round(v, 3) for k, v in self.components.items()},
        }


@dataclass
class ArmPlan:
    arm: str
    method: str
    knobs: Knobs
    phases: dict[str, PhasePlan]
    fits: bool
    advice: list[str]
    workload: Workload
    time: ArmTime | None = None


@dataclass
class Plan:
    model: str
    gpu_gb: float
    usable_gb: float
    arms: dict[str, ArmPlan]
    parameters: dict[str, int]
    weights_gb: dict[str, float]
    notes: list[str] = field(default_factory=list)
    calibration: Calibration = REFERENCE_24GB
    base_evaluation_hours: float | None = None
    engine: Engine | None = None  # the vLLM engine (rollout.backend: vllm)

    @property
    def fits(self) -> bool:
        return all(a.fits for a in self.arms.values())

    @property
    def phases(self) -> dict[str, PhasePlan]:
        """Each phase at its most demanding arm."""
        worst: dict[str, PhasePlan] = {}
        for arm in self.arms.values():
            for name, phase in arm.phases.items():
                if name not in worst or phase.peak_gb > worst[name].peak_gb:
                    worst[name] = phase
        return {name: worst[name] for name in PHASES if name in worst}

    @property
    def knobs(self) -> dict[str, Knobs]:
        return {name: arm.knobs for name, arm in self.arms.items()}

    @property
    def advice(self) -> list[str]:
        seen: list[str] = []
        for arm in self.arms.values():
            seen += [a for a in arm.advice if a not in seen]
        return seen

    def time_json(self) -> dict[str, Any]:
        """Predicted hours per arm and phase, the base evaluation, and the throughputs used."""
        base = self.base_evaluation_hours
        return {
            "arms": {name: arm.time.to_json() for name, arm in self.arms.items() if arm.time is not None},
            "base_evaluation_hours": None if base is None else round(base, 3),
            "calibration": self.calibration.to_json(),
        }

    def knobs_for(self, arm: str) -> Knobs:
        return self.arms[arm].knobs

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "gpu_gb": self.gpu_gb,
            "usable_gb": round(self.usable_gb, 3),
            "fits": self.fits,
            "phases": {name: phase.to_json() for name, phase in self.phases.items()},
            "knobs": {name: knobs.to_json() for name, knobs in self.knobs.items()},
            "arms": {
                name: {"method": arm.method, "fits": arm.fits, "knobs": arm.knobs.to_json(),
                       "eval_batch_size": arm.workload.eval_batch,
                       "peak_gb": round(max(v.peak_gb for v in arm.phases.values()), 3),
                       "min_peak_gb": round(max(v.min_peak_gb for v in arm.phases.values()), 3),
                       "phases": {p: v.to_json() for p, v in arm.phases.items()}, "advice": arm.advice}
                for name, arm in self.arms.items()
            },
            "parameters": self.parameters,
            "weights_gb": {k: round(v, 3) for k, v in self.weights_gb.items()},
            "advice": self.advice,
            "notes": self.notes,
            "time": self.time_json(),
            "assumptions": {
                "safety_margin": SAFETY_MARGIN,
                "cuda_context_gb": CUDA_CONTEXT_GIB,
                "fragmentation": FRAGMENTATION,
                "adapter_bytes": ADAPTER_BYTES,
                "nf4_double_quant": NF4_DOUBLE_QUANT,
                "unit": "GiB (2^30 bytes)",
            },
            **({"engine": self.engine.to_json()} if self.engine is not None else {}),
        }


def _phase_plan(work: Workload, phase: str, knobs: Knobs, usable_gb: float) -> PhasePlan:
    instant, tensors = tensor_peak_bytes(work, phase, knobs)
    components = {k: v / GIB for k, v in instant.components.items()}
    components["fragmentation"] = tensors * FRAGMENTATION / GIB
    components["cuda_context"] = CUDA_CONTEXT_GIB
    peak = device_peak_gb(tensors)
    return PhasePlan(
        name=phase,
        arm=work.arm,
        instant=instant.name,
        components=components,
        peak_gb=peak,
        naive_peak_gb=phase_peak_gb(work, phase, knobs, naive=True),
        min_peak_gb=phase_peak_gb(work, phase, floor_knobs(work)),
        allocated_gb=tensors / GIB,
        fits=peak <= usable_gb,
    )


def plan_workload(work: Workload, gpu_gb: float) -> ArmPlan:
    usable = gpu_gb * (1 - SAFETY_MARGIN)
    work = choose_eval_batch(work, usable)
    knobs, fits = choose_knobs(work, usable)
    phases = {p: _phase_plan(work, p, knobs, usable) for p in work.phases}
    advice: list[str] = []
    if not fits:
        for name, phase in phases.items():
            if not phase.fits:
                advice += [a for a in advice_for(work, name, usable) if a not in advice]
        frozen = sum(frozen_weight_bytes(work).values()) / GIB
        if frozen + CUDA_CONTEXT_GIB > usable:
            advice.append(f"the frozen model alone needs {frozen:.1f} GiB: use a GPU with more memory")
    return ArmPlan(work.arm, work.method, knobs, phases, fits and all(p.fits for p in phases.values()), advice, work)


def plan(recipe, gpu_gb: float, arm: str | None = None, calibration: Calibration | None = None) -> Plan:
    """Peak GPU memory and predicted time of every phase of every arm (or only `arm`) on a
    `gpu_gb` GiB GPU whose throughputs are `calibration` (default: the reference 24 GB card)."""
    if isinstance(recipe, dict):
        from lite_cpt.recipe import recipe_from_dict

        recipe = recipe_from_dict(recipe)
    if gpu_gb <= 0:
        raise UserError(f"--gpu-gb must be positive, got {gpu_gb}")
    arms = recipe.arms
    if arm is not None:
        arms = [a for a in arms if a.name == arm]
        if not arms:
            raise UserError(f"recipe has no arm '{arm}' (arms: {', '.join(a.name for a in recipe.arms)})")
    shape = resolve_shape(recipe.model)
    eval_batch = recipe_eval_batch(recipe, gpu_gb * (1 - SAFETY_MARGIN))
    works = [with_eval_batch(workload_of(recipe, a), eval_batch) for a in arms]
    _, notes = image_tokens_of(recipe, shape)
    layout = lora_layout(shape, recipe.model.lora.r, recipe.model.lora.target_modules)
    if layout.vision_adapted or layout.head_adapted:
        notes.append("adapters on the vision tower or lm_head: their activations are not modelled")
    parameters = {**parameter_counts(shape), "total": total_parameters(shape), "lora": layout.parameters}
    calibration = calibration or REFERENCE_24GB
    notes += check_calibration(calibration, recipe.model.name, parameters["total"])
    arm_plans = {}
    counts_by_arm = [counts_of(recipe, config, calibration) for config in arms]
    engine = engine_of(recipe, works, gpu_gb, calibration, counts_by_arm)  # None: rollout.backend hf
    for work, counts in zip(works, counts_by_arm):
        arm_plans[work.arm] = plan_workload(work, gpu_gb)
        arm_plans[work.arm].time = arm_time(work, arm_plans[work.arm].knobs, calibration, on_engine(counts, engine))
    if engine is not None:  # rollout and evaluation generate on the engine
        arm_plans, engine_notes = with_engine(arm_plans, engine, gpu_gb * (1 - SAFETY_MARGIN))
        notes += engine_notes + engine_decode_notes(works[0], calibration) + offload_notes(works[0], calibration)
    base_eval = base_evaluation_seconds(works[0], calibration, on_engine(counts_by_arm[0], engine))
    notes += answer_length_notes(recipe, arms, calibration)
    return Plan(
        model=shape.name,
        gpu_gb=gpu_gb,
        usable_gb=gpu_gb * (1 - SAFETY_MARGIN),
        arms=arm_plans,
        parameters=parameters,
        weights_gb={k: v / GIB for k, v in frozen_weight_bytes(works[0]).items()},
        notes=notes,
        calibration=calibration,
        base_evaluation_hours=None if base_eval is None else base_eval / 3600,
        engine=engine,
    )


def answer_length_notes(recipe, arms, calibration) -> list[str]:
    """What the time plan assumes about sampled answers, per task, for the first RL arm."""
    rl = next((a for a in arms if "rollout" in arm_phases(a.method)), None)
    if rl is None:
        return []
    counts = counts_of(recipe, rl, calibration)
    cap = rl.rft.max_new_tokens
    how = "shared-prefix" if counts.shared_prefix else "expanded"
    lines = [f"answer lengths ({rl.name}, cap {cap}; {how} scoring passes):"]
    lines += [f"  {t.name}: {t.answers.describe(cap)}" for t in counts.tasks if t.answers is not None]
    return ["\n".join(lines)]


def gpu_memory_gb() -> float | None:
    """Total memory of the current CUDA device in GiB, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB


def resolve_knobs(recipe, arm: str, gpu_gb: float | None = None) -> Knobs:
    """Knobs for training `arm`: planned for this GPU (or `gpu_gb`); on CPU, memory is not the
    limit, so the micro-batch is the whole batch (or the recipe's token budget) and generation
    takes all prompts at once."""
    gpu_gb = gpu_gb if gpu_gb is not None else gpu_memory_gb()
    work = workload_of(recipe, next(a for a in recipe.arms if a.name == arm))
    if gpu_gb is None:
        mb = work.micro_batch_size or work.max_micro_batch
        budget = work.pinned_token_budget  # auto on CPU: no budget, the micro-batch is the whole batch
        return Knobs(mb, default_logprob_chunk(mb * max(work.answer_tokens, work.new_tokens), work.shape.vocab),
                     work.prompts_per_step, micro_batch_tokens=budget)
    return plan_workload(work, gpu_gb).knobs


def resolve_eval_batch(recipe, gpu_gb: float | None = None) -> int:
    """Prompts per evaluation generate call: the recipe's number, else the planner's choice for
    this GPU (or `gpu_gb`, `recipe_eval_batch`); on CPU, where memory is not the limit,
    SATURATING_SEQUENCES."""
    gpu_gb = gpu_gb if gpu_gb is not None else gpu_memory_gb()
    work = workload_of(recipe, recipe.arms[0])
    if gpu_gb is None or not work.eval_batch_auto:
        return work.eval_batch
    return recipe_eval_batch(recipe, gpu_gb * (1 - SAFETY_MARGIN))


def recipe_eval_batch(recipe, usable_gb: float) -> int | None:
    """One evaluation batch for the whole recipe when it is left at auto (None when pinned): the
    smallest of its arms' choices, so every arm's evaluation fits (a GRPO arm also holds its KL
    reference adapter) and every arm, and the base row, answers in calls of the same size."""
    works = [workload_of(recipe, arm) for arm in recipe.arms]
    if not works[0].eval_batch_auto:
        return None
    return min(choose_eval_batch(work, usable_gb).eval_batch for work in works)


def with_eval_batch(work: Workload, eval_batch: int | None) -> Workload:
    """`work` evaluating at the recipe-wide `eval_batch` (unchanged when the recipe pins one)."""
    if eval_batch is None or not work.eval_batch_auto:
        return work
    return dataclasses.replace(work, eval_batch=eval_batch, eval_batch_auto=False)
