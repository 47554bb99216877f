"""The SFT learning-rate schedule and epochs, as the paper's SFT ran in LLaMA-Factory.

LLaMA-Factory's Qwen2.5-VL LoRA example of the paper's period (hiyouga/LLaMA-Factory 1b1ec9b,
2025-07-06, examples/train_lora/qwen2_5vl_lora_sft.yaml): learning_rate 1.0e-4, num_train_epochs
3.0, lr_scheduler_type cosine, warmup_ratio 0.1, cutoff_len 2048, image_max_pixels 262144. Each
task is its own LLaMA-Factory run, so the schedule starts over at every task.

The schedule is transformers' `get_cosine_schedule_with_warmup` (what LLaMA-Factory's Trainer
builds): ceil(warmup_ratio x steps) warmup steps rising linearly from 0, then half a cosine down
to 0 at the last step. Optimizer step k (0-based) runs at lr x factor(k).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field


class ScheduleFields(BaseModel):
    """An arm's learning-rate schedule within each phase and its passes over each task."""

    lr_scheduler: Literal["constant", "cosine"] = Field(
        "constant", description="SFT learning-rate schedule within each task: constant, or cosine (decay to 0 "
        "after warmup_ratio of the steps; LLaMA-Factory's Qwen2.5-VL example). RL arms: constant (EasyR1's).",
    )
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="Share of each task's SFT steps with a linear warmup from 0 (LLaMA-Factory "
        "example: 0.1); applies to either schedule.",
    )
    epochs: float | None = Field(
        None, gt=0, description="Passes over each task's training set for this arm; None = the task's epochs "
        "(the paper's SFT: LLaMA-Factory's example, 3).",
    )


def warmup_steps(total: int, warmup_ratio: float) -> int:
    """transformers' TrainingArguments.get_warmup_steps: ceil(total x ratio)."""
    return math.ceil(total * warmup_ratio)


def lr_factor(step: int, total: int, scheduler: str, warmup_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based) of `total`."""
    warmup = warmup_steps(total, warmup_ratio)
    if step < warmup:
        return step / max(1, warmup)
    if scheduler == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
