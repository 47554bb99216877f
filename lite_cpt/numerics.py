"""Non-finite updates: a NaN or inf loss or gradient is skipped, never stepped into the adapter.

A skipped update makes no optimizer step, so neither the weights nor AdamW's moments (nor
its step count) move. Isolated faults (one bad batch in bf16) are counted and logged; a run
of `limit` consecutive ones means training has diverged, and the phase stops with a message
that names the step, the loss parts and the knobs to look at.
"""

from __future__ import annotations

import logging
import math

import torch

from lite_cpt.errors import UserError

log = logging.getLogger(__name__)


class NonFiniteTraining(UserError):
    """Too many consecutive updates had a non-finite loss or gradient."""


def _finite(value) -> bool:
    if value is None:
        return True
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    return math.isfinite(float(value))


class NonFiniteGuard:
    """Decides, per optimizer step, whether the accumulated update may be applied."""

    def __init__(self, limit: int, hint: str = ""):
        self.limit = limit
        self.hint = hint  # the phase's knobs, e.g. "lr=1e-3, kl_beta=0.01, dtype=bfloat16"
        self.consecutive = 0
        self.skipped = 0

    def allow(self, step: int, loss_parts: dict, grad_norm) -> bool:
        """True when the loss parts and the gradient norm are finite. Otherwise the update is
        to be skipped (the caller zeroes the gradients without stepping); after `limit`
        consecutive skips, raise `NonFiniteTraining`."""
        if all(_finite(v) for v in loss_parts.values()) and _finite(grad_norm):
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive >= self.limit:
            parts = ", ".join(f"{k}={float(v):.4g}" for k, v in loss_parts.items() if v is not None)
            raise NonFiniteTraining(
                f"training diverged: {self.consecutive} consecutive updates up to step {step} had a non-finite "
                f"loss or gradient ({parts}, grad_norm={float(grad_norm):.4g}); nothing was stepped into the "
                f"adapter. Look at the learning rate, the KL coefficient and the precision ({self.hint}); "
                "faults.max_consecutive_nonfinite sets how many are tolerated"
            )
        return False

    def state(self) -> dict:
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def load(self, state: dict) -> None:
        self.consecutive, self.skipped = state["consecutive"], state["skipped"]


#: Attribute of a model (and of its optimizers) that holds its GradScaler.
GRAD_SCALER = "lite_cpt_grad_scaler"


def loss_scaler(model) -> torch.amp.GradScaler | None:
    """The model's GradScaler, created on first use, when it computes in float16 (the device
    policy's choice below compute capability 8.0): fp16's exponent flushes small activation
    gradients to zero unless the loss is scaled up first. None for bf16 and fp32 models."""
    scaler = getattr(model, GRAD_SCALER, None)
    if scaler is None:
        if not any(p.dtype == torch.float16 for p in model.parameters()):  # fp32 adapters on an fp16 base too
            return None
        scaler = torch.amp.GradScaler(next(model.parameters()).device.type)
        setattr(model, GRAD_SCALER, scaler)
    return scaler


def backward(loss: torch.Tensor, model) -> None:
    """`loss.backward()`, the loss scaled by the model's GradScaler when it has one."""
    scaler = getattr(model, GRAD_SCALER, None)
    (loss if scaler is None else scaler.scale(loss)).backward()


def step_if_finite(optimizer: torch.optim.Optimizer, params: list, grad_clip: float, guard: NonFiniteGuard | None,
                   step: int, loss_parts: dict) -> bool:
    """Clip the accumulated gradients and step the optimizer unless `guard` finds a loss part
    or the gradient norm non-finite; the gradients are cleared either way. True when stepped.

    With a GradScaler on the optimizer (fp16), the gradients are unscaled before clipping; an
    overflow of the scaled gradients with finite losses is the scaler's business (the step is
    skipped and the scale lowered), not a training fault the guard counts."""
    scaler = getattr(optimizer, GRAD_SCALER, None)
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    overflow = scaler is not None and not _finite(grad_norm) and all(_finite(v) for v in loss_parts.values())
    allowed = not overflow and (guard is None or guard.allow(step, loss_parts, grad_norm))
    if scaler is not None:
        if allowed:
            scaler.step(optimizer)
        scaler.update()  # lowers the scale after an overflow, raises it after a run of clean steps
    elif allowed:
        optimizer.step()
    if overflow:
        log.info("update %d: fp16 gradients overflowed; skipped, the loss scale is lowered to %g", step,
                 scaler.get_scale())
    elif not allowed:
        parts = ", ".join(f"{k}={float(v):.4g}" for k, v in loss_parts.items() if v is not None)
        log.warning("update %d: non-finite loss or gradient (%s, grad_norm=%.4g); skipped, nothing stepped "
                    "(%d in a row, %d in this phase)", step, parts, float(grad_norm), guard.consecutive,
                    guard.skipped)
    optimizer.zero_grad(set_to_none=True)
    return allowed
