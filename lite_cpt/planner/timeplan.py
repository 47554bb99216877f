"""Time plan: predicted wall time per phase and per arm, from a recipe's workload and throughput
figures of the GPU (a calibration).

Every phase is a count of work times a measured (or default) rate:

    rollout        calls · (prefill + decode);  calls = ceil(sequences / sequences_per_call)
                   prefill = prefill_pass_s + call_prompts · prompt_tokens / prefill_tokens_per_s
                   (each prompt once: its G samples share its prefill)
                   decode  = new_tokens · (decode_step_s + call_sequences · decode_s_per_sequence)
    rif_rollout    the same, K sequences for each training row (offline filtering, once per task)
    logprob_pass   (sequences · (prompt + new) tokens / prefill_tokens_per_s
                   + micro-batches · prefill_pass_s) · passes
                   (passes: the reference when the KL is on, the old policy when a rollout batch
                   makes more than one optimizer step: inner_epochs x mini_batches_per_rollout > 1,
                   over (M - 1) / M of the rows: the first of M mini-batches reuses its update forward)
    (rollout and logprob_pass: sequences · the measured seconds per rollout (and pass) of the
    run's own phases, when the calibration measured them on this model at the arm's settings)
    grpo_step      (sequences · (prompt + new) tokens / train_tokens_per_s
                   + micro-batches · train_pass_s + updates · mini-batches · optimizer_step_s) · inner_epochs
    sft_step       rows · epochs · (prompt + answer) tokens / train_tokens_per_s
                   + steps · (micro-batches per step · train_pass_s + optimizer_step_s)
                   (or / sft_tokens_per_s, the measured rate of the run's SFT phase on this model)
    evaluation     (tasks trained, or 1 for a joint arm) · evaluation prompts, greedy, as rollout
                   with `evaluation_steps` decode steps per call (or / eval_prompts_per_s, the
                   measured rate of the run's evaluation on this model); with the vLLM backend
                   one continuously batched call per row (`continuous_evaluation_seconds`)
    base evaluation (row 0, once per run) is reported apart from the arms.

With `rollout.backend: vllm` rollouts, RIF's estimate and evaluation run on the continuously
batched engine: as many slots as its KV cache holds sequences of the expected prompt + answer
(`engine_slots`, up to max_num_seqs; the memory plan sizes the cache, planner/engine.py), each
answer its expected (mean) length, one drain of the tail per call, each step at the engine's own
decode figures (engine_decode_step_s, engine_decode_s_per_sequence) when the calibration measured
them on this model, else at transformers generate's; transformers' measured rollout and
evaluation rates do not apply there. Without the engine's figure
(a prediction made with no GPU size: `predicted_phases` on a machine without CUDA) the slots
fall back to CONTINUOUS_SLOTS. Decoding with `generate` runs every sequence of a call until the longest one ends. Rollouts are
counted at `max_new_tokens` steps (sampled answers with a chain of thought reach it): an upper
bound when they end early. Evaluation calls end with their longest answer: chains of thought
(RL arms and the base model when the evaluation asks for one) at `max_new_tokens`, an
SFT-trained adapter's short answers sooner (`evaluation_steps`).
Sequences per call are the planner's knobs (rollouts) and the evaluation batch (the recipe's or,
at `auto`, the planner's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lite_cpt.arms.rl.settings import rl_settings
from lite_cpt.train.phase import micro_batches
from lite_cpt.planner.calibration import REFERENCE_24GB, Calibration
from lite_cpt.planner.engine_slots import KV_BLOCK_TOKENS, continuous_slots, offload_seconds
from lite_cpt.planner.lengths import (SHORT_ANSWER_TOKENS, AnswerLengths, default_lengths, default_target_tokens,
                                     expected_image_tokens)
from lite_cpt.planner.shapes import total_parameters
from lite_cpt.planner.workload import Knobs, Workload, workload_of

#: Text tokens of a prompt besides its image: the chat template, the question and the answer
#: options (ScienceQA with its context is the longest task; most questions are far shorter).
PROMPT_TEXT_TOKENS = 160
TIME_PHASES = ("rif_rollout", "rollout", "logprob_pass", "grpo_step", "sft_step", "evaluation")


# --------------------------------------------------------------------------------------------
# What one arm generates and trains


@dataclass(frozen=True)
class TaskCounts:
    name: str
    train_rows: int | None  # None: the whole split, whose size the recipe does not state
    epochs: float
    test_rows: int | None
    answers: AnswerLengths | None = None  # sampled answers' lengths (None: every answer at the cap)
    prompt: float | None = None  # expected prompt tokens, a typical image included (None: the plan's estimate)
    target: float | None = None  # expected SFT target tokens (None: the recipe's max_answer_tokens)


@dataclass(frozen=True)
class Counts:
    """The row counts of a recipe that time depends on, and the arm's training settings."""

    tasks: tuple[TaskCounts, ...]
    general_rows: int | None
    joint: bool
    rif: bool
    kl: bool
    inner_epochs: int
    remax: bool
    eval_cot: bool = False  # evaluation prompts ask for a chain of thought
    general_sets: int = 0  # general benchmarks: an evaluation makes one engine call per set
    shared_prefix: bool = True  # scoring passes hold each prompt once per group (rft.shared_prefix)
    continuous: bool = False  # the rollout backend refills finished answers' slots (decode tracks the mean)
    mini_batches: int = 1  # optimizer steps per rollout batch per inner epoch
    rif_compute: bool = False  # offline RIF whose estimate counts against RFT's rollouts
    engine_kv_tokens: int | None = None  # the vLLM engine's KV cache in tokens (None: not planned)
    max_num_seqs: int = 256  # rollout.max_num_seqs: the most sequences the engine decodes at once

    def mean_prompt(self, work: Workload, cal: Calibration) -> float:
        """The tasks' mean expected prompt (for evaluation, which mixes them)."""
        known = [t.prompt for t in self.tasks if t.prompt is not None]
        return sum(known) / len(known) if known else prompt_tokens(work, cal)

    def pooled_answers(self) -> AnswerLengths | None:
        """One distribution for calls that mix every task (evaluation): the tasks' mean length,
        the largest spread."""
        known = [t.answers for t in self.tasks if t.answers is not None]
        if not known:
            return None
        return AnswerLengths(sum(a.mean for a in known) / len(known), max(a.cv for a in known), known[0].source)


