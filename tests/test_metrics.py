import numpy as np
import pytest

from lite_cpt.results.metrics import (
    accuracy_matrix,
    average_forgetting,
    backward_transfer,
    final_accuracy,
    forward_transfer,
    general_deltas,
    seen_task_average,
    summarize,
)

# Three tasks. Rows: base, after task 1, after task 2, after task 3. Columns: tasks 1, 2, 3.
# The base row is high on task 1 (0.9) so that counting row 0 in forgetting would change it,
# and task 1 improves after task 2 (0.85 > 0.8) so that forgetting and −BWT differ.
R3 = [
    [0.90, 0.10, 0.30],
    [0.80, 0.20, 0.40],
    [0.85, 0.90, 0.50],
    [0.50, 0.70, 0.95],
]
# ACC  = (0.5 + 0.7 + 0.95) / 3                          = 2.15 / 3
# BWT  = ((0.5 − 0.8) + (0.7 − 0.9)) / 2                 = −0.25
# forgetting: task 1: max(0.8, 0.85) − 0.5 = 0.35 ; task 2: max(0.2, 0.9) − 0.7 = 0.2
#        mean = 0.275   (with the base row counted it would be (0.4 + 0.2) / 2 = 0.3)
# FWT  = ((R[1,2] − R[0,2]) + (R[2,3] − R[0,3])) / 2 = ((0.2 − 0.1) + (0.5 − 0.3)) / 2 = 0.15
# seen-task curve: after 1: 0.8 ; after 2: (0.85 + 0.9) / 2 = 0.875 ; after 3: 2.15 / 3


def test_metrics_on_hand_computed_three_task_matrix():
    assert final_accuracy(R3) == pytest.approx(2.15 / 3)
    assert backward_transfer(R3) == pytest.approx(-0.25)
    assert average_forgetting(R3) == pytest.approx(0.275)
    assert forward_transfer(R3) == pytest.approx(0.15)
    assert seen_task_average(R3) == pytest.approx([0.8, 0.875, 2.15 / 3])


def test_summarize_matches_individual_metrics_and_accepts_numpy():
    summary = summarize(np.array(R3))
    assert list(summary) == ["ACC", "BWT", "forgetting", "FWT"]
    assert summary == pytest.approx({"ACC": 2.15 / 3, "BWT": -0.25, "forgetting": 0.275, "FWT": 0.15})
    assert all(isinstance(value, float) for value in summary.values())


def test_no_forgetting_when_every_task_is_kept():
    # Each task learnt to 1.0 and kept there: BWT = 0 and forgetting = 0.
    kept = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
    assert backward_transfer(kept) == 0.0
    assert average_forgetting(kept) == 0.0
    assert forward_transfer(kept) == 0.0
    assert final_accuracy(kept) == 1.0


def test_single_task_has_no_transfer_metrics():
    single = [[0.3], [0.7]]
    assert final_accuracy(single) == pytest.approx(0.7)
    assert backward_transfer(single) is None
    assert average_forgetting(single) is None
    assert forward_transfer(single) is None
    assert seen_task_average(single) == pytest.approx([0.7])
    assert summarize(single) == {"ACC": pytest.approx(0.7), "BWT": None, "forgetting": None, "FWT": None}


def test_partial_matrix_gives_curve_so_far_and_null_summary():
    partial = R3[:3]  # base, after task 1, after task 2 of three tasks
    assert seen_task_average(partial) == pytest.approx([0.8, 0.875])
    assert summarize(partial) == {"ACC": None, "BWT": None, "forgetting": None, "FWT": None}
    with pytest.raises(ValueError, match="complete matrix"):
        final_accuracy(partial)
    with pytest.raises(ValueError, match="complete matrix"):
        backward_transfer(partial)


def test_run_with_no_rows_yet():
    empty = np.zeros((0, 3))
    assert seen_task_average(empty) == []
    assert summarize(empty)["ACC"] is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (R3 + [[0.1, 0.2, 0.3]], "at most T \\+ 1 = 4"),
        ([0.1, 0.2, 0.3], "must be 2-D"),
        ([[0.1, 0.2], [0.3]], "rectangular"),
        ([[], []], "at least one task column"),
        ([[0.1, float("nan")], [0.2, 0.3], [0.4, 0.5]], "NaN"),
    ],
)
def test_bad_matrix_shape_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        accuracy_matrix(bad, complete=False)
    with pytest.raises(ValueError, match=message):
        summarize(bad)


