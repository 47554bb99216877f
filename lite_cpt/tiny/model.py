"""Offline, randomly initialised tiny models with their own tokenizer and processor.

Everything is built from transformers' own classes (vision tower, multimodal rope, processor),
so a tiny model exercises exactly the code paths of the real model of its family; only the
sizes differ. Each family builds its own (`Family.build_tiny` in lite_cpt.families).
No network access at any point. The result is a directory that `from_pretrained` loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from lite_cpt.families import DEFAULT_FAMILY, get_family
from lite_cpt.families.qwen_tokenizer import CHAT_TEMPLATE, EXTRA_TOKENS, SPECIAL_TOKENS, build_tokenizer  # noqa: F401
from lite_cpt.io import atomic_directory


def build_tiny_model(cfg, corpus: list[str], family: str = DEFAULT_FAMILY):
    """(model, processor) of a random tiny model of `family` (a name in `lite_cpt.families`),
    deterministic from `cfg.seed`; the processor is the tokenizer itself for text-only families."""
    return get_family(family).build_tiny(cfg, corpus)


def save_tiny_model(model, processor, path: str | Path) -> Path:
    """Save model + processor to `path` atomically (a temp directory renamed into place)."""
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "lite_cpt_tiny.json").write_text(json.dumps({"tiny": True}))
    return Path(path)


def tiny_corpus(seed: int, family: str = DEFAULT_FAMILY) -> list[str]:
    """The tokenizer corpus: the synthetic tasks' text (the text-only tasks' too for a text model)."""
    from lite_cpt.data.synthetic import ALL_GENERATORS, tokenizer_corpus

    if get_family(family).vision:
        return tokenizer_corpus(seed=seed)
    return tokenizer_corpus(seed=seed, kinds=tuple(ALL_GENERATORS))