def task_answer_lengths(task, cal: Calibration | None, model: str) -> AnswerLengths | None:
    """A task's expected answer lengths: the calibration rollout's on this model, else the
    task type's default (None: at the cap)."""
    if cal is not None and cal.answer_lengths and cal.model == model and task.name in cal.answer_lengths:
        mean, cv = cal.answer_lengths[task.name][:2]
        return AnswerLengths(mean, cv, f"measured on {cal.device}")
    return default_lengths(task.type)


def task_prompt_tokens(recipe, task, cal: Calibration | None) -> float | None:
    """A task's expected prompt: a typical image of its dataset under the recipe's pixel budget
    plus PROMPT_TEXT_TOKENS, within its prompt limit; None when a calibration of this model
    measured the data's prompts (those win), or the task has no typical image size."""
    from lite_cpt.planner.workload import resolve_shape

    if cal is not None and cal.prompt_tokens and cal.model == recipe.model.name:
        return None
    shape = resolve_shape(recipe.model)
    if not shape.has_vision or recipe.model.name == "tiny":
        return None
    image = expected_image_tokens(task.type, recipe.model.min_pixels, recipe.model.max_pixels,
                                  shape.pixels_per_image_token)
    return None if image is None else min(task.max_prompt_tokens, image + PROMPT_TEXT_TOKENS)


def counts_of(recipe, arm, cal: Calibration | None = None) -> Counts:
    from lite_cpt.run.eval_prompt import arm_eval_cot

    tasks = tuple(TaskCounts(t.name, t.train_size, arm.epochs or t.epochs, t.test_size,
                             task_answer_lengths(t, cal, recipe.model.name), task_prompt_tokens(recipe, t, cal),
                             default_target_tokens(t.type))
                  for t in recipe.tasks)
    general = [b.size for b in recipe.evaluation.general]
    rft = rl_settings(arm)
    return Counts(
        tasks=tasks,
        general_rows=None if None in general else sum(general),
        general_sets=len(general),
        joint=arm.method.startswith("multitask"),
        rif=arm.method == "rif_rft" and arm.rif.mode == "offline",
        kl=rft.uses_kl,
        inner_epochs=rft.inner_epochs,
        remax=rft.advantage == "remax",
        eval_cot=arm_eval_cot(recipe, arm),
        mini_batches=rft.mini_batches_per_rollout,
        rif_compute=arm.method == "rif_rft" and arm.rif.mode == "offline" and arm.rif.budget == "compute",
        shared_prefix=rft.shared_prefix,
        continuous=recipe.rollout.backend == "vllm",
        max_num_seqs=recipe.rollout.max_num_seqs,
    )


