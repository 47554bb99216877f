"""Out-of-memory errors become one clear UserError naming the phase, the estimate and the knobs."""

import types
import pytest
import torch

from lite_cpt.errors import UserError
from lite_cpt.planner import plan
from lite_cpt.train.oom import explain_oom, is_oom, oom_advice
from lite_cpt.recipe import recipe_from_dict

RECIPE = recipe_from_dict({
    "name": "oom",
    "model": {"name": "Qwen/Qwen2.5-VL-7B-Instruct", "quantization": "nf4", "max_pixels": 200704,
              "lora": {"r": 64, "alpha": 128}},
    "tasks": [{"name": "a", "type": "mini_scienceqa", "max_prompt_tokens": 1024, "max_answer_tokens": 512}],
    "arms": [{"name": "sft", "batch_size": 8},
             {"name": "rft", "rft": {"group_size": 8, "prompts_per_step": 4, "max_new_tokens": 512}}],
})

def plan_for(arm=None):
    """The memory plan of RECIPE (or one arm), as the run's unit plan binds it."""
    return lambda gpu_gb: plan(RECIPE, gpu_gb, arm=arm)


TORCH_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.65 GiB of which "
    "1.10 GiB is free. Including non-PyTorch memory, this process has 22.50 GiB memory in use. Of the "
    "allocated memory 21.30 GiB is allocated by PyTorch, and 0.70 GiB is reserved by PyTorch but unallocated."
)


def test_cuda_oom_becomes_a_user_error_with_estimate_and_knobs():
    with pytest.raises(UserError) as caught:
        with explain_oom(plan_for("rft"), "grpo_step", arm="rft", gpu_gb=24):
            raise torch.cuda.OutOfMemoryError(TORCH_MESSAGE)
    message = str(caught.value)
    assert message.startswith("out of GPU memory during grpo_step (arm rft).")
    assert "Torch tried to allocate 2.00 GiB with 21.30 GiB already allocated (1.10 GiB free)" in message
    estimate = plan(RECIPE, 24).arms["rft"].phases["grpo_step"]
    assert f"The planner estimates {estimate.peak_gb:.1f} GiB for grpo_step on this 24.0 GiB GPU" in message
    assert "rollout_batch_size" in message and "at the smallest knobs it needs" in message
    assert "expandable_segments:True" in message
    # No chained traceback: the original error is not shown, and its frames are released.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert caught.value.__context__.__traceback__ is None


