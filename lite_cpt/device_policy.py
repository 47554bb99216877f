"""What a GPU can run: compute dtype, Triton kernels, loss scaling, decided once per device.

bf16 arithmetic and the bf16 Triton kernels need compute capability 8.0 (Ampere) or newer: on
older cards (Turing's sm_75: T4, RTX 20xx; Volta's sm_70: V100) Triton fails on bf16 ("bf16
requires sm_80" in other projects) and its tiles spill registers. So:

- capability >= 8.0: bf16 (model.dtype auto), the Triton kernels;
- capability <  8.0: fp16 (model.dtype auto) with dynamic loss scaling (torch.amp.GradScaler,
  so small activation gradients do not flush to zero), the kernels' chunked torch path;
  model.dtype: bfloat16 is refused with one message, before any data loads;
- CPU: fp32 (model.dtype auto), the torch path.

A float16 model trains with a GradScaler on any device (`numerics.loss_scaler`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lite_cpt.errors import UserError

#: The first compute capability with bf16 arithmetic (Ampere).
BF16_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class DevicePolicy:
    """How a recipe's model runs on one device."""

    device: torch.device
    dtype: torch.dtype
    triton: bool  # the Triton kernels may run (else the chunked torch path)
    loss_scaling: bool  # fp16 training: gradients through a GradScaler
    capability: tuple[int, int] | None = None  # CUDA compute capability


def cuda_capability(device: torch.device | int | None = None) -> tuple[int, int]:
    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


def resolve_device(cfg) -> torch.device:
    """`model.device` as a torch device (auto: CUDA when one is visible)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("model.device is cuda but no CUDA GPU is visible; set model.device: cpu or auto")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def device_policy(cfg) -> DevicePolicy:
    """The policy for a recipe's `model` section on the device it names; a UserError when the
    requested dtype cannot run there."""
    device = resolve_device(cfg)
    if device.type != "cuda":
        dtype = torch.float32 if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        return DevicePolicy(device, dtype, triton=False, loss_scaling=False)
    capability = cuda_capability(device)
    modern = capability >= BF16_CAPABILITY
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if modern else torch.float16
    else:
        dtype = getattr(torch, cfg.dtype)
    if dtype == torch.bfloat16 and not modern:
        name = torch.cuda.get_device_name(device)
        raise UserError(
            f"model.dtype: bfloat16 needs a GPU of compute capability {BF16_CAPABILITY[0]}.{BF16_CAPABILITY[1]} or "
            f"newer (Ampere or later); {name} is {capability[0]}.{capability[1]}. Set model.dtype: auto (float16 "
            "with loss scaling on this GPU) or float16"
        )
    return DevicePolicy(device, dtype, triton=modern, loss_scaling=dtype == torch.float16, capability=capability)


def check_device(recipe) -> DevicePolicy | None:
    """The recipe's device policy, computed before any data loads, so that a dtype the GPU
    cannot run stops a run with one message rather than after the preflight."""
    return device_policy(recipe.model)


def kernel_backend(tensor) -> str:
    """The kernels' `_backend` for `tensor`: "torch" on a CUDA device below compute capability
    8.0 (no Triton there), else "auto" (Triton on CUDA, torch on a CPU)."""
    if tensor.is_cuda and cuda_capability(tensor.device) < BF16_CAPABILITY:
        return "torch"
    return "auto"


__all__ = ["BF16_CAPABILITY", "DevicePolicy", "check_device", "cuda_capability", "device_policy", "kernel_backend",
           "resolve_device"]
