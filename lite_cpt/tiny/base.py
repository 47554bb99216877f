"""The tiny model's shared base: a random tiny model (Qwen2.5-VL unless `model.family` says
otherwise) given some ability by a short multi-task SFT.

A 7B instruct model starts continual training with non-zero ability on every task; a random
tiny model knows nothing. So the tiny recipe first trains all of its weights on a separate
"base" split of every synthetic task and general benchmark, and caches the result under a hash
of everything that determines it.

The base of `recipes/tiny.yaml` (the default shape and base training, family qwen2_5_vl) ships
with the package (`lite_cpt/tiny/bases/`, under 1 MB) and is checked against its stored
fingerprint: training on a CPU sums in an order that depends on the machine, so a base built
elsewhere would not answer as the README's tiny tables say. Other settings build their base
on first use; a build of the default random model is checked against its stored fingerprint
(`lite_cpt.tiny.fingerprint`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lite_cpt.data import synthetic
from lite_cpt.families import DEFAULT_FAMILY, resolve_family
from lite_cpt.run.locks import waiting_lock
from lite_cpt.recipe import Recipe, arm_config, config_hash
from lite_cpt.tasks.base import TASK_TYPES, BENCHMARK_TYPES

BASE_VERSION = 1  # bump when the generator or the training procedure changes

#: The bases shipped with the package: {tiny_base_key: (directory under lite_cpt/tiny/bases, fingerprint)}.
SHIPPED_BASES = {
    "f7f2d1674dcc3d68": ("qwen2_5_vl", "8628d0900cb939ea7f68a097042a2f88a62be71e3afa875a9cc7ea96124b7604"),
}
SHIPPED_ROOT = Path(__file__).resolve().parent / "bases"

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("LITE_CPT_CACHE", Path.home() / ".cache" / "lite-cpt"))


def tiny_base_key(recipe: Recipe) -> str:
    model = recipe.model
    parts = {"tiny": model.tiny.model_dump(), "base": model.base_training.model_dump(), "version": BASE_VERSION}
    family = resolve_family(recipe.model)
    if family.name != DEFAULT_FAMILY:  # the default family's key predates families: its cache stays valid
        parts["family"] = family.name
    if family.tiny_build != 1:
        parts["family_build"] = family.tiny_build
    return config_hash(parts)


def ensure_tiny_base(recipe: Recipe, console=None) -> Path:
    """Path of the trained tiny base for this recipe: the shipped one (checked against its
    fingerprint), else the cached one, building it on first use."""
    key = tiny_base_key(recipe)
    if key in SHIPPED_BASES:
        from lite_cpt.tiny.fingerprint import check_shipped

        directory, fingerprint = SHIPPED_BASES[key]
        check_shipped(SHIPPED_ROOT / directory, fingerprint)
        return SHIPPED_ROOT / directory
    path = cache_root() / f"tiny-base-{key}"
    if (path / "config.json").exists():
        return path
    # Workers starting together (parallel arms, Ray tasks) build it once: the first holds the
    # lock and builds, the others wait and load what it saved.
    with waiting_lock(path.with_name(path.name + ".lock")):
        if (path / "config.json").exists():
            return path
        return _build_tiny_base(recipe, path, console)


def _build_tiny_base(recipe: Recipe, path: Path, console=None) -> Path:
    import torch

    say = _progress_lines(console)
    say(f"building the tiny base (once; cached in {path})")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order for training, whatever the caller's setting
    try:
        return _build_on_one_thread(recipe, path, console, say)
    finally:
        torch.set_num_threads(threads)


def _build_on_one_thread(recipe: Recipe, path: Path, console, say) -> Path:
    from lite_cpt.train.phase import Knobs, Phase, examples_of
    from lite_cpt.progress import task_progress
    from lite_cpt.recipe_model import TinyModelConfig
    from lite_cpt.train.sft import train_sft
    from lite_cpt.tiny.model import build_tiny_model, save_tiny_model, tiny_corpus
    from lite_cpt.tiny.fingerprint import check_random_build

    tiny, base = recipe.model.tiny, recipe.model.base_training
    family = resolve_family(recipe.model)
    model, processor = build_tiny_model(tiny, tiny_corpus(tiny.seed, family.name), family.name)
    say(f"tiny base: tokenizer and random {family.name} model built")
    tokenizer = getattr(processor, "tokenizer", processor)
    if message := check_random_build(family.name, tiny == TinyModelConfig(), model, tokenizer):
        log.warning(message)
        if console is not None:
            console.print(f"[yellow]{message}[/]")
    if base.enabled:
        examples = []
        # A text-only model learns the synthetic tasks that have no image.
        for kind in synthetic.GENERATORS if family.vision else synthetic.TEXT_ONLY:
            registry = TASK_TYPES if kind in TASK_TYPES else BENCHMARK_TYPES
            task = registry[kind](kind, seed=tiny.seed)
            examples += examples_of(task, task.load("base", base.samples_per_task))
        # Full fine-tuning as one SFT phase: the batch in one pass, the kernel's log-prob chunk.
        arm = arm_config(name="base", method="sft", lr=base.lr, batch_size=base.batch_size)
        say(f"tiny base: training on {len(examples)} examples, {base.epochs} epoch(s)")
        with task_progress(console, "training the tiny base") as advance:
            phase = Phase(knobs=Knobs(base.batch_size, None, 1), seed=tiny.seed, epochs=base.epochs,
                          name="base", progress=_with_step_lines(advance, say))
            train_sft(model, processor, examples, arm, phase)
    saved = save_tiny_model(model, processor, path)
    say(f"tiny base: saved to {saved}")
    return saved


def _progress_lines(console):
    """Plain lines that also reach a log (a progress bar leaves nothing in a file), each with the
    seconds since the build started."""
    import time

    started = time.perf_counter()

    def say(text: str) -> None:
        if console is not None:
            console.print(f"{text} ({time.perf_counter() - started:.0f} s)", highlight=False, markup=False)

    return say


def _with_step_lines(advance, say, every: int = 10):
    """`advance`, plus a line at about every `every` % of the steps (and at the last)."""
    said = set()

    def both(done: int, total: int) -> None:
        advance(done, total)
        if total and (done == total or done * every // total not in said):
            said.add(done * every // total)
            say(f"tiny base: step {done}/{total}")

    return both
