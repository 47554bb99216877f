"""The tiny testbed is the same on every machine: the random build is deterministic and checked
against a stored fingerprint, the trained base of recipes/tiny.yaml ships with the package, and
the README's base row is what that base scores."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lite_cpt.errors import UserError
from lite_cpt.recipe import load_recipe
from lite_cpt.recipe_model import TinyModelConfig
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus
from lite_cpt.tiny.base import SHIPPED_BASES, SHIPPED_ROOT, ensure_tiny_base, tiny_base_key
from lite_cpt.tiny.fingerprint import (RANDOM_BUILD, check_random_build, check_shipped, directory_fingerprint,
                                       model_fingerprint)
from lite_cpt.tiny.tables import README, parse_base_row, readme_block, render_arms, replace_block

FINGERPRINT_IN_A_SUBPROCESS = """
import torch
torch.set_num_threads(1)
from lite_cpt.recipe_model import TinyModelConfig
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus
from lite_cpt.tiny.fingerprint import model_fingerprint
cfg = TinyModelConfig()
model, processor = build_tiny_model(cfg, tiny_corpus(cfg.seed))
print(model_fingerprint(model, processor.tokenizer))
"""


@pytest.fixture(scope="module")
def random_build():
    cfg = TinyModelConfig()
    return build_tiny_model(cfg, tiny_corpus(cfg.seed))


def test_the_random_build_gives_the_stored_fingerprint_on_any_thread_count_and_hash_seed(random_build):
    model, processor = random_build
    first = model_fingerprint(model, processor.tokenizer)
    cfg = TinyModelConfig()
    again = model_fingerprint(*(lambda m, p: (m, p.tokenizer))(*build_tiny_model(cfg, tiny_corpus(cfg.seed))))
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", FINGERPRINT_IN_A_SUBPROCESS], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    elsewhere = done.stdout.strip().splitlines()[-1]
    assert first == again == elsewhere == RANDOM_BUILD["qwen2_5_vl"]
    assert check_random_build("qwen2_5_vl", True, model, processor.tokenizer) is None


def test_a_build_that_differs_is_named_with_both_fingerprints_and_the_versions(random_build):
    import torch

    model, processor = random_build
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        weight[0, 0] += 1.0
    try:
        message = check_random_build("qwen2_5_vl", True, model, processor.tokenizer)
        actual = model_fingerprint(model, processor.tokenizer)
    finally:
        with torch.no_grad():
            weight[0, 0] -= 1.0
    assert RANDOM_BUILD["qwen2_5_vl"][:16] in message and actual[:16] in message
    assert "torch" in message and "transformers" in message and "tokenizers" in message
    # a shape other than the default has no stored fingerprint: nothing to compare
    assert check_random_build("qwen2_5_vl", False, model, processor.tokenizer) is None


def test_the_tiny_recipe_uses_the_shipped_base_which_matches_its_fingerprint():
    recipe = load_recipe("recipes/tiny.yaml", [])
    directory, fingerprint = SHIPPED_BASES[tiny_base_key(recipe)]
    assert ensure_tiny_base(recipe) == SHIPPED_ROOT / directory
    assert directory_fingerprint(SHIPPED_ROOT / directory) == fingerprint
    size = sum(path.stat().st_size for path in (SHIPPED_ROOT / directory).iterdir())
    assert size < 2 * 2**20
    config = json.loads((SHIPPED_ROOT / directory / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"


def test_a_damaged_shipped_base_is_refused(tmp_path):
    (directory, fingerprint), = SHIPPED_BASES.values()
    copy = shutil.copytree(SHIPPED_ROOT / directory, tmp_path / "base")
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 0x01  # the last byte of the last tensor
    (copy / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(UserError, match="damaged or was edited.*reinstall"):
        check_shipped(copy, fingerprint)


def test_readme_blocks_are_replaced_in_place_and_the_arms_table_renders():
    text = "intro\n<!-- tiny:arms -->\nold\n<!-- /tiny:arms -->\nafter\n"
    assert replace_block(text, "arms", "new") == "intro\n<!-- tiny:arms -->\nnew\n<!-- /tiny:arms -->\nafter\n"
    with pytest.raises(ValueError, match="tiny:base-row"):
        replace_block(text, "base-row", "x")
    metric = {"value": -0.0625, "ci95": [-0.1, -0.02], "per_seed": {"0": -0.06, "1": -0.065}}
    summary = {"seeds": [0, 1], "arms": {"sft": {"metrics": {
        "ACC": {"value": 0.5, "ci95": [0.4, 0.6]}, "BWT": metric, "forgetting": {"value": 0.1},
        "FWT": {"value": 0.02}, "Δ mmlu": {"value": -0.01}}}}}
    assert render_arms(summary).splitlines()[2] == ("| sft | 0.500 [0.400, 0.600] | −0.062 [−0.100, −0.020] | 0.100 "
                                                    "| +0.020 | −0.010 | −0.060 / −0.065 |")


@pytest.mark.slow
def test_the_readme_base_row_is_what_the_shipped_base_scores():
    """A fresh evaluation of row 0 (every task and benchmark of recipes/tiny.yaml) gives the
    README's table to the digit: `python -m lite_cpt.tiny.tables` writes it."""
    from lite_cpt.tiny.tables import base_row

    shown = parse_base_row(readme_block(Path(README).read_text(encoding="utf-8"), "base-row"))
    assert {name: round(score, 3) for name, score in base_row().items()} == shown
