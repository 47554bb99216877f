"""Mid-phase checkpoints inside the training loops: a GRPO or SFT phase that stops after some
updates and is started again resumes at its last checkpoint and ends with the weights and step
records of a phase that never stopped; a SIGTERM finishes the update, checkpoints and stops."""

from __future__ import annotations

import pytest
import torch

import lite_cpt.train.rft as rft_module
import lite_cpt.train.sft as sft_module
from lite_cpt.run.checkpoint import CheckpointPolicy, PhaseCheckpointer
from lite_cpt.run.continual import reset_adapter
from lite_cpt.io import append_jsonl, read_jsonl
from lite_cpt.train.phase import Phase
from lite_cpt.run.preemption import Preempted, preemption_handlers, request_stop, stop_deferred
from lite_cpt.recipe import arm_config as arm_entry
from lite_cpt.train.rft import train_rft
from lite_cpt.train.sft import train_sft
from tests.test_rft import KNOBS, arm_config, lora_params, tiny, vowel_examples  # noqa: F401

TIMING = {"seconds", "step_seconds"}


class Crash(Exception):
    pass


def _phase(run_dir, model) -> Phase:
    log = run_dir / "metrics.jsonl"
    return Phase(KNOBS, seed=3, index=1, on_step=lambda record: append_jsonl(log, record),
                 checkpoint=PhaseCheckpointer(run_dir, 1, CheckpointPolicy(every_updates=2, every_minutes=None), model,
                                              log))


def _train(kind: str, model, processor, run_dir):
    """One phase from the initial adapter, as the continual loop starts it."""
    reset_adapter(model, seed=0)
    torch.manual_seed(3)
    phase = _phase(run_dir, model)
    if kind == "rft":
        # KL on: the reference passes run too; lr high enough that every update moves the adapter
        return train_rft(model, processor, vowel_examples(6), arm_config(kl=True, group_size=2), phase, updates=5)
    arm = arm_entry(name="sft", lr=1e-2, batch_size=2, max_steps_per_task=5)
    return train_sft(model, processor, vowel_examples(10), arm, phase)


def _records(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run_dir / "metrics.jsonl")]


def _crash_on(monkeypatch, module, name: str, call: int) -> None:
    original, calls = getattr(module, name), [0]

    def crashing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise Crash(f"{name} #{call}")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, crashing)


# the function each loop runs once per update, and the update of the crash: the 4th, after the
# checkpoint of update 2 (and with update 3 logged, so the log is cut back on resume)
CRASH = {"rft": (rft_module, "policy_update"), "sft": (sft_module, "_accumulate")}


@pytest.mark.parametrize("kind", ["rft", "sft"])
def test_a_phase_resumed_from_its_checkpoint_ends_like_one_that_never_stopped(tiny, tmp_path, monkeypatch, kind):
    model, processor = tiny
    expected_stats = _train(kind, model, processor, tmp_path / "once")
    expected_weights = {n: p.detach().clone() for n, p in lora_params(model).items()}
    expected_records = _records(tmp_path / "once")
    assert [r["step"] for r in expected_records] == [1, 2, 3, 4, 5]

    with monkeypatch.context() as patch:
        _crash_on(patch, *CRASH[kind], call=4)
        with pytest.raises(Crash):
            _train(kind, model, processor, tmp_path / "twice")
    assert [r["step"] for r in _records(tmp_path / "twice")] == [1, 2, 3]
    restored = []
    original_restore = PhaseCheckpointer.restore
    monkeypatch.setattr(PhaseCheckpointer, "restore",
                        lambda self, *a: restored.append(loop := original_restore(self, *a)) or loop)
    stats = _train(kind, model, processor, tmp_path / "twice")
    assert restored[0]["step"] == 2  # it did resume, at the checkpoint of update 2
    assert _records(tmp_path / "twice") == expected_records  # update 3 logged once, none lost
    for name, value in lora_params(model).items():
        assert torch.equal(value, expected_weights[name]), name
    assert (stats.steps, stats.trained_tokens, stats.generated_tokens, stats.last_loss) == (
        expected_stats.steps, expected_stats.trained_tokens, expected_stats.generated_tokens, expected_stats.last_loss)


def test_sigterm_during_a_phase_finishes_the_update_checkpoints_and_stops(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    original, calls = rft_module.policy_update, [0]

    def signalled(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            request_stop("SIGTERM")  # what the handler does when the signal lands mid-update
        return original(*args, **kwargs)

    monkeypatch.setattr(rft_module, "policy_update", signalled)
    with preemption_handlers(), stop_deferred(), pytest.raises(Preempted, match="SIGTERM during task 1.*update 2"):
        _train("rft", model, processor, tmp_path)
    saved = [path.name for _, path in PhaseCheckpointer(tmp_path, 1, CheckpointPolicy(), model).saved()]
    assert saved == ["phase_1_update_2"]  # written on the signal, although every_updates is 2 here too
    assert [r["step"] for r in _records(tmp_path)] == [1, 2]
