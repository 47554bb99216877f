"""A full disk (ENOSPC), an exceeded quota (EDQUOT) or a read-only file system (EROFS) at each
write site of a run: one message naming the path, what is intact and the fix; exit status 1
through the command line; nothing half-written left behind."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from typer.testing import CliRunner

import lite_cpt.io as io_module
from lite_cpt.run.checkpoint import CheckpointPolicy, PhaseCheckpointer
from lite_cpt.io import DiskFull, append_jsonl, read_jsonl
from lite_cpt.models import save_adapter
from tests.test_checkpoint import Adapted
from tests.test_report import make_run

FIX = "Free disk space"


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fsync_fails_for(monkeypatch, suffix: str, code: int = errno.ENOSPC) -> None:
    """fsync raises `code` for files whose name contains `suffix` (an atomic write's temporary)."""
    real = os.fsync

    def fsync(fd):
        if suffix in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(io_module.os, "fsync", fsync)


def _hidden_leftovers(directory):
    return sorted(p.name for p in directory.rglob(".*"))


def test_a_log_append_on_a_full_disk_is_cut_back_to_its_last_whole_line(tmp_path, monkeypatch):
    log = tmp_path / "arm" / "metrics.jsonl"
    append_jsonl(log, {"event": "step", "step": 1})
    before = log.read_bytes()
    real_write, calls = os.write, []

    def write_half_then_fail(fd, data):  # the disk fills up in the middle of the line
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io_module.os, "write", write_half_then_fail)
    with pytest.raises(DiskFull) as raised:
        append_jsonl(log, {"event": "step", "step": 2, "loss": 0.5})
    message = str(raised.value)
    assert f"could not write {log}: no space left on the device" in message
    assert "holds every record before this one" in message and FIX in message
    assert log.read_bytes() == before and len(calls) == 2
    monkeypatch.undo()
    append_jsonl(log, {"event": "step", "step": 2})  # space freed: appends continue cleanly
    assert [r["step"] for r in read_jsonl(log)] == [1, 2]


def test_resume_truncation_on_a_full_disk_leaves_the_log_as_it_was(tmp_path, monkeypatch):
    """The restore of a mid-phase checkpoint cuts metrics.jsonl back (truncate_jsonl)."""
    torch.manual_seed(0)
    model = Adapted()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    arm = tmp_path / "arm"
    log = arm / "metrics.jsonl"
    checkpointer = PhaseCheckpointer(arm, 1, CheckpointPolicy(every_updates=1), model, log)
    append_jsonl(log, {"event": "step", "step": 1})
    checkpointer.save(1, optimizer, {"step": 1})
    append_jsonl(log, {"event": "step", "step": 2})  # logged after the checkpoint: cut on resume
    before = log.read_bytes()
    _fsync_fails_for(monkeypatch, "metrics.jsonl", errno.EDQUOT)
    resumed = PhaseCheckpointer(arm, 1, CheckpointPolicy(every_updates=1), model, log)
    with pytest.raises(DiskFull, match="disk quota exceeded") as raised:
        resumed.restore(optimizer)
    assert f"could not write {log}" in str(raised.value) and "is as it was before" in str(raised.value)
    assert log.read_bytes() == before and _hidden_leftovers(arm) == []


class _SavesHalfAnAdapter:
    """A PeftModel stand-in whose save_pretrained fails like safetensors on a full disk."""

    active_adapter = "default"

    def save_pretrained(self, directory, selected_adapters):
        from safetensors import SafetensorError

        (directory / "adapter_model.safetensors").write_bytes(b"\0" * 100)
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')


def test_a_task_adapter_save_on_a_full_disk_names_it_and_keeps_the_earlier_ones(tmp_path):
    arm = tmp_path / "arm"
    (arm / "task_1").mkdir(parents=True)
    (arm / "task_1" / "adapter_model.safetensors").write_bytes(b"earlier")
    with pytest.raises(DiskFull) as raised:
        save_adapter(_SavesHalfAnAdapter(), arm / "task_2")
    message = str(raised.value)
    assert f"could not write {arm / 'task_2'}: no space left on the device" in message
    assert "the adapters of earlier tasks and the results so far are intact" in message and FIX in message
    assert sorted(p.name for p in arm.iterdir()) == ["task_1"]  # no task_2, no temporary directory
    assert (arm / "task_1" / "adapter_model.safetensors").read_bytes() == b"earlier"


def test_a_file_written_inside_an_adapter_save_is_named_by_the_adapter_directory(tmp_path, monkeypatch):
    """The arm's state (phase statistics) goes into the sealed directory: the message names
    task_1, not the temporary copy the file was in, which is gone."""
    import json

    from lite_cpt.io import atomic_write_json

    class SavesNothing:
        active_adapter = "default"

        def save_pretrained(self, directory, selected_adapters):
            (directory / "adapter_model.safetensors").write_bytes(b"\0" * 10)

    _fsync_fails_for(monkeypatch, "phase_stats.json")
    arm = tmp_path / "arm"
    with pytest.raises(DiskFull) as raised:
        save_adapter(SavesNothing(), arm / "task_1", extra=lambda d: atomic_write_json(d / "phase_stats.json", {}))
    assert str(raised.value).startswith(f"could not write {arm / 'task_1'}: no space left on the device;")
    assert list(arm.iterdir()) == []  # nothing left: no task_1, no temporary directory


def test_a_report_png_on_a_read_only_disk_is_one_line_and_exit_status_1(tmp_path, monkeypatch):
    from lite_cpt.cli import app

    run = make_run(tmp_path)
    _fsync_fails_for(monkeypatch, ".png", errno.EROFS)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 1, result.output
    text = "".join(result.output.split())  # the console wraps long lines
    assert "".join(f"could not write {run / 'heatmap_sft.png'}: the file system is read-only".split()) in text
    assert "isasitwasbefore" in text and "Traceback" not in text
    assert not (run / "heatmap_sft.png").exists() and _hidden_leftovers(run) == []


def test_other_os_errors_are_not_mistaken_for_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(io_module.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as raised:
        io_module.atomic_write_text(tmp_path / "x.json", "{}")
    assert not isinstance(raised.value, DiskFull) and raised.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []
