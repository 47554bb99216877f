"""Fingerprints of the tiny model, so a tiny base that differs from the published one is named.

A fingerprint is a sha256 over what decides the model's answers: every weight (name, dtype,
shape, bytes, in name order) and the tokenizer (its BPE vocabulary and merges and the added
tokens with their ids), not over file bytes, whose JSON layout changes between library versions.

Two are stored (for `model.family: qwen2_5_vl` with `model.tiny` at its defaults):
* the random build, before any training: the BPE tokenizer and the seeded initialisation. Its
  build is deterministic (tokenizers' BPE trainer breaks ties by token id and assigns the
  alphabet's ids in sorted order, with no continuing-subword prefix, so neither its thread
  count nor hash-map order matters; torch's seeded CPU initialisation does not depend on the
  thread count). `tests/test_tiny_reproducible.py` builds it under other thread counts and hash
  seeds and checks the stored value; a build that differs is named with the likely cause.
* the trained base of `recipes/tiny.yaml`, shipped with the package (`lite_cpt/tiny/bases/`):
  training on a CPU sums in an order that depends on the machine's vector units and thread
  count, so its result is shipped rather than rebuilt, and checked when it is used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lite_cpt.errors import UserError

#: The library versions that produced the stored fingerprints.
BUILT_WITH = {"torch": "2.14.1", "transformers": "5.17.0", "tokenizers": "0.23.3"}

#: sha256 of the random tiny Qwen2.5-VL (tokenizer + seeded initialisation, `model.tiny` defaults).
RANDOM_BUILD = {"qwen2_5_vl": "e1b43973ce2fdc816d6d8e2b6eaa344ab75f7c8b97a6ecbc0e3bc65dc6610dc4"}


def fingerprint(tensors: dict, tokenizer_json: str) -> str:
    """sha256 over the weights (name, dtype, shape, bytes; sorted by name) and the tokenizer's
    model (vocabulary, merges) and added tokens (id, content)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    tokenizer = json.loads(tokenizer_json)
    added = sorted((t["id"], t["content"]) for t in tokenizer.get("added_tokens", []))
    digest.update(json.dumps({"model": tokenizer["model"], "added": added}, sort_keys=True).encode())
    return digest.hexdigest()


def model_fingerprint(model, tokenizer) -> str:
    """The fingerprint of a model in memory and its (fast) tokenizer."""
    return fingerprint(dict(model.state_dict()), tokenizer.backend_tokenizer.to_str())


def directory_fingerprint(directory: Path) -> str:
    """The fingerprint of a saved model directory (model.safetensors + tokenizer.json)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    return fingerprint(load_file(directory / "model.safetensors"), (directory / "tokenizer.json").read_text("utf-8"))


def versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__}


def mismatch_message(what: str, expected: str, actual: str) -> str:
    """Why a fingerprint differs, and what to do: name both values and the versions."""
    here, then = versions(), BUILT_WITH
    differ = [f"{name} {here[name]} here, {then[name]} for the stored one"
              for name in then if here.get(name) != then[name]]
    cause = ("; ".join(differ) if differ else
             f"the same torch, transformers and tokenizers versions as the stored one "
             f"({', '.join(f'{k} {v}' for k, v in then.items())}), so the files or the build code changed")
    return (f"{what} differs from the published one: fingerprint {actual[:16]}…, expected {expected[:16]}… "
            f"(likely cause: {cause}). Scores will not match the README's tiny tables; install "
            f"torch {then['torch']}, transformers {then['transformers']} and tokenizers {then['tokenizers']} "
            f"to reproduce them.")


def check_random_build(family: str, tiny_is_default: bool, model, tokenizer) -> str | None:
    """The mismatch message when a default-shaped random build differs from the stored
    fingerprint; None when it matches or nothing is stored for it."""
    expected = RANDOM_BUILD.get(family)
    if not tiny_is_default or expected is None:
        return None
    actual = model_fingerprint(model, tokenizer)
    return None if actual == expected else mismatch_message(f"the random tiny {family} model built here",
                                                            expected, actual)


def check_shipped(directory: Path, expected: str) -> None:
    """Refuse a shipped base whose files do not give its stored fingerprint (damaged or edited:
    the files are read as they are, so no library version changes them)."""
    actual = directory_fingerprint(directory) if (Path(directory) / "model.safetensors").is_file() else "missing"
    if actual != expected:
        raise UserError(f"the tiny base shipped in {directory} is damaged or was edited: fingerprint "
                        f"{actual[:16]}…, expected {expected[:16]}…; reinstall lite-cpt (pip install -e . "
                        f"from a clean checkout) to restore it")
