"""Mid-phase checkpoints: a round trip restores weights, optimizer, RNGs and the log length;
a damaged newest checkpoint falls back to the one before; a failed save keeps the last good one."""

from __future__ import annotations

import errno
import json
import random
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lite_cpt.run.checkpoint import CheckpointPolicy, PhaseCheckpointer, load_lora_state, restore_phase
from lite_cpt.errors import UserError
from lite_cpt.io import append_jsonl, read_jsonl


class Adapted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lora_A = torch.nn.Parameter(torch.randn(4, 3))
        self.lora_B = torch.nn.Parameter(torch.zeros(3, 4))
        self.base = torch.nn.Parameter(torch.randn(3, 3), requires_grad=False)

    def forward(self, x):
        return x @ self.base + x @ self.lora_A.T @ self.lora_B.T


def _step(model, optimizer):
    loss = model(torch.randn(5, 3)).pow(2).mean() + model.lora_A.sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def _setup(tmp_path, keep=2):
    torch.manual_seed(0)
    model = Adapted()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ckpt = PhaseCheckpointer(tmp_path / "arm", 2, CheckpointPolicy(every_updates=1, keep=keep), model)
    return model, optimizer, ckpt


def test_round_trip_continues_exactly_like_an_uninterrupted_phase(tmp_path):
    model, optimizer, ckpt = _setup(tmp_path)
    log = tmp_path / "arm" / "metrics.jsonl"
    for step in range(1, 3):
        _step(model, optimizer)
        append_jsonl(log, {"step": step})
    ckpt.memo("rif", lambda: [0.5, 0.25])
    ckpt.save(2, optimizer, {"step": 2, "queue": [3, 1]})
    random.random(), np.random.rand()  # the checkpoint must restore these too
    expected_draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    _step(model, optimizer)
    expected = model.lora_B.detach().clone()
    append_jsonl(log, {"step": 3})

    model2, optimizer2, ckpt2 = _setup(tmp_path)
    loop = ckpt2.restore(optimizer2)
    assert loop == {"step": 2, "queue": [3, 1]}
    assert ckpt2.memo("rif", lambda: pytest.fail("memo recomputed")) == [0.5, 0.25]
    assert [r["step"] for r in read_jsonl(log)] == [1, 2]  # step 3 will be logged again
    random.random(), np.random.rand()
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected_draws
    _step(model2, optimizer2)
    assert torch.equal(model2.lora_B, expected)


