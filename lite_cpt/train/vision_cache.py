"""Vision features once per image: a frozen tower's output for an image is computed once per
phase and reused by every pass that shows the model that image again.

A GRPO update shows each prompt's image to the model many times: the rollout's prefill, the
old-policy and reference scoring passes, the policy update (and again in a later epoch). With no
adapter on the vision tower, its output depends only on the image, so `vision_feature_cache`
wraps the family's `get_image_features(pixel_values, image_grid_thw)` on the model instance for
the duration of a phase: the batch's pixel rows are split per image by its grid (t·h·w patch
rows each), each image is keyed by the SHA-1 of its pixel bytes and grid, and only the misses go
through the tower, in one call; the features come back per image in the batch's order, as the
method returns them (Qwen3-VL's deepstack features too, split and joined the same way).

Memory is bounded: an LRU by bytes (`model.vision_cache_gb`) whose most recent entries stay on
the model's device up to `DEVICE_RESIDENT_BYTES` and whose older ones wait on the CPU. When any
parameter of the tower trains (a LoRA target that matches it), the cache is off: the features
would change with every update.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import torch

#: Most recent entries kept on the accelerator: a GRPO step's 16 images of 256 tokens at
#: Qwen2.5-VL-7B's width (3,584, bf16) are 29 MB. The rest of the cache is offloaded to the CPU;
#: a hit copies the image's features back (1.8 MB each). The planner counts these bytes.
DEVICE_RESIDENT_BYTES = 64 * 2**20


def _nbytes(tensors: tuple[torch.Tensor, ...]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class CacheCounts:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    offloads: int = 0


class VisionFeatureCache:
    """Per-image feature tuples (merged embeddings, then any deepstack features) by image key,
    least recently used first; at most `max_bytes` in all, of which the most recent
    `device_bytes` stay where they were computed and the rest is offloaded to the CPU (keys in
    `offloaded`; a hit brings the entry back)."""

    def __init__(self, max_bytes: int, device_bytes: int = DEVICE_RESIDENT_BYTES):
        self.max_bytes = max_bytes
        self.device_bytes = device_bytes
        self.entries: OrderedDict[str, tuple[torch.Tensor, ...]] = OrderedDict()
        self.offloaded: set[str] = set()
        self.counts = CacheCounts()
        self.output_type: type | None = None  # what `get_image_features` returns, from the first miss

    @property
    def bytes(self) -> int:
        return sum(_nbytes(e) for e in self.entries.values())

    def get(self, key: str, device: torch.device) -> tuple[torch.Tensor, ...] | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.counts.hits += 1
        self.entries.move_to_end(key)
        if key in self.offloaded:  # the most recent entry lives on the device again
            self.entries[key] = entry = tuple(t.to(device) for t in entry)
            self.offloaded.discard(key)
            self._bound()
        return tuple(t.to(device) for t in entry)

    def put(self, key: str, tensors: tuple[torch.Tensor, ...]) -> None:
        self.counts.misses += 1
        # a copy: a view would keep the whole batch's output alive behind an entry's byte count
        entry = tuple(t.detach().clone() for t in tensors)
        if _nbytes(entry) > self.max_bytes:
            return
        self.entries[key] = entry
        self.entries.move_to_end(key)
        self.offloaded.discard(key)
        self._bound()

    def _bound(self) -> None:
        """Evict least recently used entries past `max_bytes`; offload past `device_bytes`."""
        total = self.bytes
        while total > self.max_bytes:
            key, evicted = self.entries.popitem(last=False)
            self.offloaded.discard(key)
            total -= _nbytes(evicted)
            self.counts.evictions += 1
        resident = 0
        for key in reversed(self.entries):  # most recent first
            if key in self.offloaded:
                continue
            resident += _nbytes(self.entries[key])
            if resident > self.device_bytes:
                self.entries[key] = tuple(t.to("cpu") for t in self.entries[key])
                self.offloaded.add(key)
                self.counts.offloads += 1


def image_key(pixels: torch.Tensor, grid: torch.Tensor) -> str:
    """SHA-1 of one image's pixel rows (their bytes, whatever the dtype) with its grid and dtype."""
    digest = hashlib.sha1(pixels.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes())
    digest.update(f"{tuple(grid.tolist())}|{pixels.dtype}".encode())
    return digest.hexdigest()