def prompt_tokens(work: Workload, cal: Calibration | None = None) -> float:
    """Expected prompt length: measured with the calibration on this model's data, else the image
    plus PROMPT_TEXT_TOKENS; within the recipe's limit."""
    if cal is not None and cal.prompt_tokens and cal.model == work.shape.name:
        return min(work.prompt_tokens, cal.prompt_tokens)
    return min(work.prompt_tokens, work.image_tokens + PROMPT_TEXT_TOKENS)


def answer_tokens(work: Workload, cal: Calibration | None = None, target: float | None = None) -> float:
    """Expected SFT answer length: measured with the calibration, else the task type's `target`
    (lengths.default_target_tokens), else the recipe's limit; never over the limit."""
    if cal is not None and cal.answer_tokens and cal.model == work.shape.name:
        return min(work.answer_tokens, cal.answer_tokens)
    return work.answer_tokens if target is None else min(work.answer_tokens, target)


def rollout_kv_tokens(work: Workload, cal: Calibration | None, task: TaskCounts, group_size: int) -> float:
    """KV-cache tokens one rollout of `task` holds in the engine over its life: its mean answer
    (the cap without lengths) and its share of the prompt. The `group_size` requests of a prompt
    share the prompt's full KV blocks (vLLM's prefix cache; tests/test_vllm_backend.py checks the
    counts), which stay until the group's longest answer ends: prompt x E[longest of G] /
    (G x E[answer]) per rollout; the prompt's last, partial block (half a block expected) is each
    request's own. One request (evaluation, G = 1): prompt + answer."""
    prompt = task.prompt or prompt_tokens(work, cal)
    if task.answers is None:
        answer, hold = float(work.new_tokens), 1.0
    else:
        answer = task.answers.mean_capped(work.new_tokens)
        hold = task.answers.expected_longest(group_size, work.new_tokens) / answer
    partial = min(prompt, KV_BLOCK_TOKENS / 2)
    return (prompt - partial) * hold / max(1, group_size) + partial + answer


def evaluation_sequence_tokens(work: Workload, cal: Calibration, counts: Counts, *, trained: bool = True) -> float:
    """Expected tokens of one evaluation sequence: the tasks' mean prompt and the answer the
    evaluation decodes (a chain of thought's pooled mean, else `evaluation_steps`)."""
    answers = evaluation_answers(work, counts, trained)
    answer = answers.mean_capped(work.eval_new_tokens) if answers is not None else evaluation_steps(
        work, cal, counts, trained=trained)
    return counts.mean_prompt(work, cal) + answer


# --------------------------------------------------------------------------------------------
# Seconds per phase


def generation_seconds(cal: Calibration, *, sequences: int, per_call: int, prompt: int, new_tokens: int,
                       group_size: int = 1, answers: AnswerLengths | None = None, continuous: bool = False) -> float:
    """`sequences` generated in calls of `per_call`; the `group_size` samples of a prompt share
    one prefill of it. A call decodes until its longest answer ends: `new_tokens` steps, or with
    `answers` the expected longest of its answers (cut at new_tokens). `continuous`: finished
    answers' slots are refilled, so the calls' steps add up to the mean answer per slot."""
    if sequences <= 0:
        return 0.0
    full, rest = divmod(sequences, per_call)
    calls = [per_call] * full + ([rest] if rest else [])

    def steps(b: int) -> float:
        if answers is None:
            return new_tokens
        if continuous:
            return answers.mean_capped(new_tokens)
        return answers.expected_longest(b, new_tokens)

    seconds = sum(cal.prefill_pass_s + math.ceil(b / group_size) * prompt / cal.prefill_tokens_per_s
                  + steps(b) * (cal.decode_step_s + b * cal.decode_s_per_sequence) for b in calls)
    if continuous and answers is not None:  # the last slots drain: the tail past the mean, once
        slots = calls[0]
        seconds += (answers.expected_longest(slots, new_tokens) - answers.mean_capped(new_tokens)) * (
            cal.decode_step_s + slots * cal.decode_s_per_sequence)
    return seconds


def micro_batch_count(sequences: int, length: float, knobs: Knobs) -> int:
    """Micro-batches of `sequences` of about `length` tokens, as the run packs them
    (`lite_cpt.train.phase.micro_batches`: by the knobs' token budget, or their fixed count)."""
    return len(micro_batches([length] * sequences, knobs))


