"""Fault injection for end-to-end tests: run `lite-cpt run` in a forked child, kill it with
SIGKILL at a chosen call of a chosen function, damage what it wrote, and compare runs.

The child is forked from the test process (which has imported torch and transformers once) and
runs the command line's `run` command as `lite-cpt run RECIPE` would, so each kill-and-resume
costs the run's own work, not a fresh interpreter's imports.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path

#: Figures the fault tests report at the end of the session (see conftest's terminal summary).
TALLY = {"kills tried": 0, "kills survived": 0, "corruptions tried": 0, "corruptions detected": 0}

#: Keys whose values are wall-clock times (they differ between any two runs).
TIMING_KEYS = {"seconds", "step_seconds", "train_seconds", "eval_seconds", "rif_seconds", "wall_seconds",
               "phase_seconds", "generated_at"}


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL the run at the `nth` call of `target` ("module.function"), before the call or
    after it returns (`after`); `half_line` makes the call write half its JSON line first."""

    name: str
    target: str
    nth: int
    after: bool = False
    half_line: bool = False


def _install(point: KillPoint) -> None:
    module_name, attr = point.target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    calls = [0]

    def killer(*args, **kwargs):
        calls[0] += 1
        if calls[0] != point.nth:
            return original(*args, **kwargs)
        if point.half_line:  # append_jsonl(path, record): a line cut short by the kill
            with open(args[0], "a", encoding="utf-8") as handle:
                line = json.dumps(args[1])
                handle.write(line[: len(line) // 2])
        elif point.after:
            original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(module, attr, killer)


def run_child(recipe_path: Path, kill: KillPoint | None = None, log_file: Path | None = None,
              setup=None, args: tuple[str, ...] = ()) -> int:
    """`lite-cpt run RECIPE [args]` in a forked child; returns its wait status. `setup()` runs
    in the child first (to inject a fault); warnings go to `log_file`."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            import torch

            torch.set_num_threads(1)
            logging.basicConfig(filename=str(log_file or os.devnull), level=logging.WARNING, force=True)
            if kill is not None:
                _install(kill)
            if setup is not None:
                setup()
            from lite_cpt.cli import app

            app(["run", str(recipe_path), *args], prog_name="lite-cpt")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def exit_code(status: int) -> int | None:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None


def finished(status: int) -> bool:
    return exit_code(status) == 0


def _strip_timing(value):
    if isinstance(value, dict):
        return {k: _strip_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip_timing(v) for v in value]
    return value


def run_fingerprint(run_dir: Path, arms: list[str]) -> dict:
    """Everything a run's numbers are: matrix and general rows (bytes), step and task records
    (without wall-clock times), every task adapter's weights, the checkpoints left (none), and
    the report's summary."""
    from lite_cpt.io import read_jsonl

    out = {}
    for arm in arms:
        arm_dir = run_dir / "seed_0" / arm
        out[f"{arm}/matrix.json"] = (arm_dir / "matrix.json").read_bytes()
        out[f"{arm}/general.json"] = (arm_dir / "general.json").read_bytes()
        out[f"{arm}/metrics"] = _strip_timing(read_jsonl(arm_dir / "metrics.jsonl"))
        for task_dir in sorted(arm_dir.glob("task_*")):
            out[f"{arm}/{task_dir.name}"] = (task_dir / "adapter_model.safetensors").read_bytes()
        checkpoints = arm_dir / "checkpoints"
        out[f"{arm}/checkpoints left"] = sorted(p.name for p in checkpoints.iterdir()) if checkpoints.exists() else []
    out["summary"] = _strip_timing(json.loads((run_dir / "summary.json").read_text()))
    return out


def differences(expected: dict, got: dict) -> list[str]:
    return [key for key in expected if expected[key] != got.get(key)]
