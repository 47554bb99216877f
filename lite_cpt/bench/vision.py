"""The vision-cache column of `lite-cpt bench prefix`: the same GRPO update with the images'
features served from a warm cache (as after the rollout that filled it) vs through the tower,
with the images the tower received and the seconds it ran in each."""

from __future__ import annotations

import time
from contextlib import contextmanager

from lite_cpt.train.vision_cache import VisionFeatureCache, inner_vision_model, vision_feature_cache


@contextmanager
def tower_meter(model):
    """Counts the images and seconds of every vision-tower forward in the block."""
    visual = inner_vision_model(model).visual
    seen = {"calls": 0, "images": 0, "seconds": 0.0}
    started = []

    def before(_module, args, kwargs):
        started.append(time.perf_counter())

    def after(_module, args, kwargs, _out):
        seen["seconds"] += time.perf_counter() - started.pop()
        seen["calls"] += 1
        seen["images"] += len(kwargs.get("grid_thw", args[1] if len(args) > 1 else ()))

    handles = [visual.register_forward_pre_hook(before, with_kwargs=True),
               visual.register_forward_hook(after, with_kwargs=True)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def vision_cache_side(model, timed_update, repeats: int, max_gb: float) -> dict | None:
    """Seconds of `timed_update()` with the cache warm (the fastest of `repeats`, alternating with
    runs without it) and the tower's images and seconds per update on each side; None where the
    cache is off for this model (no vision tower, or LoRA on it)."""
    inner = inner_vision_model(model)
    if inner is None or max_gb <= 0:
        return None
    cache = VisionFeatureCache(int(max_gb * 2**30))
    with vision_feature_cache(model, max_gb, cache=cache) as active:
        if active is None:
            return None
        timed_update()  # fills the cache, as the rollout before an update does
    best = {"without": float("inf"), "with": float("inf")}
    meters = {}
    for _ in range(repeats):
        with tower_meter(model) as meters["without"]:
            best["without"] = min(best["without"], timed_update())
        with vision_feature_cache(model, max_gb, cache=cache), tower_meter(model) as meters["with"]:
            best["with"] = min(best["with"], timed_update())
    return {side: {"seconds": best[side], "tower_calls": meters[side]["calls"],
                   "tower_images": meters[side]["images"], "tower_seconds": meters[side]["seconds"]}
            for side in best} | {"speedup": best["without"] / best["with"]}
