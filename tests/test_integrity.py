"""Manifests, sealed directories and JSONL repair: what a crash or a bad disk leaves is detected."""

from __future__ import annotations

import json

import pytest

from lite_cpt.integrity import (MANIFEST, remove_stale_temporaries, sealed_directory, verify_directory,
                                write_manifest)
from lite_cpt.io import append_jsonl, read_jsonl, truncate_jsonl


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
