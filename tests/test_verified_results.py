"""Finished results are verified before they are trusted: result files against the checksums
recorded when they were written, matrix.json and general.json against the per-item predictions,
task adapters against their manifests (the first damaged one, not only the last)."""

from __future__ import annotations

import json
import logging

from typer.testing import CliRunner

from lite_cpt.run import continual
from lite_cpt.run import rows as rows_module
from lite_cpt.run.artefacts import CHECKSUMS, artefact_problem, write_checked_json
from lite_cpt.results.consistency import damaged_prediction_rows
from lite_cpt.run.integrity import write_manifest
from lite_cpt.results.predictions import BASE_PREDICTIONS, row_predictions_path, write_predictions
from lite_cpt.results.report import write_report

TASKS, BENCHES = ["clevr", "geometry"], ["pope"]
# per-item scores of rows 0..2 (base, after task 1, after task 2): 4 items per set
ITEMS = [
    {"clevr": [0, 0, 1, 0], "geometry": [1, 0, 0, 0], "pope": [1, 1, 0, 0]},
    {"clevr": [1, 1, 1, 0], "geometry": [1, 0, 0, 0], "pope": [1, 1, 0, 1]},
    {"clevr": [1, 0, 1, 0], "geometry": [1, 1, 1, 1], "pope": [1, 1, 1, 1]},
]


def _items(row: dict) -> dict:
    return {name: [{"id": f"{name}/{i}", "answer": str(s), "score": float(s)} for i, s in enumerate(scores)]
            for name, scores in row.items()}


def finished_run(tmp_path):
    """A run directory as `lite-cpt run` leaves one finished sft arm: predictions per row, then
    general.json and matrix.json with the rows the predictions give, all with checksums."""
    run = tmp_path / "run"
    seed_dir, arm = run / "seed_0", run / "seed_0" / "sft"
    (run / "recipe.yaml").parent.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: run\nseed: 0\narms:\n  - name: sft\n")
    write_predictions(seed_dir / BASE_PREDICTIONS, _items(ITEMS[0]))
    for row in (1, 2):
        write_predictions(row_predictions_path(arm, row), _items(ITEMS[row]))
    rows = [[sum(r[t]) / 4 for t in TASKS] for r in ITEMS]
    general = [[sum(r[b]) / 4 for b in BENCHES] for r in ITEMS]
    rows_module.RowFiles(arm / "matrix.json", arm / "general.json", TASKS, BENCHES, False, False).write(rows, general)
    return run, arm


def _edit_one_digit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


def test_one_changed_digit_is_named_with_what_was_recorded_and_a_kill_between_writes_is_not(tmp_path):
    path = tmp_path / "matrix.json"
    write_checked_json(path, {"R": [[0.5, 0.25]]})
    assert artefact_problem(path) is None
    _edit_one_digit(path, "0.25", "0.35")
    problem = artefact_problem(path)
    assert problem.startswith(f"{path} was changed after it was written:") and CHECKSUMS in problem
    # killed after the new entry was recorded, before the file was replaced: the old file is intact
    write_checked_json(path, {"R": [[0.5, 0.25]]})
    entries = json.loads((tmp_path / CHECKSUMS).read_text())["files"]
    entries["matrix.json"] = {"size": 1, "sha256": "0" * 64, "previous": {k: entries["matrix.json"][k]
                                                                          for k in ("size", "sha256")}}
    (tmp_path / CHECKSUMS).write_text(json.dumps({"format": 1, "files": entries}))
    assert artefact_problem(path) is None


def test_report_flags_a_matrix_score_its_predictions_do_not_give(tmp_path, caplog):
    run, arm = finished_run(tmp_path)
    assert "Flagged" not in write_report(run).read_text()
    _edit_one_digit(arm / "matrix.json", "0.75", "0.65")  # row 1, clevr
    with caplog.at_level(logging.WARNING):
        report = write_report(run).read_text()
    assert "## Flagged results" in report
    assert f"{arm / 'matrix.json'} was changed after it was written" in report
    assert (f"{arm / 'matrix.json'} row 1, task clevr: 0.6500 there, but 0.7500 from the 4 predictions in "
            f"{row_predictions_path(arm, 1)}") in report
    assert "row 1, task clevr" in caplog.text


