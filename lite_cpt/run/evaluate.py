"""Evaluation: greedy answers scored by each task's own reward function (reward == metric)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lite_cpt.train.batching import Prompt
from lite_cpt.train.rollout import Sampling, active_engine, generate_completions
from lite_cpt.tasks.base import Sample, Task


@dataclass
class EvalSet:
    """A task (or general benchmark) with its fixed evaluation samples."""

    task: Task
    samples: list[Sample]


def score_items(model, processor, evalset: EvalSet, generation, *, cot: bool = False) -> list[dict]:
    """Each sample's id, generated answer and score, in the order of the evaluation set."""
    task = evalset.task
    out = generate_completions(
        model,
        processor,
        eval_prompts(evalset, cot),
        eval_sampling(generation),
        prompts_per_call=generation.batch_size,
        max_prompt_tokens=getattr(task.config, "max_prompt_tokens", None),
        generator_seed=0,
    )
    return scored_items(evalset, out.texts, getattr(out, "truncated", None), cot)


def eval_prompts(evalset: EvalSet, cot: bool) -> list[Prompt]:
    return [Prompt(evalset.task.prompt(s, cot), s.images, s.id) for s in evalset.samples]


def eval_sampling(generation) -> Sampling:
    return Sampling(max_new_tokens=generation.max_new_tokens, temperature=generation.temperature,
                    repetition_penalty=generation.repetition_penalty)


def scored_items(evalset: EvalSet, texts: list[str], truncated: list[bool] | None, cot: bool) -> list[dict]:
    """The per-item records of `evalset`'s answers `texts` (in its order)."""
    truncated = truncated or [False] * len(texts)
    return [{"id": sample.id, "answer": text, "score": evalset.task.score(text, sample, cot), "truncated": cut}
            for text, sample, cut in zip(texts, evalset.samples, truncated)]


def recipe_eval_sets(recipe, most: int | None = None, processor=None) -> list[EvalSet]:
    """Every task's and general benchmark's evaluation set at the recipe's sizes (None: the
    whole split), or at most `most` items each, read as the run reads them (`load_samples`:
    unusable items skipped; over-long prompts dropped where the task drops them, counted with
    `processor`)."""
    from lite_cpt.run.splits import load_samples
    from lite_cpt.tasks.base import build_task

    def size(stated: int | None) -> int | None:
        return stated if most is None else most if stated is None else min(stated, most)

    root = recipe.data.root
    sets = [EvalSet(t, load_samples(t, c.source.test_split, size(c.test_size), processor))
            for c in recipe.tasks for t in [build_task(c, root, recipe.seed)]]
    sets += [EvalSet(b, load_samples(b, c.source.test_split, size(c.size)))
             for c in recipe.evaluation.general for b in [build_task(c, root, recipe.seed, benchmark=True)]]
    return sets


def mean_score(items: list[dict]) -> float:
    return sum(item["score"] for item in items) / len(items) if items else 0.0


def evaluate_sets(model, processor, evalsets: list[EvalSet], generation, *, cot: bool = False,
                  on_done: Callable[[str], None] | None = None) -> dict[str, float]:
    """Scores of the model on every set, in order: {task name: mean reward}."""
    items = evaluate_sets_items(model, processor, evalsets, generation, cot=cot, on_done=on_done)
    return {name: mean_score(scored) for name, scored in items.items()}


def evaluate_sets_items(model, processor, evalsets: list[EvalSet], generation, *, cot: bool = False,
                        on_done: Callable[[str], None] | None = None) -> dict[str, list[dict]]:
    """Per-item results of the model on every set, in order: {task name: score_items(...)}.
    Inside `rollout_engine(engine)` every set's prompts go to the engine in one call, so its
    scheduler refills finished answers' slots across sets as well."""
    if active_engine() is not None and evalsets:
        return _engine_items(model, processor, evalsets, generation, cot=cot, on_done=on_done)
    items = {}
    for evalset in evalsets:
        items[evalset.task.name] = score_items(model, processor, evalset, generation, cot=cot)
        if on_done is not None:
            on_done(evalset.task.name)
    return items


def _engine_items(model, processor, evalsets: list[EvalSet], generation, *, cot: bool,
                  on_done: Callable[[str], None] | None) -> dict[str, list[dict]]:
    prompts = [eval_prompts(evalset, cot) for evalset in evalsets]
    out = generate_completions(model, processor, [p for group in prompts for p in group], eval_sampling(generation),
                               generator_seed=0)
    items, start = {}, 0
    for evalset, group in zip(evalsets, prompts):
        end = start + len(group)
        truncated = out.truncated[start:end] if out.truncated is not None else None
        items[evalset.task.name] = scored_items(evalset, out.texts[start:end], truncated, cot)
        start = end
        if on_done is not None:
            on_done(evalset.task.name)
    return items


def evaluate_adapter(recipe_path, overrides: list[str], adapter, task_names: list[str] | None,
                     console=None) -> dict[str, float]:
    """`lite-cpt eval`: scores of the base (or base + adapter) on a recipe's evaluation sets."""
    from lite_cpt.errors import UserError
    from lite_cpt.run.eval_prompt import shared_eval_cot
    from lite_cpt.models import load_base
    from lite_cpt.recipe import load_recipe
    from lite_cpt.run.unit_plan import planned_generation

    recipe = load_recipe(recipe_path, overrides)
    model, processor = load_base(recipe, console=console)
    if adapter is not None:
        from pathlib import Path

        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise UserError(f"no PEFT adapter at {adapter} (adapter_config.json is missing)")
        model = PeftModel.from_pretrained(model, str(adapter))
    sets = recipe_eval_sets(recipe, processor=processor)
    if task_names:
        known = {s.task.name for s in sets}
        unknown = [n for n in task_names if n not in known]
        if unknown:
            raise UserError(f"unknown task {', '.join(unknown)}; allowed values: {', '.join(sorted(known))}")
        sets = [s for s in sets if s.task.name in task_names]
    return evaluate_sets(model, processor, sets, planned_generation(recipe), cot=shared_eval_cot(recipe))
