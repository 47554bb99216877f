"""Measure the throughputs the time plan needs on this machine, with the functions a run uses.

The recipe's own model (base + LoRA, as `run` loads it) and its first task's evaluation
prompts (or a given task's samples: the step benchmark's random-weight model and synthetic
prompts): `generate_completions` (the rollout and evaluation path) at two call sizes gives the
fixed and per-sequence cost of a decode step; `token_logprobs` at two batch sizes gives the
no-grad forward (prefill, log-prob passes) and, with a backward, the training pass, each as a
fixed cost per pass plus a throughput in tokens; one AdamW step over the adapter gives the
optimizer's time. With `rollout.backend: vllm` and vLLM installed, the same decode fit on the
engine the run generates on (`engine_decode_*`: the plan prices the engine's phases with it). The result is a `Calibration` for `--calibration`.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from lite_cpt.train.batching import Prompt, encode_sft, to_device
from lite_cpt.train.logprob import token_logprobs
from lite_cpt.planner import resolve_shape, total_parameters
from lite_cpt.planner.calibration import Calibration
from lite_cpt.train.rollout import Sampling, generate_completions, model_device, model_dtype

CALL_SIZES = (2, 16)  # sequences per generate call for the decode fit on a CPU
#: Generate-call widths and decode steps of the decode fit: on a GPU the widths the planner
#: chooses (16, 32, 64 sequences) over 128 steps, long enough for the KV cache to matter; on a
#: CPU two small calls of 16 steps.
DECODE_WIDTHS = {"cuda": ((16, 32, 64), 128), "cpu": (CALL_SIZES, 16)}
PASS_SIZES = (2, 8)  # sequences per forward pass for the two-point fits of the log-prob passes
REPEATS = 3


def engine_decode_widths(max_num_seqs: int) -> tuple[int, ...]:
    """Widths of the vLLM engine's decode fit on a GPU: the slots the plan gives it, up to
    rollout.max_num_seqs (a 24 GB card at the protocol's share fills most tasks' 256), halving
    down to an eighth of it."""
    return tuple(sorted({max(1, max_num_seqs // d) for d in (8, 4, 2, 1)}))


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
                        prefill: "PassCost") -> float:
    """Seconds per decode step of one generate call of `sequences` (its prefill taken out)."""
    batch = [prompts[i % len(prompts)] for i in range(sequences)]

    def call():
        sampling = Sampling(max_new_tokens=new_tokens, temperature=1.0, min_new_tokens=new_tokens)
        return generate_completions(model, processor, batch, sampling, prompts_per_call=sequences, generator_seed=0)

    # Every sequence decodes exactly `new_tokens` steps: a short answer's end of turn waits.
    seconds, out = _best_seconds(call)
    steps = max(1, max(len(ids) for ids in out.token_ids))
    prompt_tokens = sum(int(m.sum()) for m in _encoded(processor, batch)["attention_mask"])
    return max(1e-9, (seconds - prefill.seconds(prompt_tokens)) / steps)


class PassCost:
    """Seconds of one forward pass: a fixed cost per pass (launches, the vision tower's setup,
    Python) plus its tokens at a throughput."""

    def __init__(self, pass_s: float, tokens_per_s: float):
        self.pass_s, self.tokens_per_s = pass_s, tokens_per_s

    @staticmethod
    def fit(small: tuple[int, float], large: tuple[int, float]) -> "PassCost":
        """From (tokens, seconds) of a small and a large pass; a non-increasing pair (noise)
        falls back to the large pass's mean rate with no fixed cost."""
        (tokens_a, seconds_a), (tokens_b, seconds_b) = small, large
        if tokens_b <= tokens_a or seconds_b <= seconds_a:
            return PassCost(0.0, tokens_b / seconds_b)
        per_token = (seconds_b - seconds_a) / (tokens_b - tokens_a)
        return PassCost(max(0.0, seconds_a - tokens_a * per_token), 1.0 / per_token)

    def seconds(self, tokens: float) -> float:
        return self.pass_s + tokens / self.tokens_per_s