@pytest.mark.parametrize("victim", ["adapter.safetensors", "state.pt", "meta.json", "manifest.json"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, victim, caplog):
    model, optimizer, ckpt = _setup(tmp_path)
    _step(model, optimizer)
    ckpt.save(1, optimizer, {"step": 1})
    _step(model, optimizer)
    newest = ckpt.save(2, optimizer, {"step": 2})
    data = (newest / victim).read_bytes()
    (newest / victim).write_bytes(data[: len(data) // 2])  # truncated
    _, optimizer2, ckpt2 = _setup(tmp_path)
    assert ckpt2.restore(optimizer2) == {"step": 1}
    assert ckpt2.damaged == [newest] and victim in caplog.text
    assert f"checkpoint {newest} is damaged (" in caplog.text  # which checkpoint, then what is wrong


def test_only_keep_checkpoints_remain_and_clear_removes_them(tmp_path):
    model, optimizer, ckpt = _setup(tmp_path)
    for update in range(1, 5):
        _step(model, optimizer)
        ckpt.save(update, optimizer, {"step": update})
    assert [u for u, _ in ckpt.saved()] == [4, 3]
    ckpt.clear()
    assert ckpt.saved() == []


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left"), (errno.EACCES, "Permission denied")])
def test_disk_full_or_permission_denied_keeps_the_previous_checkpoint(tmp_path, monkeypatch, code, words):
    model, optimizer, ckpt = _setup(tmp_path)
    _step(model, optimizer)
    good = ckpt.save(1, optimizer, {"step": 1})

    def failing_save(obj, path, *args, **kwargs):
        raise OSError(code, words)

    monkeypatch.setattr("lite_cpt.run.checkpoint.torch.save", failing_save)
    _step(model, optimizer)
    with pytest.raises(UserError, match=f"{words}.*{good.name} is intact"):
        ckpt.save(2, optimizer, {"step": 2})
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "arm" / "checkpoints").iterdir()] == [good.name]
    _, optimizer2, ckpt2 = _setup(tmp_path)
    assert ckpt2.restore(optimizer2) == {"step": 1}


def test_due_by_updates_or_minutes(tmp_path):
    now = [0.0]
    ckpt = PhaseCheckpointer(tmp_path, 1, CheckpointPolicy(every_updates=3, every_minutes=1.0), None,
                             clock=lambda: now[0])
    assert not ckpt.due(2) and ckpt.due(3)
    now[0] = 59.0
    assert not ckpt.due(1)  # a minute is 60 seconds
    now[0] = 61.0
    assert ckpt.due(1)


def test_a_fresh_checkpointer_reads_a_memo_from_the_newest_checkpoint_before_any_restore(tmp_path):
    # The offline RIF estimate is asked for before the phase's loop restores its state.
    model, optimizer, ckpt = _setup(tmp_path)
    ckpt.memo("rif_offline", lambda: {"rates": [0.5]})
    _step(model, optimizer)
    ckpt.save(1, optimizer, {"step": 1})
    _, _, fresh = _setup(tmp_path)
    assert fresh.memo("rif_offline", lambda: pytest.fail("memo recomputed")) == {"rates": [0.5]}
    assert fresh.memo("other", lambda: 7) == 7  # a key the checkpoint never held is computed


def test_meta_records_the_phase_update_and_log_length(tmp_path):
    model, optimizer, ckpt = _setup(tmp_path)
    append_jsonl(tmp_path / "arm" / "metrics.jsonl", {"step": 1})
    _step(model, optimizer)
    meta = json.loads((ckpt.save(1, optimizer, {"step": 1}) / "meta.json").read_text(encoding="utf-8"))
    assert {k: meta[k] for k in ("phase", "update", "metrics_lines")} == {"phase": 2, "update": 1, "metrics_lines": 1}
    assert abs(meta["saved_at"] - time.time()) < 60


def test_a_learning_rate_schedule_is_restored_with_its_step_and_the_resume_is_logged(tmp_path, caplog):
    model, optimizer, ckpt = _setup(tmp_path)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    for _ in range(3):
        _step(model, optimizer)
        scheduler.step()
    path = ckpt.save(3, optimizer, {"step": 3}, scheduler=scheduler)
    _, optimizer2, ckpt2 = _setup(tmp_path)
    scheduler2 = torch.optim.lr_scheduler.LambdaLR(optimizer2, lambda step: 1.0 / (1 + step))
    caplog.set_level("INFO", logger="lite_cpt.run.checkpoint")
    assert ckpt2.restore(optimizer2, scheduler2) == {"step": 3}
    assert scheduler2.last_epoch == 3 and optimizer2.param_groups[0]["lr"] == pytest.approx(0.1 / 4)
    assert f"resuming phase 2 from {path}" in caplog.text


def test_restore_phase_without_a_checkpointer_starts_the_phase_from_its_beginning(tmp_path):
    model, optimizer, ckpt = _setup(tmp_path)
    _step(model, optimizer)
    ckpt.save(1, optimizer, {"step": 1})
    assert restore_phase(SimpleNamespace(checkpoint=None), optimizer) is None
    assert restore_phase(SimpleNamespace(), optimizer) is None
    _, optimizer2, ckpt2 = _setup(tmp_path)
    assert restore_phase(SimpleNamespace(checkpoint=ckpt2), optimizer2) == {"step": 1}


def test_a_checkpoint_missing_an_adapter_tensor_names_it():
    model = Adapted()
    with pytest.raises(ValueError, match=r"^checkpoint lacks 1 adapter tensors, e\.g\. lora_B$"):
        load_lora_state(model, {"lora_A": torch.zeros(4, 3)})