def training_phases(counts: Counts) -> list[TaskCounts] | None:
    """The arm's training phases: one per task, or for a joint arm one over every task's rows at
    the largest epoch count (as the loop trains it); None when a split's size is unstated."""
    if any(t.train_rows is None for t in counts.tasks):
        return None
    if counts.joint:  # the tasks' rows mixed: their pooled answer lengths, their row-weighted prompt
        rows = sum(t.train_rows for t in counts.tasks)
        prompt, target = (_row_weighted([getattr(t, field) for t in counts.tasks], counts.tasks)
                          for field in ("prompt", "target"))
        return [TaskCounts("joint", rows, max(t.epochs for t in counts.tasks), None, counts.pooled_answers(), prompt,
                           target)]
    return list(counts.tasks)


def _row_weighted(values: list[float | None], tasks) -> float | None:
    """The tasks' mean of `values`, each weighted by its training rows; None if one is unknown."""
    if None in values:
        return None
    return sum(v * t.train_rows for v, t in zip(values, tasks)) / sum(t.train_rows for t in tasks)


def evaluation_prompts(counts: Counts) -> int | None:
    """Prompts of one evaluation of the adapter: every task's test rows and the general benchmarks."""
    if counts.general_rows is None or any(t.test_rows is None for t in counts.tasks):
        return None
    return sum(t.test_rows for t in counts.tasks) + counts.general_rows


def rl_seconds(work: Workload, knobs: Knobs, cal: Calibration, counts: Counts, task: TaskCounts) -> dict[str, float]:
    """rif_rollout, rollout, logprob_pass and grpo_step seconds of one GRPO training phase."""
    prompt, new, g = task.prompt or prompt_tokens(work, cal), work.new_tokens, work.group_size
    updates = math.ceil(task.train_rows * task.epochs / work.prompts_per_step)
    if counts.rif_compute:  # what RFT's rollouts leave once the K-rollout estimate is paid
        from lite_cpt.train.rif_budget import compute_matched_updates

        updates = compute_matched_updates(task.train_rows, work.rif_rollouts, task.epochs, work.prompts_per_step, g)
    prompts = updates * work.prompts_per_step
    per_call = knobs.prompts_per_call * g
    if counts.continuous:  # paged KV: slots hold answers of their real length, not all at the cap
        per_call = continuous_slots(counts, rollout_kv_tokens(work, cal, task, g), per_call)
    measured = rl_measured_here(work, knobs, cal)
    decode = dict(answers=task.answers, continuous=counts.continuous)
    generating = engine_decode(work, cal) if counts.continuous else cal
    if measured and cal.rollout_s_per_sequence and not counts.continuous:  # a rate of transformers' calls
        out = {"rollout": prompts * g * cal.rollout_s_per_sequence}
    else:
        out = {"rollout": generation_seconds(generating, sequences=prompts * g, per_call=per_call, prompt=prompt,
                                             new_tokens=new, group_size=g, **decode)}
    if counts.remax:  # one greedy baseline answer per prompt
        out["rollout"] += generation_seconds(generating, sequences=prompts, per_call=per_call, prompt=prompt,
                                             new_tokens=new, **decode)
    out["rollout"] += offload_seconds(work, cal, "rollout", calls=updates)
    if counts.rif:  # RIF's K-rollout estimate: on the rollout engine when there is one
        k = work.rif_rollouts
        rif_call = knobs.prompts_per_call * k
        if counts.continuous:
            rif_call = continuous_slots(counts, rollout_kv_tokens(work, cal, task, k), rif_call)
        out["rif_rollout"] = generation_seconds(generating, sequences=task.train_rows * k, per_call=rif_call, prompt=prompt,
                                                new_tokens=new, group_size=k, **decode)
        out["rif_rollout"] += offload_seconds(work, cal, "rollout", calls=1)
    answer = task.answers.mean_capped(new) if task.answers is not None else new
    if counts.shared_prefix:  # one packed row per group: the prompt once, then its G answers
        tokens = prompts * (prompt + g * answer)
        micro = updates * micro_batch_count(work.prompts_per_step, prompt + g * answer, knobs)
    else:
        tokens = prompts * g * (prompt + answer)
        micro = updates * micro_batch_count(work.prompts_per_step * g, prompt + answer, knobs)
    # the old policy's pass runs whenever one rollout batch makes more than one optimizer step,
    # over every mini-batch but the first, which takes its update forward's own log-probs
    # (lite_cpt.train.policy_update.FIRST_STEP_REUSE)
    old_share = (counts.mini_batches - 1) / counts.mini_batches if counts.inner_epochs * counts.mini_batches > 1 else 0
    passes = int(counts.kl) + old_share
    if measured and cal.logprob_s_per_sequence:
        out["logprob_pass"] = prompts * g * passes * cal.logprob_s_per_sequence
    else:
        out["logprob_pass"] = (tokens / cal.prefill_tokens_per_s + micro * cal.prefill_pass_s) * passes
    out["grpo_step"] = (tokens / cal.train_tokens_per_s + micro * cal.train_pass_s
                        + updates * counts.mini_batches * cal.optimizer_step_s) * counts.inner_epochs
    return out