def _encoded(processor, prompts: list[Prompt], answers: list[str] | None = None):
    batch, labels = encode_sft(processor, prompts, answers or ["a"] * len(prompts), max_prompt_tokens=4096,
                               max_answer_tokens=64)
    batch["labels_"] = labels
    return batch


def pass_seconds(model, processor, prompts: list[Prompt], answers: list[str]) -> tuple[int, float, float]:
    """(tokens, no-grad forward seconds, forward + backward seconds) of the log-prob path on
    one batch of `prompts` with `answers`."""
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
    return tokens, forward_s, train_s


def forward_costs(model, processor, prompts: list[Prompt], answers: list[str]) -> tuple[PassCost, PassCost]:
    """(no-grad forward, forward + backward) costs, fitted on passes of PASS_SIZES sequences."""
    small, large = (pass_seconds(model, processor, [prompts[i % len(prompts)] for i in range(n)],
                                 [answers[i % len(answers)] for i in range(n)]) for n in PASS_SIZES)
    return (PassCost.fit((small[0], small[1]), (large[0], large[1])),
            PassCost.fit((small[0], small[2]), (large[0], large[2])))


def optimizer_step_seconds(model) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-9)

    def step():
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()

    seconds, _ = _best_seconds(step)
    return seconds


def sft_work(recipe, model, processor, examples, steps: int = 4) -> tuple[int, float]:
    """(sequence tokens, seconds) of `train_sft`, the run's SFT phase, over `steps` batches of
    the first SFT arm's size drawn from `examples` (lr 1e-30: the adapter does not move),
    fastest of REPEATS after a warm-up; encoding, micro-batching and the optimizer step
    included."""
    from lite_cpt.train.phase import Phase
    from lite_cpt.planner import resolve_knobs
    from lite_cpt.train.sft import encode_examples, train_sft

    arm = next((a for a in recipe.arms if "sft_step" in _phases(a.method)), recipe.arms[0])
    arm = arm.model_copy(update={"lr": 1e-30, "max_steps_per_task": None})
    batch = (examples * -(-arm.batch_size // len(examples)))[: arm.batch_size]
    tokens = sum(row.length for row in encode_examples(processor, batch))
    knobs = resolve_knobs(recipe, arm.name)
    seconds, _ = _best_seconds(lambda: train_sft(model, processor, batch * steps, arm, Phase(knobs, epochs=1)))
    return tokens * steps, seconds


def _batch_rows(recipe) -> int:
    """The most rows one training batch of the recipe's arms takes (an SFT batch, an RL update's prompts)."""
    return max(arm.rft.prompts_per_step if "rollout" in _phases(arm.method) else arm.batch_size for arm in recipe.arms)


def rl_rates(recipe, model, processor, groups: list[list]) -> dict:
    """Seconds per rollout of `generate_rollouts` and per rollout and no-grad pass of
    `prepare_mini_batches` (encoding and the old/reference passes), the run's own rollout and
    log-prob phases, on one update's prompts of each group (task) at the first RL arm's
    settings, with the settings they were measured at ([G, max_new_tokens, prompts per generate
    call]): the plan uses them for arms with the same settings on this model. Empty without an
    RL arm. Run last: it holds the KL reference adapter on the model."""
    from lite_cpt.planner import resolve_knobs
    from lite_cpt.train.reference_adapter import hold_reference
    from lite_cpt.train.policy_update import compute_advantages, prepare_mini_batches, steps_per_rollout
    from lite_cpt.train.rft import generate_rollouts

    arm = next((a for a in recipe.arms if "rollout" in _phases(a.method)), None)
    if arm is None:
        return {}
    rft, knobs = arm.rft, resolve_knobs(recipe, arm.name)
    passes = int(rft.uses_kl) + int(steps_per_rollout(rft) > 1)
    if rft.holds_reference:
        hold_reference(model)
    rollout_s = logprob_s = 0.0
    sequences = 0
    lengths: dict[str, list[int]] = {}
    for examples in groups:
        examples = (examples * -(-rft.prompts_per_step // len(examples)))[: rft.prompts_per_step]
        seconds, rollouts = _best_seconds(lambda: generate_rollouts(
            model, processor, examples, rft, group_size=rft.group_size, generator_seed=0,
            rollout_batch_size=knobs.rollout_batch_size), repeats=2)
        rows = list(range(len(rollouts.token_ids)))
        rollout_s, sequences = rollout_s + seconds, sequences + len(rows)
        lengths.setdefault(examples[0].task.name, []).extend(len(ids) for ids in rollouts.token_ids)
        if passes:
            advantages = compute_advantages(rollouts, rft)
            logprob_s += _best_seconds(lambda: prepare_mini_batches(model, processor, rollouts, rows, advantages, rft,
                                                                    knobs), repeats=2)[0]
    rates = {"rollout_s_per_sequence": rollout_s / sequences,
             "rl_measured_at": [rft.group_size, rft.max_new_tokens, knobs.prompts_per_call],
             # the user's model's own answers on each task: the plan's expected lengths for it
             "answer_lengths": {name: _length_figures(ns) for name, ns in lengths.items()}}
    if passes:
        rates["logprob_s_per_sequence"] = logprob_s / sequences / passes
    return rates


def _length_figures(lengths: list[int]) -> list[float]:
    """[mean, cv] of a task's calibration answers (cut at the recipe's cap)."""
    from lite_cpt.planner.lengths import measured_lengths

    fit = measured_lengths(lengths, "calibration")
    return [round(fit.mean, 2), round(fit.cv, 4)]


def eval_prompts_per_s(recipe, model, processor) -> float:
    """Evaluation prompts per second of `evaluate_sets`, the run's evaluation, at the recipe's
    generation settings (its planned batch; answers of the model's own length, scoring
    included): one call of each task's and general benchmark's test items, after one warm-up
    call, as an evaluation after each task runs them."""
    from lite_cpt.run.eval_prompt import shared_eval_cot
    from lite_cpt.run.evaluate import evaluate_sets, recipe_eval_sets
    from lite_cpt.run.unit_plan import planned_generation

    generation = planned_generation(recipe)
    sets = recipe_eval_sets(recipe, most=generation.batch_size, processor=processor)
    sets = [evalset for evalset in sets if evalset.samples]

    def evaluate():
        return evaluate_sets(model, processor, sets, generation, cot=shared_eval_cot(recipe))

    seconds, _ = _best_seconds(evaluate, repeats=1)
    return sum(len(evalset.samples) for evalset in sets) / seconds


def _phases(method: str) -> tuple[str, ...]:
    from lite_cpt.arms import arm_class

    return arm_class(method).phases


def recipe_examples(recipe, per_task: int) -> list[list]:
    """`per_task` test examples of every task of the recipe, one list per task: a run trains on
    one task at a time, so its batches hold one task's lengths."""
    from lite_cpt.train.phase import Example
    from lite_cpt.tasks.base import build_task

    groups = []
    for config in recipe.tasks:
        task = build_task(config, recipe.data.root, recipe.seed)
        groups.append([Example(task, s) for s in task.load(config.source.test_split, per_task)])
    return [group for group in groups if group]


def _interleaved(groups: list[list]) -> list:
    return [group[i] for i in range(max(map(len, groups))) for group in groups if i < len(group)]


def _per_task_rate(groups: list[list], measure) -> float:
    """Work per second over the groups: `measure(group)` gives (work, seconds) of one."""
    done = [measure(group) for group in groups]
    return sum(work for work, _ in done) / sum(seconds for _, seconds in done)


def fit_line(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares (a, b) of seconds = a + b·n through (n, seconds) points, b ≥ 0 and a > 0:
    a decode step's fixed cost and its cost per sequence in the call."""
    xs = list(points)
    mean_x, mean_y = sum(xs) / len(xs), sum(points.values()) / len(xs)
    slope = sum((x - mean_x) * (points[x] - mean_y) for x in xs) / sum((x - mean_x) ** 2 for x in xs)
    slope = max(0.0, slope)
    return max(1e-9, mean_y - slope * mean_x), slope


def decode_costs(model, processor, batch: list[Prompt], prefill: "PassCost",
                 new_tokens: int | None = None) -> tuple[float, float, dict]:
    """(fixed seconds per decode step, seconds per sequence in the call, what was measured) from
    generate calls at the device's DECODE_WIDTHS (`new_tokens` replaces its step count)."""
    widths, steps = DECODE_WIDTHS["cuda" if model_device(model).type == "cuda" else "cpu"]
    steps = new_tokens or steps
    measured = {n: decode_step_seconds(model, processor, batch, n, steps, prefill) for n in widths}
    fixed, per_sequence = fit_line(measured)
    return fixed, per_sequence, {"steps": steps, "step_s": {str(n): s for n, s in measured.items()}}


def engine_decode_costs(engine, model, processor, batch: list[Prompt], widths, steps: int) -> dict:
    """The decode fit of `decode_costs` on the vLLM engine (`VllmRollouts`), as the Calibration's
    engine_* fields: per width, the fastest of REPEATS calls of `steps` tokens per sequence less
    the fastest one-token call (prefill and first token), over the steps - 1 decode steps between
    them; each after a warm-up call."""
    steps = max(2, steps)

    def best(sequences: int, tokens: int) -> float:
        engine.timed_decode(model, processor, batch, sequences, tokens)  # warm-up
        return min(engine.timed_decode(model, processor, batch, sequences, tokens) for _ in range(REPEATS))

    measured = {n: max(1e-9, (best(n, steps) - best(n, 1)) / (steps - 1)) for n in widths}
    fixed, per_sequence = fit_line(measured)
    return dict(engine_decode_step_s=fixed, engine_decode_s_per_sequence=per_sequence,
                engine_decode_measured={"steps": steps, "step_s": {str(n): s for n, s in measured.items()}})


def rollout_engine_of(recipe, model, processor):
    """The vLLM engine a run of `recipe` generates on (rollout.backend vllm), over `model`'s base;
    None with rollout.backend hf or where vLLM is not installed (the plan then prices the
    engine's decode with transformers' figures and says so)."""
    import importlib.util
    import tempfile

    from lite_cpt.run.unit_plan import engine_plan

    plan = engine_plan(recipe)
    if plan is None or importlib.util.find_spec("vllm") is None:
        return None
    from lite_cpt.train.vllm_backend import build_rollout_engine

    return build_rollout_engine(plan, model, processor, tempfile.mkdtemp(prefix="lite-cpt-calibration-vllm-"))


def engine_figures(recipe, model, processor, batch: list[Prompt], new_tokens: int | None, engine=None) -> dict:
    """The engine's decode fit (`new_tokens` replaces its step count) on `engine`, else on the
    recipe's (`rollout_engine_of`); {} without one. On a GPU at `engine_decode_widths` (the slots
    the plan gives the engine), on a CPU at its DECODE_WIDTHS."""
    engine = engine or rollout_engine_of(recipe, model, processor)
    if engine is None:
        return {}
    if model_device(model).type == "cuda":
        widths, steps = engine_decode_widths(recipe.rollout.max_num_seqs), DECODE_WIDTHS["cuda"][1]
    else:
        widths, steps = DECODE_WIDTHS["cpu"]
    return engine_decode_costs(engine, model, processor, batch, widths, new_tokens or steps)


#: Bytes of the copy `host_copy_gb_per_s` times each way: large enough for the link's rate.
HOST_COPY_BYTES = 512 * 2**20


def host_copy_gb_per_s(device: torch.device) -> float:
    """GB/s of a copy between `device` and pinned host memory, the mean of both ways (what
    rollout.offload_trainer moves around each engine call); a CPU has no such link: the default."""
    if device.type != "cuda":
        return Calibration.host_copy_gb_per_s
    on_device = torch.empty(HOST_COPY_BYTES, dtype=torch.uint8, device=device)
    host = torch.empty(HOST_COPY_BYTES, dtype=torch.uint8, pin_memory=True)

    def round_trip():
        host.copy_(on_device, non_blocking=True)
        on_device.copy_(host, non_blocking=True)
        torch.cuda.synchronize(device)

    seconds, _ = _best_seconds(round_trip)
    return 2 * HOST_COPY_BYTES / seconds / 1e9


def measure_calibration(recipe, model, processor, *, prompts: int = 8, new_tokens: int | None = None, examples=None,
                        data_rates: bool = True, engine=None) -> Calibration:
    """Throughputs of `model` (the recipe's base + LoRA) on examples of every task of the
    recipe, or on `examples` (`lite_cpt.train.phase.Example`) when given. `data_rates`: also the
    rates that depend on the data (mean prompt and answer lengths; the SFT, rollout and log-prob
    phases' own rates, each on every task's own batch; the evaluation's on one call of every
    task and general benchmark); leave it off for synthetic prompts, whose lengths are not the
    recipe's. With rollout.backend vllm (or a given `engine`) the decode fit on the engine too."""
    groups = [examples] if examples is not None else recipe_examples(recipe, max(prompts, _batch_rows(recipe)))
    mixed = _interleaved(groups)[: max(prompts, len(groups))]
    batch = [example.prompt() for example in mixed]
    answers = [example.task.target(example.sample) for example in mixed]
    prefill, train = forward_costs(model, processor, batch, answers)
    step_s, per_sequence, decode_measured = decode_costs(model, processor, batch, prefill, new_tokens)
    engine_decode = engine_figures(recipe, model, processor, batch, new_tokens, engine)
    device = model_device(model)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} ({torch.get_num_threads()} threads)"
    optimizer_s = optimizer_step_seconds(model)
    data: dict = {}
    if data_rates:
        every = [example for group in groups for example in group]
        prompt_len, answer_len = data_lengths(processor, [e.prompt() for e in every],
                                              [e.task.target(e.sample) for e in every])
        data = dict(prompt_tokens=prompt_len, answer_tokens=answer_len,
                    sft_tokens_per_s=_per_task_rate(groups, lambda g: sft_work(recipe, model, processor, g)),
                    eval_prompts_per_s=eval_prompts_per_s(recipe, model, processor),
                    **rl_rates(recipe, model, processor, groups))  # last: it holds the reference adapter
    weights = "" if data_rates else " (random weights, synthetic prompts)"
    return Calibration(
        device=name, model=recipe.model.name, parameters=total_parameters(resolve_shape(recipe.model)),
        decode_step_s=step_s, decode_s_per_sequence=per_sequence, decode_measured=decode_measured,
        prefill_tokens_per_s=prefill.tokens_per_s, train_tokens_per_s=train.tokens_per_s,
        optimizer_step_s=optimizer_s, prefill_pass_s=prefill.pass_s, train_pass_s=train.pass_s,
        host_copy_gb_per_s=host_copy_gb_per_s(device),
        source=f"measured by lite-cpt bench gpu on {name}{weights}", **engine_decode, **data,
    )


def data_lengths(processor, prompts: list[Prompt], answers: list[str]) -> tuple[float, float]:
    """Mean prompt tokens and mean answer tokens of the calibration's samples."""
    from lite_cpt.train.batching import IGNORE_INDEX

    encoded = _encoded(processor, prompts, answers)
    labels = encoded.pop("labels_")
    answer = float((labels != IGNORE_INDEX).sum()) / len(prompts)
    return float(encoded["attention_mask"].sum()) / len(prompts) - answer, answer