def test_runtime_error_oom_is_recognised_and_others_pass_through():
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert is_oom(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"))
    assert not is_oom(RuntimeError("shape mismatch"))
    with pytest.raises(UserError, match="out of GPU memory during rollout"):
        with explain_oom(plan_for(), "rollout", gpu_gb=16):
            raise RuntimeError("CUDA error: out of memory")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with explain_oom(plan_for(), "rollout", gpu_gb=16):
            raise RuntimeError("shape mismatch")
    with pytest.raises(ValueError, match="unknown phase"):
        with explain_oom(plan_for(), "training"):
            pass


def test_decorator_form_and_no_gpu_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    @explain_oom(plan_for(), "evaluation")
    def evaluate():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    with pytest.raises(UserError) as caught:
        evaluate()
    message = str(caught.value)
    assert "No memory plan was available" in message
    assert "lower evaluation.generation.batch_size" in message


def test_advice_when_the_plan_says_it_fits():
    roomy = plan(RECIPE, 80)
    message = oom_advice(roomy, "sft_step", torch.cuda.OutOfMemoryError("CUDA out of memory."), arm="sft")
    assert "That estimate fits, so another process may hold GPU memory" in message
    assert f"micro_batch_size {roomy.knobs_for('sft').micro_batch_size}" in message

    tight = plan(RECIPE, 11)
    message = oom_advice(tight, "rollout", RuntimeError("out of memory"))
    assert "reduce rft.group_size" in message and "(arm" not in message.splitlines()[0]


def _guard(arm: str):
    return lambda step_name: explain_oom(plan_for(arm), step_name, arm=arm, gpu_gb=24)


@pytest.mark.parametrize("failing, step", [
    ("generate_completions", "rollout"),
    ("prepare_micro_batches", "logprob_pass"),
    ("accumulate_policy_gradient", "grpo_step"),
])
def test_each_step_of_a_grpo_phase_reaches_the_explainer_under_its_own_name(monkeypatch, failing, step):
    from lite_cpt.train import policy_update as update_module
    from lite_cpt.train import rft as rft_module
    from lite_cpt.train.phase import Example, Knobs, Phase
    from lite_cpt.train.rollout import Completions
    from lite_cpt.tasks import TASK_TYPES
    from lite_cpt.tasks.base import Sample

    def fake_generate(model, processor, prompts, sampling, **_):
        ids = [[1, 2] for _ in range(len(prompts) * sampling.group_size)]
        return Completions(prompts, sampling.group_size, ids, ["A", "B"] * (len(ids) // 2), 2 * len(ids))

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError(TORCH_MESSAGE)

    monkeypatch.setattr(rft_module, "generate_completions", fake_generate)
    monkeypatch.setattr(update_module, "vision_token_ids", lambda tokenizer: [])
    monkeypatch.setattr(update_module, "prepare_micro_batches",
                        lambda *args, **kwargs: [types.SimpleNamespace()])  # one micro-batch per mini-batch
    monkeypatch.setattr(rft_module, "hold_reference", lambda model: None)  # a Linear has no adapter to hold
    monkeypatch.setattr(rft_module if failing == "generate_completions" else update_module, failing, out_of_memory)
    task = TASK_TYPES["mini_scienceqa"]("a")
    examples = [Example(task, Sample(id=str(i), question=f"q{i}", answer="A")) for i in range(4)]
    arm = RECIPE.arms[1]
    with pytest.raises(UserError) as caught:
        rft_module.train_rft(torch.nn.Linear(2, 2), None, examples, arm, Phase(Knobs(4, None, 2), guard=_guard("rft")))
    message = str(caught.value)
    assert message.startswith(f"out of GPU memory during {step} (arm rft).")
    assert "The planner estimates" in message and f"for {step} on this 24.0 GiB GPU" in message
    if step == "rollout":  # the rollout's own knob, not the micro-batch of a GRPO step
        chosen = plan(RECIPE, 24).arms["rft"].knobs.rollout_batch_size
        assert chosen > 1, "the check below needs a plan that batches rollouts"
        assert f"set arms.rft.rft.rollout_batch_size: {chosen // 2} (the plan chose {chosen})" in message
        assert "micro_batch_size:" not in message


def test_an_sft_step_reaches_the_explainer_as_sft_step(monkeypatch):
    from lite_cpt.train import sft as sft_module
    from lite_cpt.train.phase import Knobs, Phase

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError(TORCH_MESSAGE)

    monkeypatch.setattr(sft_module, "_accumulate", out_of_memory)
    with pytest.raises(UserError, match=r"^out of GPU memory during sft_step \(arm sft\)\."):
        sft_module.train_sft(torch.nn.Linear(2, 2), None, list(range(8)), RECIPE.arms[0],
                             Phase(Knobs(4, None, 1), guard=_guard("sft")))


def test_a_fixed_micro_batch_that_runs_out_is_halved_first():
    arms = [a.model_copy(update={"micro_batch_size": 4, "micro_batch_tokens": "off"}) for a in RECIPE.arms]
    fixed = plan(RECIPE.model_copy(update={"arms": arms}), 80)
    for phase in ("grpo_step", "logprob_pass"):
        message = oom_advice(fixed, phase, torch.cuda.OutOfMemoryError("CUDA out of memory."), arm="rft")
        tried = message.splitlines()[-1]
        assert tried.startswith("Try: set arms.rft.micro_batch_size: 2 (the plan chose 4); "), tried
        assert tried.endswith("; set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to cut allocator fragmentation.")


def test_without_a_plan_the_advice_is_the_phases_own_knobs_for_the_arm():
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory.")
    hint = "set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to cut allocator fragmentation."
    assert oom_advice(None, "sft_step", oom, arm="sft") == (
        "out of GPU memory during sft_step (arm sft).\n"
        "No memory plan was available; `lite-cpt plan RECIPE --gpu-gb N` shows one.\n"
        "Try: lower arms.sft.micro_batch_size; lower tasks.*.max_answer_tokens; lower model.max_pixels; " + hint)
    assert oom_advice(None, "grpo_step", oom).splitlines()[-1] == (
        "Try: lower arms.<arm>.micro_batch_size; reduce rft.group_size; lower rft.max_new_tokens; " + hint)
