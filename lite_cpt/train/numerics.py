"""Divergence is a state, not a crash: non-finite updates are skipped, exploding weights and
non-finite sampling probabilities stop the phase with one message.

A skipped update makes no optimizer step, so neither the weights nor AdamW's moments (nor
its step count) move. Isolated faults (one bad batch in bf16) are counted and logged; a run
of `limit` consecutive ones means training has diverged, and the phase stops with a message
that names the step, the loss parts and the knobs to look at. The same message stops a phase
whose adapter weights leave the finite range or grow past `faults.max_adapter_weight` after an
update (a runaway learning rate: the loss may still look finite), and one whose rollouts meet
non-finite sampling probabilities. `flat_phase` names a phase whose loss or reward never moved.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager

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


#: Largest |weight| an adapter may reach (faults.max_adapter_weight): LoRA weights stay near 1;
#: one step of a runaway learning rate moves each by about the rate itself.
MAX_ADAPTER_WEIGHT = 1e4


def _parts(loss_parts: dict) -> str:
    return ", ".join(f"{k}={float(v):.4g}" for k, v in loss_parts.items() if v is not None)


class NonFiniteGuard:
    """Decides, per optimizer step, whether the accumulated update may be applied, and stops
    the phase when training has diverged."""

    def __init__(self, limit: int, hint: str = "", max_weight: float = MAX_ADAPTER_WEIGHT):
        self.limit = limit
        self.hint = hint  # the phase's knobs, e.g. "lr=1e-3, kl_beta=0.01, dtype=bfloat16"
        self.max_weight = max_weight
        self.consecutive = 0  # updates in a row with a non-finite optimizer step
        self.skipped = 0  # optimizer steps skipped in the phase
        self._run: tuple[int, int] | None = None  # (first, last) update of the current run of skips
        self._last = ""  # the loss parts and gradient norm of the last skipped step

    def allow(self, step: int, loss_parts: dict, grad_norm) -> bool:
        """True when the loss parts and the gradient norm are finite. Otherwise the update is
        to be skipped (the caller zeroes the gradients without stepping) and counted; after the
        update is logged, `stop_if_diverged` stops the phase when `limit` updates in a row were."""
        if all(_finite(v) for v in loss_parts.values()) and _finite(grad_norm):
            self.consecutive, self._run = 0, None
            return True
        self.skipped += 1
        if self._run is None or self._run[1] != step:  # several optimizer steps of one update count once
            self.consecutive += 1
            self._run = (step if self._run is None else self._run[0], step)
        self._last = f"{_parts(loss_parts)}, grad_norm={float(grad_norm):.4g}"
        return False

    def stop_if_diverged(self) -> None:
        """Raise `NonFiniteTraining` once `limit` updates in a row were skipped (each of them
        already logged)."""
        if self.consecutive < self.limit:
            return
        first, last = self._run
        span = f"updates {first} to {last}" if first != last else f"update {last}"
        raise NonFiniteTraining(
            f"training diverged: {self.consecutive} updates in a row ({span}) had a non-finite loss or gradient "
            f"(last: {self._last}); each was skipped and logged, nothing was stepped into the adapter. "
            f"Look at the learning rate, the KL coefficient and the precision ({self.hint}); "
            "faults.max_consecutive_nonfinite sets how many are tolerated"
        )

    def check_weights(self, step: int, params: list) -> None:
        """After update `step` was stepped: raise `NonFiniteTraining` when an adapter weight is
        not finite or has grown past `max_weight` (the next rollout or loss would overflow)."""
        with torch.no_grad():
            # torch's max propagates a NaN (Python's max over floats would drop it)
            peaks = [p.detach().abs().max().float().cpu() for p in params]
            largest = float(torch.stack(peaks).max()) if peaks else 0.0
        if math.isfinite(largest) and largest <= self.max_weight:
            return
        found = "are not finite" if not math.isfinite(largest) else f"reached |w| = {largest:.3g}"
        raise NonFiniteTraining(
            f"training diverged: after update {step} the adapter's weights {found} (the limit is "
            f"faults.max_adapter_weight={self.max_weight:g}); the last checkpoint and the adapters of earlier "
            f"tasks are intact. Look at the learning rate, the KL coefficient and the precision ({self.hint})"
        )

    def state(self) -> dict:
        return {"consecutive": self.consecutive, "skipped": self.skipped, "run": self._run}

    def load(self, state: dict) -> None:
        self.consecutive, self.skipped = state["consecutive"], state["skipped"]
        self._run = tuple(state["run"]) if state.get("run") else None


@contextmanager
def sampling_guard(step: int, hint: str = ""):
    """Turn torch's sampling failure on non-finite probabilities (inf, nan or < 0: the logits
    overflowed) inside the block into the divergence message, naming update `step`."""
    try:
        yield
    except RuntimeError as error:
        if "probability tensor contains" not in str(error):
            raise
        raise NonFiniteTraining(
            f"training diverged: sampling the rollouts of update {step} met non-finite probabilities (inf, nan "
            f"or < 0: the policy's logits overflowed). Look at the learning rate, the KL coefficient and the "
            f"precision{f' ({hint})' if hint else ''}; faults.max_adapter_weight bounds the adapter's weights"
        ) from None


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
    if allowed and guard is not None:
        guard.check_weights(step, params)
    if overflow:
        log.info("update %d: fp16 gradients overflowed; skipped, the loss scale is lowered to %g", step,
                 scaler.get_scale())
    elif not allowed:
        log.warning("update %d: non-finite loss or gradient (%s, grad_norm=%.4g); skipped, nothing stepped "
                    "(%d in a row, %d in this phase)", step, _parts(loss_parts), float(grad_norm), guard.consecutive,
                    guard.skipped)
    optimizer.zero_grad(set_to_none=True)
    return allowed


#: fewer logged updates than this say nothing about a phase being flat
FLAT_MIN_UPDATES = 3


def _flat(values: list, value_range: float = 1e-6) -> bool:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return len(finite) == len(values) and max(finite) - min(finite) <= value_range * max(1.0, abs(finite[0]))


def flat_phase(steps: list[dict]) -> str | None:
    """What made a phase degenerate, from its step records (None: it moved): every rollout
    answer empty, the reward the same on every rollout of every update (no group had a spread:
    GRPO had nothing to learn from), or a loss that never moved (SFT: different batches give
    different losses unless the model has collapsed). A GRPO loss is not looked at: on equal
    answer lengths it is 0 at every update by construction."""
    if len(steps) < FLAT_MIN_UPDATES:
        return None
    n = len(steps)
    if all("reward_mean" in r for r in steps):
        if all(r.get("generated_tokens") == 0 for r in steps):
            return f"every rollout answer was empty over all {n} updates"
        if _flat([r["reward_mean"] for r in steps], 0.0) and all(r.get("reward_std") == 0 for r in steps):
            return (f"the reward was {float(steps[0]['reward_mean']):.4g} on every rollout of all {n} updates "
                    "(no group had a spread: nothing to learn from)")
        return None
    if all("loss" in r for r in steps) and _flat([r["loss"] for r in steps]):
        return f"the loss stayed at {float(steps[0]['loss']):.4g} over all {n} updates"
    return None


def flat_phase_note(records: list[dict], index: int, label: str) -> dict:
    """{"degenerate": what} for the task_end record of phase `index` when its steps were flat
    (named in the log as well); {} otherwise."""
    what = flat_phase([r for r in records if r.get("event") == "step" and r.get("task_index") == index])
    if what is None:
        return {}
    log.warning("%s: training went flat: %s; its scores reflect a degenerate model", label, what)
    return {"degenerate": what}