def test_a_missing_score_is_a_clear_error():
    # A score never written (None, e.g. read from a JSON null) reads as NaN and is refused by name.
    with pytest.raises(ValueError, match="^accuracy matrix contains NaN or infinite scores$"):
        accuracy_matrix([[0.1, None], [0.2, 0.3], [0.4, 0.5]])
    with pytest.raises(ValueError, match="^accuracy matrix contains NaN or infinite scores$"):
        summarize([[0.1, 0.2], [None, 0.3]])


def test_a_partial_matrix_given_to_a_whole_run_metric_names_the_rows_it_needs():
    partial = R3[:2]
    for metric in (final_accuracy, backward_transfer, average_forgetting, forward_transfer):
        with pytest.raises(ValueError, match=r"has 2 rows for 3 tasks; .* complete matrix of T \+ 1 = 4 rows"):
            metric(partial)
    with pytest.raises(ValueError, match=r"expected at most T \+ 1 = 4 \(row 0 = base model, row i = after"):
        accuracy_matrix(R3 + [[0.1, 0.2, 0.3]])


def test_general_deltas_use_last_row_against_base():
    G = [[0.50, 0.40], [0.60, 0.30], [0.55, 0.45]]
    assert general_deltas(G) == pytest.approx([0.05, 0.05])
    assert general_deltas([[0.5, 0.4]]) == [None, None]  # only the base row so far
    assert general_deltas([]) == []
    assert general_deltas([[], []]) == []
    with pytest.raises(ValueError, match="rectangular"):
        general_deltas([[0.5, 0.4], [0.6]])


def test_general_deltas_edge_cases():
    # Two rows (base + one task) already give a change; a missing score is a clear error.
    assert general_deltas([[0.5, 0.25], [0.75, 0.0]]) == [0.25, -0.25]
    assert general_deltas([[1, 0], [0, 1]]) == [-1.0, 1.0]
    with pytest.raises(ValueError, match="^general-benchmark matrix contains NaN or infinite scores$"):
        general_deltas([[0.5], [None]])
    with pytest.raises(ValueError, match="^general-benchmark matrix contains NaN or infinite scores$"):
        general_deltas([[0.5], [float("inf")]])
    with pytest.raises(ValueError, match="must be 2-D"):
        general_deltas([0.5, 0.6])


def test_forgetting_is_negative_when_every_earlier_task_ends_above_its_best():
    # Forgetting is not clamped at 0: later training that improves every earlier task shows up.
    improving = [[0.0, 0.0, 0.0], [0.4, 0.1, 0.0], [0.5, 0.6, 0.1], [0.7, 0.9, 0.8]]
    assert average_forgetting(improving) == pytest.approx(((0.5 - 0.7) + (0.6 - 0.9)) / 2)
    assert backward_transfer(improving) == pytest.approx(((0.7 - 0.4) + (0.9 - 0.6)) / 2)


def test_joint_arm_reports_acc_only_and_nothing_before_it_finishes():
    from lite_cpt.results.report import ArmResult

    finished = ArmResult(name="multitask_sft", tasks=["a", "b", "c"], R=np.array([[0.1, 0.2, 0.3], [0.5, 0.7, 0.9]]),
                         cost={}, joint=True)
    assert finished.summary == {"ACC": pytest.approx(0.7), "BWT": None, "forgetting": None, "FWT": None}
    assert finished.tasks_done == 3
    started = ArmResult(name="multitask_sft", tasks=["a", "b", "c"], R=np.array([[0.1, 0.2, 0.3]]), cost={},
                        joint=True)
    assert started.summary["ACC"] is None and started.tasks_done == 0
    # The same two rows read as a sequential arm would be an unfinished run of three tasks.
    sequential = ArmResult(name="sft", tasks=["a", "b", "c"], R=finished.R, cost={})
    assert sequential.summary["ACC"] is None and sequential.tasks_done == 1
