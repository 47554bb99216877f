"""The trainer's state in host memory while vLLM generates (train/offload.py), on CPU tensors
moved into the offload's host buffers (`force`): every parameter, gradient, buffer, optimizer
moment and quantization state goes and comes back unchanged, parameters keep their identity (the
optimizer still finds them), training goes on as if nothing moved, and the host buffers are
reused from one offload to the next."""

from __future__ import annotations

import copy
import gc

import pytest
import torch

from lite_cpt.models import add_lora
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus
from lite_cpt.train.offload import TrainerOffload


class RecordingQuantState:
    """Stands in for bitsandbytes' QuantState: its scales move with `.to(device)`."""

    def __init__(self):
        self.absmax = torch.rand(8)
        self.moves: list[str] = []

    def to(self, device):
        self.moves.append(str(device))
        self.absmax = self.absmax.to(device)


def _policy():
    model, _ = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    model = add_lora(model, LoraConfig(r=4, alpha=8))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    return model, optimizer


def _step(model, optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (2, 12), generator=generator)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _tensors(model, optimizer) -> dict:
    out = {f"param {n}": p.detach().clone() for n, p in model.named_parameters()}
    out |= {f"buffer {n}": b.clone() for n, b in model.named_buffers()}
    for i, state in enumerate(optimizer.state.values()):
        out |= {f"state {i} {k}": v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    return out


def test_everything_moves_to_the_host_buffers_and_comes_back_unchanged():
    model, optimizer = _policy()
    _step(model, optimizer, seed=0)
    frozen = next(p for p in model.parameters() if not p.requires_grad)
    frozen.quant_state = RecordingQuantState()
    trainable = next(p for p in model.parameters() if p.requires_grad)
    trainable.grad = torch.ones_like(trainable)  # a gradient left over moves too
    before = _tensors(model, optimizer) | {"grad": trainable.grad.clone()}
    params = {n: p for n, p in model.named_parameters()}
    offload = TrainerOffload()
    offload.track(optimizer)
    with offload.away(model, force=True):
        hosted = {t.data_ptr() for t in offload._host.values()}
        moments = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim()]
        assert moments and all(v.data_ptr() in hosted for v in moments)
        assert all(p.data_ptr() in hosted for p in model.parameters())
        assert all(b.data_ptr() in hosted for b in model.buffers())
        assert trainable.grad.data_ptr() in hosted
        assert frozen.quant_state.moves == ["cpu"]
    assert frozen.quant_state.moves == ["cpu", "cpu"]  # back to where its scales were
    assert {n: p for n, p in model.named_parameters()} == params  # the same Parameter objects
    assert not any(p.data_ptr() in hosted for p in model.parameters())  # not aliasing the host buffers
    after = _tensors(model, optimizer) | {"grad": trainable.grad.clone()}
    assert after.keys() == before.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0, msg=name)


def test_training_after_a_round_trip_equals_training_without_one():
    model, optimizer = _policy()
    _step(model, optimizer, seed=0)
    twin, twin_optimizer = copy.deepcopy((model, optimizer))
    offload = TrainerOffload()
    offload.track(optimizer)
    for seed in (1, 2):
        with offload.away(model, force=True):
            pass
        _step(model, optimizer, seed)
        _step(twin, twin_optimizer, seed)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_host_buffers_are_reused_and_a_finished_phases_optimizer_is_forgotten():
    model, optimizer = _policy()
    _step(model, optimizer, seed=0)
    offload = TrainerOffload()
    offload.track(optimizer)
    with offload.away(model, force=True):
        pass
    buffers = dict(offload._host)
    with offload.away(model, force=True):
        pass
    assert offload._host.keys() == buffers.keys()
    assert all(offload._host[k] is buffers[k] for k in buffers)
    del optimizer
    gc.collect()
    assert len(offload._optimizers) == 0
    # the next phase's optimizer takes the same buffers (slots by parameter name, not identity)
    fresh = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    _step(model, fresh, seed=3)
    offload.track(fresh)
    with offload.away(model, force=True):
        pass
    assert offload._host.keys() == buffers.keys()


def test_nothing_moves_on_a_cpu_run():
    model, optimizer = _policy()
    offload = TrainerOffload()
    offload.track(optimizer)
    pointers = [p.data_ptr() for p in model.parameters()]
    with offload.away(model):
        assert [p.data_ptr() for p in model.parameters()] == pointers
    assert not offload._host


def test_a_bitsandbytes_4bit_layer_answers_the_same_after_a_round_trip(monkeypatch):
    """A real NF4 Linear4bit (bitsandbytes' CPU kernels): its packed weight goes to a host buffer,
    its QuantState moves with it (`.to`), and it answers exactly as before once back."""
    bnb = pytest.importorskip("bitsandbytes")
    import torch.nn as nn

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 32, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(32, 64), requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu")  # quantises: packed uint8 data and a QuantState
    model = nn.Sequential(layer)
    state = layer.weight.quant_state
    assert layer.weight.dtype == torch.uint8 and state is not None
    moves = []
    real_to = type(state).to
    monkeypatch.setattr(type(state), "to", lambda self, device: (moves.append(str(device)), real_to(self, device))[1])
    x = torch.randn(3, 64)
    before = layer(x)
    offload = TrainerOffload()
    with offload.away(model, force=True):
        assert layer.weight.data_ptr() in {t.data_ptr() for t in offload._host.values()}
    assert moves == ["cpu", "cpu"]
    assert isinstance(layer.weight, bnb.nn.Params4bit) and layer.weight.quant_state is state
    torch.testing.assert_close(layer(x), before, rtol=0, atol=0)