def inner_vision_model(model):
    """The transformers module that owns `get_image_features` and `visual`, or None (text models)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    if inner is None or not hasattr(inner, "get_image_features") or getattr(inner, "visual", None) is None:
        return None
    return inner


def tower_trains(visual: torch.nn.Module) -> bool:
    """An adapter or a trainable weight anywhere in the vision tower."""
    return any(p.requires_grad or "lora_" in name for name, p in visual.named_parameters())


def cached_image_features(original, cache: VisionFeatureCache, spatial_merge: int):
    """`get_image_features` that serves known images from `cache` and runs `original` on the rest."""

    def get_image_features(pixel_values, image_grid_thw=None, **kwargs):
        # precomputed per-batch tensors (transformers' `image_cu_seqlens` and kin) fit only the
        # whole batch: such a call goes through uncached
        if image_grid_thw is None or any(isinstance(v, torch.Tensor) for v in kwargs.values()):
            return original(pixel_values, image_grid_thw, **kwargs)
        return_dict = kwargs.pop("return_dict", True)
        pieces = torch.split(pixel_values, image_grid_thw.prod(-1).tolist())
        keys = [image_key(p, g) for p, g in zip(pieces, image_grid_thw)]
        features = {k: f for k in dict.fromkeys(keys) if (f := cache.get(k, pixel_values.device)) is not None}
        first_miss = {k: i for i, k in reversed(list(enumerate(keys))) if k not in features}
        if first_miss:
            index = sorted(first_miss.values())
            out = original(torch.cat([pieces[i] for i in index]), image_grid_thw[index], return_dict=True, **kwargs)
            cache.output_type = type(out)
            tokens = (image_grid_thw[index].prod(-1) // spatial_merge**2).tolist()
            deep = [torch.split(d, tokens) for d in (getattr(out, "deepstack_features", None) or [])]
            for j, i in enumerate(index):
                entry = (out.pooler_output[j], *(d[j] for d in deep))
                cache.put(keys[i], entry)
                features[keys[i]] = tuple(t.detach() for t in entry)
        per_image = [features[k] for k in keys]
        fields = {"pooler_output": tuple(f[0] for f in per_image)}
        if len(per_image[0]) > 1:  # deepstack: one [tokens of all images, width] tensor per layer
            fields["deepstack_features"] = [torch.cat([f[n] for f in per_image]) for n in range(1, len(per_image[0]))]
        result = cache.output_type(**fields)
        return result if return_dict else result.to_tuple()

    get_image_features.vision_cache = cache
    return get_image_features


@contextmanager
def vision_feature_cache(model, max_gb: float, *, device_bytes: int = DEVICE_RESIDENT_BYTES,
                         cache: VisionFeatureCache | None = None):
    """Within the block, each distinct image goes through the model's vision tower once; yields
    the cache, or None where it is off (`max_gb` 0, no vision tower, or a tower that trains).
    Nested blocks share the outer block's cache; `cache` carries one over from an earlier block."""
    inner = inner_vision_model(model)
    if max_gb <= 0 or inner is None or tower_trains(inner.visual):
        yield None
        return
    active = inner.__dict__.get("get_image_features")
    if active is not None and hasattr(active, "vision_cache"):
        yield active.vision_cache
        return
    cache = cache if cache is not None else VisionFeatureCache(int(max_gb * 2**30), device_bytes)
    inner.get_image_features = cached_image_features(inner.get_image_features, cache,
                                                     inner.visual.spatial_merge_size)
    try:
        yield cache
    finally:
        del inner.get_image_features