def test_compare_flags_it_without_checksums_too(tmp_path):
    """A run written before checksums were kept: the predictions still catch the edit."""
    from lite_cpt.cli import app

    run, arm = finished_run(tmp_path)
    (arm / CHECKSUMS).unlink()
    _edit_one_digit(arm / "general.json", "0.75", "0.85")  # row 1, pope
    result = CliRunner().invoke(app, ["compare", str(run), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## Flagged results" in text
    assert f"{arm / 'general.json'} row 1, benchmark pope: 0.8500 there, but 0.7500 from the 4 predictions" in text
    assert "was changed after it was written" not in text


def test_a_damaged_predictions_file_is_a_row_to_evaluate_again(tmp_path, caplog):
    run, arm = finished_run(tmp_path)
    assert damaged_prediction_rows(arm, 3) == []
    path = row_predictions_path(arm, 2)
    path.write_bytes(path.read_bytes()[:10])
    with caplog.at_level(logging.WARNING):
        assert damaged_prediction_rows(arm, 3) == [2]
    assert f"{path} was truncated after it was written" in caplog.text and "row 2 is evaluated again" in caplog.text


def test_a_damaged_first_adapter_of_a_finished_arm_is_found_behind_intact_later_ones(tmp_path, caplog):
    arm = tmp_path / "sft"
    for t in (1, 2, 3):
        (arm / f"task_{t}").mkdir(parents=True)
        (arm / f"task_{t}" / "adapter_model.safetensors").write_bytes(bytes([t]) * 64)
        write_manifest(arm / f"task_{t}")
    assert continual.last_intact_task(arm, 3) == 3
    (arm / "task_1" / "adapter_model.safetensors").write_bytes(b"\x01" * 32)
    with caplog.at_level(logging.WARNING):
        assert continual.last_intact_task(arm, 3) == 0
    assert f"{arm / 'task_1' / 'adapter_model.safetensors'} is truncated: 32 bytes, 64 recorded" in caplog.text


def test_a_phase_that_went_flat_is_named_in_the_log_and_flagged_in_the_report(tmp_path, caplog):
    from lite_cpt.io import append_jsonl
    from lite_cpt.train.numerics import flat_phase_note

    run, arm = finished_run(tmp_path)
    steps = [{"event": "step", "task_index": 1, "step": s, "loss": 6.240275859832764} for s in (1, 2, 3)]
    with caplog.at_level(logging.WARNING):
        note = flat_phase_note([*steps, {"event": "step", "task_index": 2, "loss": 1.0}], 1, "sft · clevr")
    assert note == {"degenerate": "the loss stayed at 6.24 over all 3 updates"}
    assert "sft · clevr: training went flat: the loss stayed at 6.24 over all 3 updates" in caplog.text
    for record in [*steps, {"event": "task_end", "task_index": 1, "task": "clevr", **note}]:
        append_jsonl(arm / "metrics.jsonl", record)
    report = write_report(run).read_text()
    assert "## Flagged results" in report
    assert f"{arm}: task 1 (clevr) went flat in training: the loss stayed at 6.24 over all 3 updates" in report


def test_kills_between_the_entry_and_the_file_never_make_the_file_look_damaged(tmp_path, monkeypatch):
    import lite_cpt.run.artefacts as artefacts

    path = tmp_path / "matrix.json"
    write_checked_json(path, {"R": [[0.5]]})
    kept = path.read_bytes()

    def killed(*_args):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(artefacts, "atomic_write_bytes", killed)
    for rows in ([[0.5], [0.75]], [[0.5], [0.75], [0.25]]):  # two attempts in a row, both killed
        try:
            write_checked_json(path, {"R": rows})
        except KeyboardInterrupt:
            pass
        assert path.read_bytes() == kept and artefact_problem(path) is None


def test_an_arm_evaluated_with_the_chain_of_thought_prompt_is_checked_against_that_base_row(tmp_path):
    """Row 0 of an arm evaluated with the CoT prompt comes from the seed's CoT base files: its
    scores are compared with those predictions, not with the direct-answer ones."""
    from lite_cpt.results.consistency import unit_problems
    from lite_cpt.run.eval_prompt import base_files

    run, arm = finished_run(tmp_path)
    cot_items = {name: [0] * 4 for name in ITEMS[0]}  # the CoT base answers nothing right
    write_predictions(arm.parent / base_files(True)[1], _items(cot_items))
    rows = [[0.0, 0.0]] + [[sum(r[t]) / 4 for t in TASKS] for r in ITEMS[1:]]
    general = [[0.0]] + [[sum(r[b]) / 4 for b in BENCHES] for r in ITEMS[1:]]
    rows_module.RowFiles(arm / "matrix.json", arm / "general.json", TASKS, BENCHES, False, True).write(rows, general)
    assert unit_problems(arm, TASKS, rows, BENCHES, general) == []
    # the same rows read as a direct-answer arm disagree with the direct base predictions
    rows_module.RowFiles(arm / "matrix.json", arm / "general.json", TASKS, BENCHES, False, False).write(rows, general)
    assert any("row 0, task clevr" in p for p in unit_problems(arm, TASKS, rows, BENCHES, general))
