"""Mid-phase checkpoints: a phase interrupted after hours resumes at its last saved update.

A checkpoint lives in `<arm>/checkpoints/phase_<t>_update_<n>/` and holds

    adapter.safetensors   every LoRA tensor of the model (all adapters the phase uses)
    state.pt              optimizer (and scheduler) state, the training loop's own state (step,
                          example-stream position, online-filter counters, partial statistics,
                          non-finite counters), the memo of values computed once per phase
                          (offline RIF estimates), and every RNG state (python, numpy, torch,
                          CUDA)
    meta.json             phase, update, metrics.jsonl length it corresponds to
    manifest.json         size and sha256 of each file (lite_cpt.run.integrity)

It is written into a temporary directory, fsynced and renamed (`sealed_directory`); older
checkpoints of the phase are removed only once the new one is complete (`keep` are kept,
so that a checkpoint found corrupted on resume falls back to the one before). The checkpoints
of a phase are removed when its task adapter is saved.

Saving consumes no randomness and changes no training state, so a run that checkpoints (and
resumes) ends with the numbers of one that never stopped.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from lite_cpt.errors import UserError
from lite_cpt.run.integrity import remove_stale_temporaries, sealed_directory, verify_directory
from lite_cpt.io import disk_errno, read_jsonl, truncate_jsonl

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"


# ---------------------------------------------------------------------------------------------
# RNG and adapter state


def rng_state() -> dict:
    """Every global RNG a phase may draw from (CUDA only where present)."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lora_state(model) -> dict[str, torch.Tensor]:
    """Every LoRA tensor of the model, by parameter name (trainable and frozen adapters)."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if "lora_" in name}


def load_lora_state(model, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name in params if "lora_" in name and name not in tensors]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} adapter tensors, e.g. {missing[0]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


# ---------------------------------------------------------------------------------------------
# Policy and the per-phase checkpointer


@dataclass
class CheckpointPolicy:
    every_updates: int | None = 50
    every_minutes: float | None = 30.0
    keep: int = 2


def _save_error(path: Path, error: Exception, previous: Path | None) -> UserError:
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint was touched"
    return UserError(
        f"could not write the checkpoint {path}: {getattr(error, 'strerror', None) or error}; {kept}. Free disk space "
        f"or fix the permissions of {path.parent} (or set output_dir to another disk), then run "
        "the same command again"
    )


class PhaseCheckpointer:
    """Saves and restores the mid-phase state of one phase of one arm."""

    def __init__(self, arm_dir: Path, phase_index: int, policy: CheckpointPolicy, model,
                 metrics_path: Path | None = None, clock: Callable[[], float] = time.monotonic):
        self.directory = Path(arm_dir) / CHECKPOINTS_DIR
        self.phase_index = phase_index
        self.policy = policy
        self.model = model
        self.metrics_path = metrics_path or Path(arm_dir) / "metrics.jsonl"
        self.clock = clock
        self.memo_values: dict[str, Any] = {}
        self.restored_update: int | None = None
        self._last_save = clock()
        self._last_update = 0
        self._intact: tuple | None = None
        self.damaged: list[Path] = []

    # -- naming --------------------------------------------------------------------------------
    def _name(self, update: int) -> str:
        return f"phase_{self.phase_index}_update_{update}"

    def saved(self) -> list[tuple[int, Path]]:
        """(update, path) of this phase's checkpoints, newest first."""
        if not self.directory.is_dir():
            return []
        pattern = re.compile(rf"phase_{self.phase_index}_update_(\d+)")
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := pattern.fullmatch(p.name))]
        return sorted(found, reverse=True)

    # -- memo: values computed once per phase (e.g. the offline RIF estimate) -------------------
    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per phase: a resumed phase takes the value from its checkpoint
        (e.g. the offline RIF estimate, made with the adapter as it was before the task)."""
        if key not in self.memo_values and (found := self.latest_intact()) is not None:
            saved = torch.load(found[1] / "state.pt", map_location="cpu", weights_only=True)["memo"]
            self.memo_values.update(saved)
        if key not in self.memo_values:
            self.memo_values[key] = compute()
        return self.memo_values[key]

    # -- saving --------------------------------------------------------------------------------
    def due(self, update: int) -> bool:
        every, minutes = self.policy.every_updates, self.policy.every_minutes
        if every and update - self._last_update >= every:
            return True
        return bool(minutes) and self.clock() - self._last_save >= minutes * 60

    def save(self, update: int, optimizer, loop_state: dict, scheduler=None) -> Path:
        """Write the checkpoint after `update` policy updates (the step records up to it are
        already in metrics.jsonl)."""
        from safetensors.torch import save_file

        path = self.directory / self._name(update)
        previous = self.saved()[0][1] if self.saved() else None
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "loop": loop_state,
            "memo": self.memo_values,
            "rng": rng_state(),
        }
        meta = {"phase": self.phase_index, "update": update, "metrics_lines": len(read_jsonl(self.metrics_path)),
                "saved_at": time.time()}
        try:
            with sealed_directory(path) as tmp:
                save_file(lora_state(self.model), str(tmp / "adapter.safetensors"))
                torch.save(state, tmp / "state.pt")
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        except Exception as error:  # safetensors reports a full disk as its own error type
            if not isinstance(error, OSError) and disk_errno(error) is None:
                raise
            raise _save_error(path, error, previous) from None
        self._last_save, self._last_update = self.clock(), update
        self._intact = (update, path)
        for _, old in self.saved()[self.policy.keep:]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    # -- restoring -----------------------------------------------------------------------------
    def latest_intact(self) -> tuple[int, Path] | None:
        """(update, path) of the newest checkpoint of the phase that verifies against its
        manifest; each damaged one is named in the log and skipped for the one before."""
        if self._intact is None:
            remove_stale_temporaries(self.directory)
            self._intact = ()
            for update, path in self.saved():
                problems = verify_directory(path)
                if not problems:
                    self._intact = (update, path)
                    break
                log.warning("checkpoint %s is damaged (%s); falling back to an earlier one", path,
                            "; ".join(problems))
                self.damaged.append(path)
        return self._intact or None

    def restore(self, optimizer, scheduler=None) -> dict | None:
        """Load the newest intact checkpoint of the phase into the model, optimizer and RNGs;
        return the loop state (None: no usable checkpoint, start the phase from its beginning).

        metrics.jsonl is cut back to the records the checkpoint had seen, so no step record is
        duplicated when the updates after it are redone."""
        from safetensors.torch import load_file

        found = self.latest_intact()
        if found is None:
            return None
        update, path = found
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        load_lora_state(self.model, load_file(str(path / "adapter.safetensors")))
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.memo_values = state["memo"]
        truncate_jsonl(self.metrics_path, keep=meta["metrics_lines"])
        self.restored_update = self._last_update = update
        self._last_save = self.clock()
        log.info("resuming phase %d from %s", self.phase_index, path)
        return state["loop"]

    def clear(self) -> None:
        """Remove the phase's checkpoints (its task adapter is saved: they are superseded)."""
        for _, path in self.saved():
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# What the training loops call


