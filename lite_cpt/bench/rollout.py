"""Rollout generation, two paths side by side in one run: sequences per second of

    expanded : each call's prompts in the given order, each expanded to G copies before the
               prefill (`generate(num_return_sequences=G)`: G prefills and G vision-encoder
               passes per prompt)
    shared   : calls of prompts of similar token length, one prefill per prompt whose KV cache
               its G samples share (`lite_cpt.train.rollout.generate_completions`, what runs use)

on the same prompts (mixed over the recipe's tasks), the same G, sampling settings and
sequences per call. The two paths alternate, `repeats` times each, and each keeps its best
wall time, so a load spike on a shared machine hits both alike; the load average before and
after goes in the result. Ratio = shared / expanded sequences per second (above 1: faster).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from lite_cpt.train.batching import Prompt
from lite_cpt.io import atomic_write_json
from lite_cpt.train.rollout import Sampling, generate_completions

PATHS = ("expanded", "shared")


def mixed_prompts(recipe, count: int) -> list[Prompt]:
    """`count` training prompts taken in turn from each of the recipe's tasks."""
    from lite_cpt.tasks.base import build_task

    tasks = [build_task(cfg, recipe.data.root, recipe.seed) for cfg in recipe.tasks]
    per_task = -(-count // len(tasks))
    pools = [[Prompt(task.prompt(s), s.images, s.id) for s in task.load(cfg.source.train_split, per_task)]
             for task, cfg in zip(tasks, recipe.tasks)]
    mixed = [pool[i] for i in range(per_task) for pool in pools if i < len(pool)]
    return mixed[:count]


def _run(model, processor, prompts: list[Prompt], sampling: Sampling, per_call: int, path: str) -> tuple[float, int]:
    """(wall seconds, generated tokens) of one generation of every prompt's G answers."""
    started = time.perf_counter()
    out = generate_completions(model, processor, prompts, sampling, prompts_per_call=per_call, generator_seed=0,
                               expand_before_prefill=path == "expanded")
    return time.perf_counter() - started, out.num_generated_tokens


def bench_rollout(recipe, *, prompts: int = 32, group_size: int | None = None, prompts_per_call: int = 8,
                  max_new_tokens: int | None = None, repeats: int = 3, json_path: str | Path | None = None) -> dict:
    """Sequences/s of the expanded and the shared path on the recipe's model (first RL arm's
    sampling settings; G and the answer length from the arguments where given), and their ratio."""
    from lite_cpt.models import add_lora, load_base

    arm = next((a for a in recipe.arms if a.method in ("rft", "rif_rft", "multitask_rft")), recipe.arms[0])
    rft = arm.rft
    g = group_size or rft.group_size
    sampling = Sampling(g, max_new_tokens or rft.max_new_tokens, rft.temperature, rft.top_p, rft.top_k, rft.repetition_penalty)
    base, processor = load_base(recipe)
    model = add_lora(base, recipe.model.lora)
    batch = mixed_prompts(recipe, prompts)
    load_before = os.getloadavg()
    _run(model, processor, batch[:prompts_per_call], sampling, prompts_per_call, "shared")  # warm-up
    best = {path: float("inf") for path in PATHS}
    tokens = {}
    for _ in range(repeats):
        for path in PATHS:
            seconds, tokens[path] = _run(model, processor, batch, sampling, prompts_per_call, path)
            best[path] = min(best[path], seconds)
    sequences = len(batch) * g
    result = {
        "model": recipe.model.name, "prompts": len(batch), "group_size": g, "prompts_per_call": prompts_per_call,
        "max_new_tokens": sampling.max_new_tokens, "repeats": repeats,
        "paths": {path: {"seconds": round(best[path], 3), "sequences_per_s": round(sequences / best[path], 2),
                         "generated_tokens": tokens[path]} for path in PATHS},
        "ratio": round(best["expanded"] / best["shared"], 3),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": str(next(model.parameters()).device)},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    if json_path is not None:
        atomic_write_json(Path(json_path), result)
    return result
