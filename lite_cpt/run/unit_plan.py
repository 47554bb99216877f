"""The recipe resolved once: what the run loop hands below itself.

The top of the run loop (lite_cpt.run.continual: `run_recipe`, `run_seed_arms`, the workspace)
is the last place that reads the whole recipe. From it, once per process and seed, comes the
`EvaluationPlan` every row of that seed is evaluated with, and once per (seed, arm) a
`UnitPlan`: the arm's own recipe section and every recipe-wide value its training reads,
already resolved (the planner's knobs for this GPU, the evaluation prompt, the checkpoint and
fault policies, the rollout engine's settings, the time plan). Everything below — the phases,
the trainers, the arms, evaluation, checkpoints, the out-of-memory explainer — takes these,
never the recipe, so a value has one meaning and is worked out in one place.

    recipe ──plan_evaluation──▶ EvaluationPlan (on the Workspace: rows, base row)
    recipe ──plan_unit(arm)───▶ UnitPlan ──▶ Phase(knobs, guard, checkpoint, ...) ──▶ train_sft / train_rft
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from lite_cpt.planner import plan as memory_plan
from lite_cpt.planner import resolve_eval_batch, resolve_knobs
from lite_cpt.planner.engine import engine_counts
from lite_cpt.planner.timeplan import predicted_phases
from lite_cpt.planner.workload import Knobs
from lite_cpt.run.checkpoint import CheckpointPolicy
from lite_cpt.run.eval_prompt import arm_eval_cot
from lite_cpt.run.run_time_plan import TimePlan, calibration_of
from lite_cpt.train.oom import PlanFor, explain_oom

if TYPE_CHECKING:
    from lite_cpt.recipe import ArmConfig, GenerationConfig, ModelConfig, Recipe, RolloutConfig


@dataclass(frozen=True)
class EvaluationPlan:
    """How every row of a seed is evaluated: the recipe's generation settings with the batch
    resolved for this GPU (`batch_size: auto` spelled out), and the memory plan an
    out-of-memory error during evaluation is explained with."""

    generation: GenerationConfig
    plan_for: PlanFor | None = None
    engine: RolloutPlan | None = None  # rollout.backend vllm: every row generates on the engine

    def guard(self):
        return explain_oom(self.plan_for, "evaluation")


@dataclass(frozen=True)
class RolloutPlan:
    """The vLLM engine's settings (`rollout.backend: vllm`): the trainer's base, the recipe's
    engine settings and room for the longest prompt and answer any arm or evaluation asks for
    (one engine serves every arm of the process)."""

    model: ModelConfig
    settings: RolloutConfig
    max_model_len: int


@dataclass(frozen=True)
class UnitPlan:
    """One (seed, arm) resolved from the recipe once (see the module docstring)."""

    arm: ArmConfig  # the arm's own section: what to train
    seed: int  # the run seed; phases derive theirs from it, the arm and the task
    knobs: Knobs  # micro-batch, log-prob chunk, rollout batch, token budget (planned for this GPU)
    eval_cot: bool  # evaluated with the chain-of-thought prompt (lite_cpt.run.eval_prompt)
    checkpoint: CheckpointPolicy
    max_nonfinite: int  # faults.max_consecutive_nonfinite
    max_weight: float  # faults.max_adapter_weight
    vision_cache_gb: float  # model.vision_cache_gb
    rollout: RolloutPlan | None  # None: transformers generate, or an arm without rollouts
    time: TimePlan
    plan_for: PlanFor | None = None  # the memory plan of this arm on a GPU of N GiB (error messages)

    @property
    def name(self) -> str:
        return self.arm.name

    def guard(self, step: str):
        """Turns an out-of-memory error in `step` into the planner's advice for this arm."""
        return explain_oom(self.plan_for, step, arm=self.arm.name)


def plan_evaluation(recipe: Recipe) -> EvaluationPlan:
    return EvaluationPlan(planned_generation(recipe), partial(memory_plan, recipe), engine_plan(recipe))


def planned_generation(recipe: Recipe) -> GenerationConfig:
    """The recipe's evaluation generation settings with `batch_size: auto` replaced by the
    planner's prompts per call for this GPU (`resolve_eval_batch`)."""
    generation = recipe.evaluation.generation
    return generation.model_copy(update={"batch_size": resolve_eval_batch(recipe)})


def plan_unit(recipe: Recipe, arm: ArmConfig, model, calibration) -> UnitPlan:
    """The plan of `arm` under seed `recipe.seed`, for the model it trains (its device picks the
    calibration the time plan may use)."""
    knobs = resolve_knobs(recipe, arm.name)
    cal, why_not, running = calibration_of(model, calibration)
    predictions = None if cal is None else predicted_phases(recipe, arm, knobs, cal,
                                                            engine_counts(recipe, arm, cal, device_gb(model)))
    checkpoint, faults = recipe.checkpoint, recipe.faults
    return UnitPlan(
        arm=arm, seed=recipe.seed, knobs=knobs, eval_cot=arm_eval_cot(recipe, arm),
        checkpoint=CheckpointPolicy(every_updates=checkpoint.every_updates, every_minutes=checkpoint.every_minutes,
                                    keep=checkpoint.keep),
        max_nonfinite=faults.max_consecutive_nonfinite, max_weight=faults.max_adapter_weight,
        vision_cache_gb=recipe.model.vision_cache_gb, rollout=rollout_plan(recipe, arm),
        time=TimePlan(predictions, cal.device if cal is not None else None, running, why_not),
        plan_for=partial(memory_plan, recipe, arm=arm.name),
    )


def device_gb(model) -> float | None:
    """GiB of the CUDA GPU `model` is on (the engine's share of it sizes vLLM's slots); None on a CPU."""
    import torch

    from lite_cpt.train.rollout import model_device

    device = model_device(model)
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def rollout_plan(recipe: Recipe, arm: ArmConfig) -> RolloutPlan | None:
    """The vLLM engine's settings when the recipe asks for it and the arm rolls out."""
    return engine_plan(recipe) if "rft" in arm.method else None


def engine_plan(recipe: Recipe) -> RolloutPlan | None:
    """The vLLM engine's settings when the recipe asks for it (rollout.backend vllm)."""
    if recipe.rollout.backend != "vllm":
        return None
    return RolloutPlan(recipe.model, recipe.rollout, longest_sequence(recipe))


def longest_sequence(recipe: Recipe) -> int:
    """Tokens one request may need: the longest prompt the tasks allow and the longest answer."""
    prompt = max((t.max_prompt_tokens for t in recipe.tasks), default=DEFAULT_PROMPT_TOKENS)
    answer = max([a.rft.max_new_tokens for a in recipe.arms if hasattr(a, "rft")]
                 + [recipe.evaluation.generation.max_new_tokens])
    return prompt + answer


#: Room for a prompt whose task sets no max_prompt_tokens.
DEFAULT_PROMPT_TOKENS = 2048
