"""Measure the throughputs the time plan needs on this machine, with the functions a run uses.

The recipe's own model (base + LoRA, as `run` loads it) and its first task's evaluation
prompts: `generate_completions` (the rollout and evaluation path) at two call sizes gives the
fixed and per-sequence cost of a decode step, `token_logprobs` gives the no-grad forward
(prefill, log-prob passes) and, with a backward, the training throughput; one AdamW step over
the adapter gives the optimizer's time. The result is a `Calibration` for `--calibration`.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from lite_cpt.batching import Prompt, encode_sft, to_device
from lite_cpt.logprob import token_logprobs
from lite_cpt.planner import resolve_shape, total_parameters
from lite_cpt.planner.timeplan import Calibration
from lite_cpt.rollout import Sampling, generate_completions, model_device, model_dtype

CALL_SIZES = (2, 16)  # sequences per generate call for the two-point decode fit
REPEATS = 3


def _best_seconds(fn: Callable[[], object], repeats: int = REPEATS) -> tuple[float, object]:
    """The fastest of `repeats` timed calls (after one warm-up), and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def decode_step_seconds(model, processor, prompts: list[Prompt], sequences: int, new_tokens: int,
                        prefill_tokens_per_s: float) -> float:
    """Seconds per decode step of one generate call of `sequences` (prefill time taken out)."""
    batch = [prompts[i % len(prompts)] for i in range(sequences)]

    def call():
        return generate_completions(model, processor, batch, Sampling(max_new_tokens=new_tokens, temperature=1.0),
                                    prompts_per_call=sequences, generator_seed=0)

    seconds, out = _best_seconds(call)
    steps = max(1, max(len(ids) for ids in out.token_ids))
    prompt_tokens = sum(int(m.sum()) for m in _encoded(processor, batch)["attention_mask"])
    return max(1e-9, (seconds - prompt_tokens / prefill_tokens_per_s) / steps)


def _encoded(processor, prompts: list[Prompt], answers: list[str] | None = None):
    batch, labels = encode_sft(processor, prompts, answers or ["a"] * len(prompts), max_prompt_tokens=4096,
                               max_answer_tokens=64)
    batch["labels_"] = labels
    return batch


def forward_rates(model, processor, prompts: list[Prompt], answers: list[str]) -> tuple[float, float]:
    """(no-grad forward tokens/s, forward + backward tokens/s) of the log-prob path."""
    encoded = _encoded(processor, prompts, answers)
    labels = encoded.pop("labels_").to(model_device(model))
    batch = to_device(encoded, model_device(model), model_dtype(model))
    tokens = int(batch["attention_mask"].sum())

    def forward():
        with torch.no_grad():
            return token_logprobs(model, batch, labels)

    def train():
        out = token_logprobs(model, batch, labels)
        (-(out.logp * out.mask).sum()).backward()
        model.zero_grad(set_to_none=True)

    model.train()
    forward_s, _ = _best_seconds(forward)
    train_s, _ = _best_seconds(train)
    return tokens / forward_s, tokens / train_s


def optimizer_step_seconds(model) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-9)

    def step():
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()

    seconds, _ = _best_seconds(step)
    return seconds


def sft_tokens_per_s(recipe, model, processor, samples, task, steps: int = 2) -> float:
    """Sequence tokens (prompt + answer) per second of `train_sft`, the run's SFT phase, over
    `steps` batches of the first SFT arm's size (lr 1e-30: the adapter does not move), fastest
    of REPEATS after a warm-up; encoding, micro-batching and the optimizer step included."""
    from lite_cpt.phase import Phase, examples_of
    from lite_cpt.planner import resolve_knobs
    from lite_cpt.sft import encode_examples, train_sft

    arm = next((a for a in recipe.arms if "sft_step" in _phases(a.method)), recipe.arms[0])
    arm = arm.model_copy(update={"lr": 1e-30, "max_steps_per_task": None})
    examples = examples_of(task, samples)
    batch = examples[: arm.batch_size] * max(1, -(-arm.batch_size // len(examples)))
    batch = batch[: arm.batch_size]
    tokens = sum(row.length for row in encode_examples(processor, batch))
    knobs = resolve_knobs(recipe, arm.name)
    seconds, _ = _best_seconds(lambda: train_sft(model, processor, batch * steps, arm, Phase(knobs, epochs=1)))
    return tokens * steps / seconds


def eval_prompts_per_s(recipe, model, processor, samples, task) -> float:
    """Evaluation prompts per second of `evaluate_sets`, the run's evaluation, on `samples` at
    the recipe's generation settings (answers of the model's own length, scoring included),
    fastest of REPEATS after a warm-up."""
    from lite_cpt.evaluate import EvalSet, evaluate_sets

    sets = [EvalSet(task, samples)]
    seconds, _ = _best_seconds(lambda: evaluate_sets(model, processor, sets, recipe.evaluation.generation,
                                                     cot=recipe.evaluation.cot))
    return len(samples) / seconds


def _phases(method: str) -> tuple[str, ...]:
    from lite_cpt.arms import arm_class

    return arm_class(method).phases


def measure_calibration(recipe, model, processor, *, prompts: int = 8, new_tokens: int = 8) -> Calibration:
    """Throughputs of `model` (the recipe's base + LoRA) on the recipe's first task's prompts."""
    from lite_cpt.tasks.base import build_task

    task = build_task(recipe.tasks[0], recipe.data.root, recipe.seed)
    samples = task.load(recipe.tasks[0].source.test_split, prompts)
    batch = [Prompt(task.prompt(s), s.images, s.id) for s in samples]
    prefill, train = forward_rates(model, processor, batch, [task.target(s) for s in samples])
    small, large = CALL_SIZES
    step_small = decode_step_seconds(model, processor, batch, small, new_tokens, prefill)
    step_large = decode_step_seconds(model, processor, batch, large, new_tokens, prefill)
    per_sequence = max(0.0, (step_large - step_small) / (large - small))
    prompt_len, answer_len = data_lengths(processor, batch, [task.target(s) for s in samples])
    eval_samples = task.load(recipe.tasks[0].source.test_split, recipe.evaluation.generation.batch_size)
    device = model_device(model)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} ({torch.get_num_threads()} threads)"
    return Calibration(
        device=name, model=recipe.model.name, parameters=total_parameters(resolve_shape(recipe.model)),
        decode_step_s=max(1e-9, step_small - small * per_sequence), decode_s_per_sequence=per_sequence,
        prefill_tokens_per_s=prefill, train_tokens_per_s=train, optimizer_step_s=optimizer_step_seconds(model),
        source=f"measured by lite-cpt bench gpu on {name}", prompt_tokens=prompt_len, answer_tokens=answer_len,
        sft_tokens_per_s=sft_tokens_per_s(recipe, model, processor, samples, task),
        eval_prompts_per_s=eval_prompts_per_s(recipe, model, processor, eval_samples, task),
    )


def data_lengths(processor, prompts: list[Prompt], answers: list[str]) -> tuple[float, float]:
    """Mean prompt tokens and mean answer tokens of the calibration's samples."""
    from lite_cpt.batching import IGNORE_INDEX

    encoded = _encoded(processor, prompts, answers)
    labels = encoded.pop("labels_")
    answer = float((labels != IGNORE_INDEX).sum()) / len(prompts)
    return float(encoded["attention_mask"].sum()) / len(prompts) - answer, answer
