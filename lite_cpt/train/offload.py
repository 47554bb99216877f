"""The trainer's GPU state in host memory while vLLM generates (recipe `rollout.offload_trainer`).

vLLM holds its own copy of the base while it generates, and the trainer's copy (the frozen NF4
base, the vision tower, the policy and KL-reference adapters, the optimizer's moments) sits idle
until the next update. EasyR1 offloads the actor's parameters and optimizer for the same reason
(`worker.actor.offload.offload_params` / `offload_optimizer`, both on in its examples/config.yaml):
the memory goes to vLLM's KV cache, which decides how many sequences decode at once.

`TrainerOffload` moves every tensor of the model (parameters, their gradients and bitsandbytes
quantization states, buffers) and of the tracked optimizers to host memory and back. Host copies
go to pinned buffers kept between calls: pinning several GB takes longer than copying them, and
a GRPO phase offloads once per rollout batch. Parameters keep their identity (only `.data`
changes), so the optimizer's state, keyed by parameter, still finds them.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch


class TrainerOffload:
    """Moves a model's tensors and its optimizers' states to host memory and back to their devices."""

    def __init__(self) -> None:
        self._host: dict[tuple, torch.Tensor] = {}  # pinned host buffers by (slot, shape, dtype), reused
        self._optimizers: weakref.WeakSet = weakref.WeakSet()

    def track(self, optimizer) -> None:
        """Offload `optimizer`'s state with the model for as long as the optimizer lives."""
        self._optimizers.add(optimizer)

    @contextmanager
    def away(self, model, *, force: bool = False):
        """Inside, the model's and the tracked optimizers' tensors live in host memory. Only CUDA
        tensors move (nothing does on a CPU run) unless `force` (tests: CPU tensors to the host buffers)."""
        slots = list(self._slots(model))
        moved = [(slot, get, put, tensor.device) for slot, get, put in slots
                 if (tensor := get()) is not None and (force or tensor.device.type == "cuda")]
        for slot, get, put, _ in moved:
            put(self._host_copy(slot, get()))
        quant_states = [(q, device) for q, device in self._quant_states(model) if force or device.type == "cuda"]
        for state, _ in quant_states:
            state.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()  # the freed blocks go back to the driver, for vLLM to take
        try:
            yield
        finally:
            for slot, get, put, device in moved:
                put(get().to(device, non_blocking=True, copy=True))  # never the host buffer itself
            for state, device in quant_states:
                state.to(device)
            if torch.cuda.is_available():
                torch.cuda.synchronize()

    def _host_copy(self, slot, tensor: torch.Tensor) -> torch.Tensor:
        key = (slot, tuple(tensor.shape), tensor.dtype)
        host = self._host.get(key)
        if host is None:
            host = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=torch.cuda.is_available())
            self._host[key] = host
        host.copy_(tensor, non_blocking=True)
        return host

    def _slots(self, model):
        """(slot, get, put) for every tensor to move: a stable slot name, and how to read and
        replace the tensor where it lives."""
        for name, param in model.named_parameters(remove_duplicate=True):
            yield ("param", name), (lambda p=param: p.data), (lambda t, p=param: setattr(p, "data", t))
            yield ("grad", name), (lambda p=param: p.grad), (lambda t, p=param: setattr(p, "grad", t))
        for module_name, module in model.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (("buffer", module_name, name), (lambda m=module, n=name: m._buffers[n]),
                           (lambda t, m=module, n=name: m._buffers.__setitem__(n, t)))
        names = {id(param): name for name, param in model.named_parameters()}
        for index, optimizer in enumerate(list(self._optimizers)):
            for param, state in optimizer.state.items():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor):  # slots by parameter name: a later phase's
                        slot = ("optimizer", index, names.get(id(param), id(param)), key)  # reuse the buffers
                        yield slot, (lambda s=state, k=key: s[k]), (lambda t, s=state, k=key: s.__setitem__(k, t))

    @staticmethod
    def _quant_states(model):
        """bitsandbytes 4-bit weights keep their scales in a QuantState beside the packed data."""
        seen = set()
        for param in model.parameters():
            state = getattr(param, "quant_state", None)
            if state is not None and id(state) not in seen and hasattr(state, "to"):
                seen.add(id(state))
                yield state, state.absmax.device