def rl_measured_here(work: Workload, knobs: Knobs, cal: Calibration) -> bool:
    """Whether `cal` measured the run's rollout and log-prob phases on this model at this arm's
    G, max_new_tokens and prompts per generate call."""
    settings = [work.group_size, work.new_tokens, knobs.prompts_per_call]
    return measured_here(work, cal) and cal.rl_measured_at is not None and list(cal.rl_measured_at) == settings


def measured_here(work: Workload, cal: Calibration) -> bool:
    """Whether `cal` was measured on this recipe's model (its data-specific rates apply)."""
    return cal.model == work.shape.name


def engine_decode(work: Workload, cal: Calibration) -> Calibration:
    """The figures the vLLM engine's phases decode at: the engine's own decode fit when `cal`
    measured it on this model, else transformers generate's (the plan's notes say so)."""
    return cal.with_engine_decode() if measured_here(work, cal) else cal


def sft_seconds(work: Workload, knobs: Knobs, cal: Calibration, task: TaskCounts) -> dict[str, float]:
    steps = math.ceil(task.train_rows * task.epochs / work.batch_size)
    length = (task.prompt or prompt_tokens(work, cal)) + answer_tokens(work, cal, task.target)
    tokens = task.train_rows * task.epochs * length
    if cal.sft_tokens_per_s and measured_here(work, cal):
        return {"sft_step": tokens / cal.sft_tokens_per_s}
    micro = micro_batch_count(work.batch_size, length, knobs)
    return {"sft_step": tokens / cal.train_tokens_per_s + steps * (micro * cal.train_pass_s + cal.optimizer_step_s)}


#: Decode steps of a generate call whose answers are short (option letters, numbers, VQA answers
#: of a few words, then the end-of-turn token): the longest of a call of tens of such answers.
SHORT_ANSWER_STEPS = SHORT_ANSWER_TOKENS


def evaluation_steps(work: Workload, cal: Calibration, counts: Counts, *, trained: bool = True) -> int:
    """Decode steps of one evaluation call: a call ends when its longest answer does. Answers
    with a chain of thought (RL arms, and every model before training, asked for one) run to the
    expected longest of the call's answers (the tasks' pooled lengths; max_new_tokens without
    them); an SFT-trained adapter answers as its targets do (no reasoning): the data's mean
    answer (+ end of turn) when calibrated, else SHORT_ANSWER_STEPS."""
    if counts.eval_cot and (work.is_rft or not trained):
        answers = counts.pooled_answers()
        if answers is None:
            return work.eval_new_tokens
        return math.ceil(answers.expected_longest(work.eval_batch, work.eval_new_tokens))
    if cal.answer_tokens and measured_here(work, cal):
        return min(work.eval_new_tokens, math.ceil(cal.answer_tokens) + 1)
    return min(work.eval_new_tokens, SHORT_ANSWER_STEPS)


def evaluation_seconds(work: Workload, cal: Calibration, counts: Counts, *, trained: bool = True) -> float | None:
    """Seconds of one evaluation of the adapter (`trained`: False for the base model's row) on
    every task and general benchmark: the measured evaluation rate on the calibrated model, else
    generate calls of `evaluation_steps` decode steps."""
    prompts = evaluation_prompts(counts)
    if prompts is None:
        return None
    if counts.continuous:
        return continuous_evaluation_seconds(work, cal, counts, prompts, trained=trained)
    if cal.eval_prompts_per_s and measured_here(work, cal):  # a rate of transformers' static calls
        return prompts / cal.eval_prompts_per_s
    return generation_seconds(cal, sequences=prompts, per_call=work.eval_batch, prompt=counts.mean_prompt(work, cal),
                              new_tokens=evaluation_steps(work, cal, counts, trained=trained))


