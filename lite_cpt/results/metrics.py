"""Continual-learning metrics: pure functions over the accuracy matrix R.

Indexing used throughout this module
------------------------------------
R has shape (T + 1, T) for T tasks trained in order.

* Rows are training stages: row 0 is the base model, row i (i = 1..T) is the model right after
  training task i.
* Columns are tasks in 0-based order: column c is the c-th task of the sequence, i.e. task number
  c + 1 in the 1-based notation of the formulas below.

So "R[i, j]" in a formula with a 1-based task index j reads the array element ``R[i][j - 1]``:
the score on task j right after training it is ``R[j][j - 1]`` (the sub-diagonal of the array).

A matrix with fewer than T + 1 rows comes from a run that has not finished every task. The
per-metric functions need the complete matrix and raise ``ValueError`` on a partial one;
`summarize` and `seen_task_average` accept partial matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MatrixLike = np.ndarray | Sequence[Sequence[float]]


def accuracy_matrix(R: MatrixLike, *, complete: bool = True) -> np.ndarray:
    """R as a float array, after checking its shape.

    A valid matrix is 2-D with T >= 1 columns, at most T + 1 rows (exactly T + 1 when
    `complete`), rectangular, and finite. A run with no evaluated row yet is a (0, T) array.
    """
    try:
        array = np.asarray(R, dtype=float)
    except (TypeError, ValueError) as exc:  # ragged rows or non-numbers
        raise ValueError(f"accuracy matrix must be a rectangular table of numbers: {exc}") from exc
    if array.ndim != 2:
        raise ValueError(f"accuracy matrix must be 2-D (rows x tasks), got shape {array.shape}")
    rows, tasks = array.shape
    if tasks < 1:
        raise ValueError(f"accuracy matrix must have at least one task column, got shape {array.shape}")
    if rows > tasks + 1:
        raise ValueError(
            f"accuracy matrix has {rows} rows for {tasks} tasks; expected at most T + 1 = {tasks + 1} "
            "(row 0 = base model, row i = after training task i)"
        )
    if complete and rows != tasks + 1:
        raise ValueError(
            f"accuracy matrix has {rows} rows for {tasks} tasks; this metric needs the complete "
            f"matrix of T + 1 = {tasks + 1} rows"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("accuracy matrix contains NaN or infinite scores")
    return array


def final_accuracy(R: MatrixLike) -> float:
    """Final average accuracy: ACC = (1/T) Σ_{j=1..T} R[T, j]  (mean of the last row)."""
    array = accuracy_matrix(R)
    return float(array[-1].mean())


def backward_transfer(R: MatrixLike) -> float | None:
    """Backward transfer: BWT = 1/(T−1) Σ_{j=1..T−1} (R[T, j] − R[j, j]).

    R[j, j] (1-based task j; array element ``R[j][j - 1]``) is the score on task j right after
    training it. Negative BWT = forgetting, positive = later tasks helped earlier ones.
    Undefined for T = 1 (no earlier task): returns None.
    """
    array = accuracy_matrix(R)
    tasks = array.shape[1]
    if tasks < 2:
        return None
    earlier = np.arange(tasks - 1)  # 0-based columns of tasks 1..T-1
    return float(np.mean(array[tasks, earlier] - array[earlier + 1, earlier]))


def average_forgetting(R: MatrixLike) -> float | None:
    """Average forgetting (Chaudhry et al., 2018).

    Forgetting_j = max_{l ∈ {1..T−1}} R[l, j] − R[T, j]   for each task j = 1..T−1,
    averaged over those T − 1 tasks. The max runs over training stages only: the base row 0 is
    excluded, so a task the base model already solved and that training never reached again does
    not count as forgotten. Rows l < j (before task j was trained) are included, as in the
    original definition. Undefined for T = 1: returns None.
    """
    array = accuracy_matrix(R)
    tasks = array.shape[1]
    if tasks < 2:
        return None
    best_before_end = array[1:tasks, : tasks - 1].max(axis=0)
    return float(np.mean(best_before_end - array[tasks, : tasks - 1]))


def forward_transfer(R: MatrixLike) -> float | None:
    """Forward transfer: FWT = 1/(T−1) Σ_{j=2..T} (R[j−1, j] − R[0, j]).

    R[j−1, j] (array element ``R[j - 1][j - 1]``, the diagonal of the array) is the score on task
    j just before training it; R[0, j] is the base model's score on it. Positive FWT = training
    earlier tasks helped a task before it was seen. Undefined for T = 1: returns None.
    """
    array = accuracy_matrix(R)
    tasks = array.shape[1]
    if tasks < 2:
        return None
    later = np.arange(1, tasks)  # 0-based columns of tasks 2..T
    return float(np.mean(array[later, later] - array[0, later]))


def seen_task_average(R: MatrixLike) -> list[float]:
    """Mean accuracy over the tasks seen so far, after each training stage (the paper-style curve).

    Entry i − 1 (for rows i = 1..n, n = rows present − 1) is mean_{j=1..i} R[i, j], the average
    over tasks 1..i after training task i. The base row 0 has no seen task and is not included.
    Accepts a partial matrix: the list has one entry per completed task.
    """
    array = accuracy_matrix(R, complete=False)
    return [float(array[i, :i].mean()) for i in range(1, array.shape[0])]


def general_deltas(G: MatrixLike) -> list[float | None]:
    """Change of each general benchmark against the base model: Δ_b = G[last, b] − G[0, b].

    G has one row per training stage (row 0 = base, as in R) and one column per benchmark; the
    last row present is used, so a partial run gives its change so far. With only the base row
    there is no change to report yet and every entry is None. An empty G (no benchmarks) gives [].
    """
    try:
        array = np.asarray(G, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"general-benchmark matrix must be a rectangular table of numbers: {exc}") from exc
    if array.size == 0:
        return []
    if array.ndim != 2:
        raise ValueError(f"general-benchmark matrix must be 2-D (rows x benchmarks), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("general-benchmark matrix contains NaN or infinite scores")
    if array.shape[0] < 2:
        return [None] * array.shape[1]
    return [float(delta) for delta in array[-1] - array[0]]


def summarize(R: MatrixLike) -> dict[str, float | None]:
    """ACC, BWT, forgetting and FWT of one arm.

    A partial matrix (fewer than T + 1 rows) gives None for all four: each is defined over the
    whole sequence, and a value over the finished prefix would not be comparable across arms.
    """
    array = accuracy_matrix(R, complete=False)
    if array.shape[0] != array.shape[1] + 1:
        return {"ACC": None, "BWT": None, "forgetting": None, "FWT": None}
    return {
        "ACC": final_accuracy(array),
        "BWT": backward_transfer(array),
        "forgetting": average_forgetting(array),
        "FWT": forward_transfer(array),
    }
