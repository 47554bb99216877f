"""95 % intervals for run results: a t-interval across seeds, a bootstrap over test items.

Pure functions over numbers; `lite_cpt.results.runs` decides which one a metric gets.

* Across seeds (n >= 2 values x_1..x_n): mean ± t_{1−α/2, n−1} · s / √n, with s the sample
  standard deviation (ddof = 1) — the Student t-interval of `scipy.stats.t`. A paired difference
  between two arms is the t-interval of the per-seed differences d_k = x_k(a) − x_k(b), because
  both arms share each seed's data and test items.
* Within one seed: a percentile bootstrap over test items (`scipy.stats.bootstrap`). Each task
  (and benchmark) column is resampled on its own, with the same item indices for every row of the
  matrix (every row scored the same items), and the metric is recomputed from the resampled
  matrix. A paired difference resamples both arms' items with the same indices. A benchmark's
  own figures (F1, precision, ... per category) are recomputed from each resample of its items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval; `low`/`high` are None when none can be computed."""

    value: float
    low: float | None
    high: float | None

    @property
    def excludes_zero(self) -> bool | None:
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of `values` ± t_{(1+confidence)/2, n−1} · s/√n; no interval for fewer than 2 values."""
    from scipy import stats

    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"t_interval needs a non-empty list of numbers, got shape {array.shape}")
    mean = float(array.mean())
    if array.size < 2:
        return Interval(mean, None, None)
    sem = float(array.std(ddof=1)) / np.sqrt(array.size)
    if sem == 0.0:  # every seed gave the same value: scipy would return NaN bounds
        return Interval(mean, mean, mean)
    low, high = stats.t.interval(confidence, array.size - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high))


def paired_t_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """t-interval of the paired differences a_k − b_k (same seeds, in the same order)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same length, got {a.size} and {b.size}")
    return t_interval(a - b, confidence)


def bootstrap_interval(columns: Sequence[np.ndarray], statistic: Callable[[np.ndarray], float],
                       **options) -> Interval:
    """`bootstrap_intervals` of a single statistic."""
    return bootstrap_intervals(columns, [statistic], **options)[0]


def bootstrap_intervals(
    columns: Sequence[np.ndarray],
    statistics: Sequence[Callable[[np.ndarray], float]],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> list[Interval]:
    """Percentile bootstrap of each statistic over the items of each column (one shared resample).

    `columns[j]` is an array (stages, n_j): the per-item scores of column j (a task or a
    benchmark) at every stage. A statistic takes the (stages, len(columns)) matrix of column
    means. Columns are resampled independently, the rows of a column with shared indices. The
    point value is the statistic of the full data.
    """
    from scipy import stats

    columns = [np.asarray(c, dtype=float) for c in columns]
    if not columns or any(c.ndim != 2 or c.shape[1] == 0 for c in columns):
        raise ValueError("bootstrap needs one non-empty (stages, items) array per column")
    if len({c.shape[0] for c in columns}) != 1:
        raise ValueError("every column needs the same number of stages")
    full = np.stack([c.mean(axis=1) for c in columns], axis=1)
    values = [float(statistic(full)) for statistic in statistics]

    def resampled(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        # indices[j]: (batch, n_j) resampled item positions of column j -> means (stages, batch, T)
        means = np.stack([c[:, idx.astype(int)].mean(axis=-1) for c, idx in zip(columns, indices)], axis=-1)
        out = [[statistic(means[:, b, :]) for statistic in statistics] for b in range(means.shape[1])]
        return np.asarray(out, dtype=float).T  # (statistics, batch)

    result = stats.bootstrap(
        tuple(np.arange(c.shape[1]) for c in columns),
        resampled,
        paired=False,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    lows, highs = np.atleast_1d(result.confidence_interval.low), np.atleast_1d(result.confidence_interval.high)
    return [Interval(value, float(low), float(high)) for value, low, high in zip(values, lows, highs)]


def bootstrap_figures(
    items: int,
    statistic: Callable[[np.ndarray], Sequence[float | None]],
    values: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> list[Interval]:
    """Percentile bootstrap of figures that are not means of per-item scores (a benchmark's F1,
    precision, ...): `statistic(indices)` recomputes every figure from the items at `indices`.

    `n_resamples` draws of `items` indices with replacement (seeded); figure k's interval is the
    (1 ± confidence)/2 percentiles of its resampled values. A resample may leave a figure
    undefined (None: e.g. a category none of the drawn items has); such draws are skipped for
    that figure, and with fewer than half defined it gets no interval. `values`: the full data's.
    """
    if items <= 0:
        raise ValueError("bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    draws = np.full((n_resamples, len(values)), np.nan)
    for b in range(n_resamples):
        resampled = statistic(rng.integers(0, items, items))
        draws[b] = [np.nan if v is None else float(v) for v in resampled]
    tail = (1.0 - confidence) / 2 * 100
    intervals = []
    for k, value in enumerate(values):
        defined = draws[:, k][np.isfinite(draws[:, k])]
        if defined.size < n_resamples / 2:
            intervals.append(Interval(float(value), None, None))
            continue
        low, high = np.percentile(defined, [tail, 100 - tail])
        intervals.append(Interval(float(value), float(low), float(high)))
    return intervals
