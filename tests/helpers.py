"""Small recipes for tests: the real pipeline at a size that runs in seconds."""

from __future__ import annotations

from pathlib import Path

import yaml


def tiny_recipe(tmp_path: Path, *, arms=None, tasks=("mini_clevr", "mini_geometry", "mini_pathvqa"),
                name: str = "t", **extra) -> dict:
    raw = {
        "name": name,
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "model": {
            "name": "tiny",
            "gradient_checkpointing": False,
            "lora": {"r": 4, "alpha": 8},
            "base_training": {"samples_per_task": 24, "epochs": 1, "batch_size": 24},
        },
        "tasks": [{"name": k.removeprefix("mini_"), "type": k, "train_size": 16, "test_size": 8, "epochs": 1}
                  for k in tasks],
        "arms": arms or [{"name": "sft", "lr": 5e-3, "batch_size": 8}],
        "evaluation": {"generation": {"max_new_tokens": 3, "batch_size": 16},
                       "general": [{"name": "pope", "type": "mini_pope", "size": 8}]},
    }
    raw.update(extra)
    return raw


def write_recipe(path: Path, raw: dict) -> Path:
    path.write_text("# lite-cpt run " + path.name + "\n" + yaml.safe_dump(raw, sort_keys=False))
    return path