def restore_phase(phase, optimizer) -> dict | None:
    """The loop state of the phase's newest intact checkpoint (model, optimizer and RNGs are
    restored in place), or None to start the phase from its beginning."""
    checkpointer = getattr(phase, "checkpoint", None)
    return checkpointer.restore(optimizer) if checkpointer is not None else None


def end_of_update(phase, update: int, optimizer, capture: Callable[[], dict]) -> None:
    """After update `update` is logged: checkpoint when one is due or a stop was requested
    (SIGTERM / SIGINT), then stop with `Preempted` if it was."""
    from lite_cpt.run.preemption import Preempted, requested_by, stop_requested

    checkpointer = getattr(phase, "checkpoint", None)
    stopping = stop_requested()
    if checkpointer is not None and (stopping or checkpointer.due(update)):
        checkpointer.save(update, optimizer, capture())
    if stopping:
        raise Preempted(f"{requested_by()} during task {phase.index} ({phase.name}), after update {update}")


def stream_state(rng: random.Random, queue: list, examples: list) -> dict:
    """A seeded example stream's position: its RNG and the examples still queued, by index."""
    index = {id(e): i for i, e in enumerate(examples)}
    return {"rng": rng.getstate(), "queue": [index[id(e)] for e in queue]}


def load_stream_state(state: dict, rng: random.Random, examples: list) -> list:
    """Restore the RNG in place and return the queued examples."""
    version, internal, gauss = state["rng"]
    rng.setstate((version, tuple(internal), gauss))
    return [examples[i] for i in state["queue"]]
