"""Manifests, sealed directories and JSONL repair: what a crash or a bad disk leaves is detected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lite_cpt.run.integrity import (MANIFEST, remove_stale_temporaries, sealed_directory, verify_directory,
                                write_manifest)
from lite_cpt.io import append_jsonl, atomic_write_json, read_jsonl, truncate_jsonl


def _saved(tmp_path):
    with sealed_directory(tmp_path / "ckpt") as tmp:
        (tmp / "weights.bin").write_bytes(bytes(range(256)) * 8)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "state.json").write_text('{"step": 3}')
    return tmp_path / "ckpt"


def test_manifest_records_every_file_and_an_intact_directory_verifies(tmp_path):
    saved = _saved(tmp_path)
    manifest = json.loads((saved / MANIFEST).read_text())
    assert manifest["files"]["weights.bin"]["size"] == 2048
    assert set(manifest["files"]) == {"weights.bin", "sub/state.json"}
    assert verify_directory(saved) == []
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left


@pytest.mark.parametrize("damage, word", [
    (lambda d: (d / "weights.bin").write_bytes((d / "weights.bin").read_bytes()[:1000]), "truncated"),
    (lambda d: (d / "weights.bin").write_bytes(b"\0" * 2048), "corrupted"),
    (lambda d: (d / "sub" / "state.json").unlink(), "missing"),
    (lambda d: (d / MANIFEST).unlink(), "missing"),
    (lambda d: (d / MANIFEST).write_text("{not json"), "unreadable"),
])
def test_damage_is_detected_and_named(tmp_path, damage, word):
    saved = _saved(tmp_path)
    damage(saved)
    problems = verify_directory(saved)
    assert len(problems) == 1 and word in problems[0]


def test_a_failed_save_keeps_the_previous_directory(tmp_path):
    saved = _saved(tmp_path)
    with pytest.raises(OSError, match="No space"):
        with sealed_directory(saved) as tmp:
            (tmp / "weights.bin").write_bytes(b"partial")
            raise OSError(28, "No space left on device")
    assert verify_directory(saved) == []
    assert (saved / "weights.bin").stat().st_size == 2048
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_stale_temporaries_are_removed_and_a_directory_moved_aside_comes_back(tmp_path):
    saved = _saved(tmp_path)
    (tmp_path / ".ckpt.tmp.abc").mkdir()
    saved.rename(tmp_path / ".ckpt.old.123")  # crash between the two renames
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert verify_directory(tmp_path / "ckpt") == []


def test_write_manifest_ignores_its_own_previous_manifest(tmp_path):
    (tmp_path / "a").write_text("x")
    write_manifest(tmp_path)
    assert set(write_manifest(tmp_path)["files"]) == {"a"}


def test_half_written_jsonl_line_is_dropped_and_appends_continue_cleanly(tmp_path):
    log = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        append_jsonl(log, {"step": step})
    with open(log, "a") as handle:
        handle.write('{"step": 4, "lo')  # killed mid-write
    assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3]
    assert truncate_jsonl(log) == 1
    append_jsonl(log, {"step": 4})
    assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3, 4]
    assert truncate_jsonl(log, keep=2) == 2
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_every_damaged_file_of_a_directory_is_named(tmp_path):
    saved = _saved(tmp_path)
    (saved / "sub" / "state.json").unlink()
    (saved / "weights.bin").write_bytes(bytes(2048))  # same size, other bytes
    # In the manifest's order: a missing file does not end the check.
    assert verify_directory(saved) == [f"{saved / 'sub' / 'state.json'} is missing",
                                       f"{saved / 'weights.bin'} is corrupted: its sha256 differs from the manifest"]


def test_an_atomic_write_renames_a_temporary_of_the_same_directory(tmp_path, monkeypatch):
    """A rename is atomic only within one file system: the temporary sits beside the target."""
    renames = []
    real_replace = os.replace
    monkeypatch.setattr("lite_cpt.io.os.replace", lambda src, dst: (renames.append((src, dst)), real_replace(src, dst)))
    target = tmp_path / "run" / "matrix.json"
    atomic_write_json(target, {"R": [[0.5]]})
    [(source, destination)] = renames
    assert Path(source).parent == target.parent and Path(source).name.startswith(".matrix.json.")
    assert Path(destination) == target
    # Indented, one trailing newline: a person reads these files.
    assert target.read_text() == '{\n  "R": [\n    [\n      0.5\n    ]\n  ]\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["matrix.json"]


def test_a_log_line_torn_through_a_multibyte_character_is_dropped(tmp_path):
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"event": "step", "task": "é"})
    line = json.dumps({"event": "step", "task": "€"}, ensure_ascii=False).encode()
    with open(log, "ab") as handle:
        handle.write(line[: line.index("€".encode()) + 1])  # cut inside the euro sign's three bytes
    assert truncate_jsonl(log) == 1
    assert read_jsonl(log) == [{"event": "step", "task": "é"}]
