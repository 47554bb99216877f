"""Out-of-GPU-memory errors turned into one clear `UserError`: the phase that ran out, the
planner's estimate for it on this GPU, and the recipe knobs to turn.

    with explain_oom(plan_for, "grpo_step", arm=arm.name):
        loss.backward()

`plan_for(gpu_gb)` makes the memory plan the message quotes (the run's unit plan binds it to the
recipe, lite_cpt.run.unit_plan); it runs only once an allocation has failed.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Iterator

from lite_cpt.errors import UserError
from lite_cpt.planner import Plan, advice_for, gpu_memory_gb
from lite_cpt.train.phase import PHASES

# Substrings of the errors CUDA, cuBLAS and torch raise when an allocation fails.
OOM_MARKERS = ("out of memory", "cublas_status_alloc_failed", "cudaerrormemoryallocation")
ALLOCATOR_HINT = (
    "set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to cut allocator fragmentation"
)
#: The memory plan of a recipe (or one of its arms) on a GPU of this many GiB.
PlanFor = Callable[[float], Plan]

# Knobs to try when no plan is available, by phase.
GENERIC_ADVICE = {
    "sft_step": ["lower arms.<arm>.micro_batch_size", "lower tasks.*.max_answer_tokens", "lower model.max_pixels"],
    "rollout": ["reduce rft.group_size", "lower rft.max_new_tokens", "lower model.max_pixels"],
    "logprob_pass": ["lower arms.<arm>.micro_batch_size", "lower rft.max_new_tokens", "lower model.max_pixels"],
    "grpo_step": ["lower arms.<arm>.micro_batch_size", "reduce rft.group_size", "lower rft.max_new_tokens"],
    "evaluation": ["lower evaluation.generation.batch_size", "lower evaluation.generation.max_new_tokens"],
}


def is_oom(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or a RuntimeError whose message says the GPU ran out."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MARKERS)


def _torch_report(message: str) -> str | None:
    """'tried to allocate X with Y allocated by PyTorch (Z free)' from torch's OOM message."""
    found = {}
    for key, pattern in (
        ("request", r"Tried to allocate ([\d.]+ [KMGT]?i?B)"),
        ("allocated", r"([\d.]+ [KMGT]?i?B) is allocated by PyTorch"),
        ("free", r"of which ([\d.]+ [KMGT]?i?B) is free"),
    ):
        match = re.search(pattern, message)
        if match:
            found[key] = match.group(1)
    if "request" not in found:
        return None
    text = f"torch tried to allocate {found['request']}"
    if "allocated" in found:
        text += f" with {found['allocated']} already allocated"
    if "free" in found:
        text += f" ({found['free']} free)"
    return text


def oom_advice(plan_or_none: Plan | None, phase: str, exc: BaseException, *, arm: str | None = None) -> str:
    """The message for an out-of-memory error in `phase`: estimate vs GPU and knobs to turn."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase '{phase}'; phases: {', '.join(PHASES)}")
    where = f"{phase} (arm {arm})" if arm else phase
    lines = [f"out of GPU memory during {where}."]
    report = _torch_report(str(exc))
    if report:
        lines[0] += f" {report[0].upper()}{report[1:]}."
    advice: list[str] = []
    arm_plan = None
    if plan_or_none is not None:
        if arm is not None and arm in plan_or_none.arms:
            arm_plan = plan_or_none.arms[arm]
        else:  # the arm with the largest estimate for this phase
            candidates = [a for a in plan_or_none.arms.values() if phase in a.phases]
            arm_plan = max(candidates, key=lambda a: a.phases[phase].peak_gb, default=None)
    if arm_plan is not None and phase in arm_plan.phases:
        estimate = arm_plan.phases[phase]
        knobs = arm_plan.knobs
        lines.append(
            f"The planner estimates {estimate.peak_gb:.1f} GiB for {phase} on this "
            f"{plan_or_none.gpu_gb:.1f} GiB GPU ({plan_or_none.usable_gb:.1f} GiB usable) with "
            f"micro_batch_size {knobs.micro_batch_size}, logprob_chunk {knobs.logprob_chunk}, "
            f"rollout_batch_size {knobs.rollout_batch_size}; at the smallest knobs it needs "
            f"{estimate.min_peak_gb:.1f} GiB."
        )
        if estimate.fits:
            lines.append(
                "That estimate fits, so another process may hold GPU memory (check nvidia-smi), "
                "or this batch is longer than the recipe's limits."
            )
        if phase in ("sft_step", "grpo_step", "logprob_pass") and knobs.micro_batch_size > 1:
            advice.append(
                f"set arms.{arm_plan.arm}.micro_batch_size: {max(1, knobs.micro_batch_size // 2)} "
                f"(the plan chose {knobs.micro_batch_size})"
            )
        if phase == "rollout" and knobs.rollout_batch_size > 1:
            advice.append(
                f"set arms.{arm_plan.arm}.rft.rollout_batch_size: {max(1, knobs.rollout_batch_size // 2)} "
                f"(the plan chose {knobs.rollout_batch_size})"
            )
        advice += advice_for(arm_plan.workload, phase, plan_or_none.usable_gb)
    else:
        lines.append("No memory plan was available; `lite-cpt plan RECIPE --gpu-gb N` shows one.")
        advice += [a.replace("<arm>", arm or "<arm>") for a in GENERIC_ADVICE[phase]]
    advice.append(ALLOCATOR_HINT)
    lines.append("Try: " + "; ".join(advice) + ".")
    return "\n".join(lines)


def _plan_quietly(plan_for: PlanFor | None, gpu_gb: float | None) -> Plan | None:
    """A plan for the error message, or None when the planner itself cannot run here."""
    try:
        gpu = gpu_gb if gpu_gb is not None else gpu_memory_gb()
        if gpu is None or plan_for is None:
            return None
        return plan_for(gpu)
    except Exception:  # the message must still come out if the recipe cannot be planned
        return None


@contextmanager
def explain_oom(plan_for: PlanFor | None, phase: str, *, arm: str | None = None,
                gpu_gb: float | None = None) -> Iterator[None]:
    """Re-raise an out-of-memory error inside the block as a `UserError` from `oom_advice`,
    quoting `plan_for(gpu_gb)` (None: no plan, generic advice).

    Usable as a decorator too (`@explain_oom(plan_for, "sft_step")`). `gpu_gb` defaults to the
    current CUDA device's memory. Other exceptions pass through untouched.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase '{phase}'; phases: {', '.join(PHASES)}")
    try:
        yield
    except Exception as exc:
        if not is_oom(exc):
            raise
        message = oom_advice(_plan_quietly(plan_for, gpu_gb), phase, exc, arm=arm)
        # The traceback holds the failed step's frames and so its tensors; drop it so that the
        # memory can be freed as soon as the stack unwinds.
        exc.__traceback__ = None
        raise UserError(message) from None


__all__ = ["PlanFor", "explain_oom", "is_oom", "oom_advice"]