def continuous_evaluation_seconds(work: Workload, cal: Calibration, counts: Counts, prompts: int, *,
                                  trained: bool) -> float:
    """Seconds of one evaluation on the rollout engine (rollout.backend vllm): every prompt of the
    row in one call of the engine's slots (`continuous_slots`), refilled as answers end, so chains
    of thought cost their mean length per slot and one drain of the tail (the tasks' pooled
    lengths, as `evaluation_steps` takes them); short answers, or answers of unknown length,
    `evaluation_steps` per slot."""
    answers = evaluation_answers(work, counts, trained)
    steps = work.eval_new_tokens if answers is not None else evaluation_steps(work, cal, counts, trained=trained)
    slots = continuous_slots(counts, evaluation_sequence_tokens(work, cal, counts, trained=trained), work.eval_batch)
    calls = len(counts.tasks) + counts.general_sets  # one engine call per set
    return generation_seconds(engine_decode(work, cal), sequences=prompts, per_call=slots, prompt=counts.mean_prompt(work, cal),
                              new_tokens=steps, answers=answers, continuous=True) + offload_seconds(
        work, cal, "evaluation", calls=calls)


def evaluation_answers(work: Workload, counts: Counts, trained: bool) -> AnswerLengths | None:
    """The answer lengths an evaluation decodes: chains of thought (RL arms, and every model
    before training, asked for one) at the tasks' pooled lengths; None for short answers."""
    return counts.pooled_answers() if counts.eval_cot and (work.is_rft or not trained) else None


UNKNOWN_SIZES = "a task or benchmark has size null (all rows): set train_size, test_size and size to predict its time"


def phase_predictions(work: Workload, knobs: Knobs, cal: Calibration, counts: Counts) -> list[dict] | None:
    """Predicted seconds of each training phase of an arm (a task, or the joint phase), each a
    {"task", time phase: seconds ..., "evaluation"} record; None when a size is unstated."""
    cal = cal.scaled_to(total_parameters(work.shape))
    phases = training_phases(counts)
    evaluation = evaluation_seconds(work, cal, counts)
    if phases is None or evaluation is None:
        return None
    out = []
    for task in phases:
        train = rl_seconds(work, knobs, cal, counts, task) if work.is_rft else sft_seconds(work, knobs, cal, task)
        out.append({"task": task.name, **train, "evaluation": evaluation})
    return out


@dataclass
class ArmTime:
    arm: str
    seconds: dict[str, float]  # per phase of TIME_PHASES that the arm runs
    unknown: str | None = None  # why the arm has no prediction (a split of unstated size)

    @property
    def hours(self) -> float | None:
        return None if self.unknown else sum(self.seconds.values()) / 3600

    def to_json(self) -> dict:
        return {"hours": None if self.hours is None else round(self.hours, 3),
                "phases_hours": {k: round(v / 3600, 4) for k, v in self.seconds.items()},
                "unknown": self.unknown}


def arm_time(work: Workload, knobs: Knobs, cal: Calibration, counts: Counts) -> ArmTime:
    """Predicted seconds per phase of one arm (the base evaluation, row 0, is not the arm's)."""
    predictions = phase_predictions(work, knobs, cal, counts)
    if predictions is None:
        return ArmTime(work.arm, {}, unknown=UNKNOWN_SIZES)
    seconds: dict[str, float] = {}
    for record in predictions:
        for phase in TIME_PHASES:
            if phase in record:
                seconds[phase] = seconds.get(phase, 0.0) + record[phase]
    return ArmTime(work.arm, seconds)


def base_evaluation_seconds(work: Workload, cal: Calibration, counts: Counts) -> float | None:
    return evaluation_seconds(work, cal.scaled_to(total_parameters(work.shape)), counts, trained=False)


def predicted_phases(recipe, arm, knobs: Knobs, calibration: Calibration | None = None,
                     counts: Counts | None = None) -> list[dict] | None:
    """`phase_predictions` for `arm` (an ArmConfig) of `recipe` at the knobs a run uses; `counts`:
    the arm's counts as the caller sized them (with the vLLM engine's KV cache on this GPU,
    `planner.engine.engine_counts`), else `counts_of`."""
    cal = calibration or REFERENCE_24GB
    return phase_predictions(workload_of(recipe, arm), knobs, cal, counts or counts_of(recipe, arm, cal))


def predicted_record(prediction: dict) -> dict[str, float]:
    """A phase's prediction as a task_end record logs it: seconds per time phase, training total."""
    phases = {k: round(v, 6) for k, v in prediction.items() if k in TIME_PHASES}
    train = sum(v for k, v in phases.items() if k != "evaluation")
    return {**phases, "train": round(train, 6)}
