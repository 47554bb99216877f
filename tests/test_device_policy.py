"""The device policy, with a compute capability faked on a CPU machine: bf16 and Triton from
8.0 (Ampere) on, fp16 with loss scaling and the torch kernels below it, a bf16 request there
refused with one message before any data loads; and the loss scaling itself, on fp16 tensors."""

from __future__ import annotations

import types

import pytest
import torch

from lite_cpt.device_policy import device_policy, kernel_backend
from lite_cpt.errors import UserError
from lite_cpt.train.numerics import NonFiniteGuard, backward, step_if_finite
from lite_cpt.train.phase import adamw
from lite_cpt.recipe import load_recipe
from lite_cpt.recipe_model import ModelConfig


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA GPU of the given (name, capability), as torch.cuda reports it."""

    def install(name: str, capability: tuple[int, int]):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)

    return install


def test_ampere_and_newer_get_bf16_and_triton(fake_gpu):
    fake_gpu("NVIDIA A10G", (8, 6))
    policy = device_policy(ModelConfig())
    assert (policy.device.type, policy.dtype, policy.triton, policy.loss_scaling) == (
        "cuda", torch.bfloat16, True, False)
    assert device_policy(ModelConfig(dtype="float16")).loss_scaling  # fp16 asked for: scaled there too


def test_older_cards_get_fp16_with_loss_scaling_and_no_triton(fake_gpu):
    fake_gpu("Tesla T4", (7, 5))
    policy = device_policy(ModelConfig())
    assert (policy.dtype, policy.triton, policy.loss_scaling, policy.capability) == (torch.float16, False, True, (7, 5))
    assert device_policy(ModelConfig(dtype="float32")).dtype == torch.float32
    gpu = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0))
    assert kernel_backend(gpu) == "torch"
    assert kernel_backend(torch.zeros(1)) == "auto"  # a CPU tensor: the kernels decide (torch path)


def test_triton_stays_on_from_compute_capability_8(fake_gpu):
    fake_gpu("NVIDIA A100", (8, 0))
    assert kernel_backend(types.SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0))) == "auto"


def test_cpu_keeps_fp32():
    policy = device_policy(ModelConfig(device="cpu"))
    assert (policy.dtype, policy.triton, policy.loss_scaling) == (torch.float32, False, False)


def test_bf16_on_an_older_card_is_refused_before_any_data_loads(fake_gpu, monkeypatch):
    import lite_cpt.data.preflight
    from lite_cpt.run.continual import run_recipe

    fake_gpu("Tesla T4", (7, 5))
    loaded = []

    def require_data(recipe):
        loaded.append(recipe)
        raise RuntimeError("the data was read")

    monkeypatch.setattr(lite_cpt.data.preflight, "require_data", require_data)
    recipe = load_recipe("recipes/tiny.yaml", ["model.dtype=bfloat16"], check_data=False)
    with pytest.raises(UserError) as caught:
        run_recipe(recipe)
    message = str(caught.value)
    assert message.startswith("model.dtype: bfloat16 needs a GPU of compute capability 8.0")
    assert "Tesla T4 is 7.5" in message and "Set model.dtype: auto" in message
    assert loaded == []


def test_token_logprobs_asks_for_the_torch_kernels_where_the_policy_says(monkeypatch):
    import lite_cpt.train.logprob
    from lite_cpt.train.batching import Prompt, encode_sft
    from lite_cpt.recipe_model import TinyModelConfig
    from lite_cpt.tiny.model import build_tiny_model, tiny_corpus

    seen = []
    real = lite_cpt.train.logprob.fused_linear_logprob

    def spy(*args, **kwargs):
        seen.append(kwargs["_backend"])
        return real(*args, **{**kwargs, "_backend": "auto"})

    monkeypatch.setattr(lite_cpt.train.logprob, "fused_linear_logprob", spy)
    monkeypatch.setattr(lite_cpt.train.logprob, "kernel_backend", lambda tensor: "torch" if tensor.dim() == 2 else "?")
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    batch, labels = encode_sft(processor, [Prompt("what", (), "x")], ["yes"], max_prompt_tokens=64,
                               max_answer_tokens=4)
    lite_cpt.train.logprob.token_logprobs(model, batch, labels)
    assert seen == ["torch"]


class HalfModel(torch.nn.Module):
    """A frozen fp16 layer and a trainable fp32 bias: the shape of an fp16 base with a LoRA."""

    def __init__(self):
        super().__init__()
        self.base = torch.nn.Linear(4, 4).half().requires_grad_(False)
        self.adapter = torch.nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return self.base(x.half()) + self.adapter.half()


def test_loss_scaling_keeps_small_fp16_gradients_that_plain_backward_loses():
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    plain = HalfModel()
    (plain(x).float().sum() * 1e-9).backward()  # 1e-9 is under fp16's smallest subnormal
    assert torch.count_nonzero(plain.adapter.grad) == 0

    model = HalfModel()
    optimizer, params = adamw(model, 1e-3, 0.0, "test")
    loss = model(x).float().sum() * 1e-9
    backward(loss, model)
    guard = NonFiniteGuard(3)
    assert step_if_finite(optimizer, params, 1.0, guard, 1, {"loss": loss.detach()})
    assert torch.count_nonzero(model.adapter) == 4  # each entry got its gradient and moved
    assert guard.skipped == 0


def test_an_fp16_overflow_lowers_the_scale_without_counting_as_divergence():
    from lite_cpt.train.numerics import GRAD_SCALER

    model = HalfModel()
    optimizer, params = adamw(model, 1e-3, 0.0, "test")
    scaler = getattr(optimizer, GRAD_SCALER)
    scale = scaler.get_scale()
    loss = model(torch.ones(1, 4)).float().sum() * 10  # x 65536 overflows fp16's 65504
    backward(loss, model)
    guard = NonFiniteGuard(1)  # one counted fault would raise
    assert not step_if_finite(optimizer, params, 1.0, guard, 1, {"loss": loss.detach()})
    assert scaler.get_scale() == scale / 2 and guard.consecutive == 0
    assert torch.count_nonzero(model.adapter) == 0 and model.adapter.grad is None


def test_bf16_and_fp32_models_have_no_scaler():
    from lite_cpt.train.numerics import GRAD_SCALER

    for dtype in (torch.bfloat16, torch.float32):
        model = torch.nn.Sequential(torch.nn.Linear(2, 2).to(dtype))
        optimizer, _ = adamw(model, 1e-3, 0.0, "test")
        assert getattr(optimizer, GRAD_SCALER) is None


def test_bench_step_builds_its_model_in_the_policys_dtype(fake_gpu):
    from lite_cpt.bench.step import bench_dtype

    fake_gpu("Tesla T4", (7, 5))
    assert bench_dtype(torch.device("cuda")) == torch.float16
    fake_gpu("NVIDIA L4", (8, 9))
    assert bench_dtype(torch.device("cuda")) == torch.bfloat16
