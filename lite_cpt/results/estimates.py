"""Metric estimates with 95 % intervals: one arm over its seeds, and paired differences of arms.

Which interval a value gets (see `lite_cpt.results.stats` for the arithmetic):
* two or more finished seeds: the mean over seeds with a Student t-interval, and each seed's value;
* one finished seed: that seed's value with a percentile bootstrap over its test items, from the
  per-item predictions saved during evaluation (no interval when they are missing);
* a difference a − b: a paired t-interval over the seeds both finished, or with one common seed a
  paired bootstrap that resamples both arms' items with the same indices (they share test items).

Metrics are functions of M = [R | G], the accuracy matrix and the general-benchmark rows side by
side (rows = training stages, columns = tasks then benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from lite_cpt.results.metrics import average_forgetting, backward_transfer, final_accuracy, forward_transfer
from lite_cpt.run.eval_prompt import base_files
from lite_cpt.results.predictions import ItemScores, load_item_scores, row_predictions_path
from lite_cpt.results.runs import ArmResult
from lite_cpt.results.stats import Interval, bootstrap_intervals, paired_t_interval, t_interval

SEQUENCE_METRICS = ("ACC", "BWT", "forgetting", "FWT")
MetricFunction = Callable[[np.ndarray], "float | None"]


def delta_name(benchmark: str) -> str:
    return f"Δ {benchmark}"


def metric_names(arms: Iterable[ArmResult]) -> list[str]:
    """ACC, BWT, forgetting, FWT, then one Δ per general benchmark (in order of appearance)."""
    benchmarks = dict.fromkeys(b for arm in arms for b in arm.benchmarks)
    return [*SEQUENCE_METRICS, *(delta_name(b) for b in benchmarks)]


def metric_function(name: str, tasks: int, benchmarks: list[str], joint: bool) -> MetricFunction:
    """The metric `name` as a function of M = [R | G]; it returns None where undefined (a partial
    matrix for the sequence metrics, BWT/forgetting/FWT of a joint arm, a missing benchmark)."""
    if name.startswith("Δ "):
        if name[2:] not in benchmarks:
            return lambda M: None
        column = tasks + benchmarks.index(name[2:])
        return lambda M: float(M[-1, column] - M[0, column]) if M.shape[0] >= 2 else None
    if joint:
        return (lambda M: float(M[-1, :tasks].mean()) if M.shape[0] == 2 else None) if name == "ACC" else (
            lambda M: None)
    sequence_metric = {"ACC": final_accuracy, "BWT": backward_transfer, "forgetting": average_forgetting,
                       "FWT": forward_transfer}[name]
    return lambda M: sequence_metric(M[:, :tasks]) if M.shape[0] == tasks + 1 else None


def stage_matrix(arm: ArmResult) -> np.ndarray:
    """M = [R | G] of one unit (the G rows present; a unit without general.json has only R)."""
    rows = arm.R.shape[0]
    G = np.asarray(arm.G, dtype=float).reshape(len(arm.G), len(arm.benchmarks))
    # general.json is written just before matrix.json, so it may hold one row more after a kill
    G = G[:rows] if G.shape[0] >= rows else np.full((rows, len(arm.benchmarks)), np.nan)
    return np.hstack([arm.R, G])


def unit_value(arm: ArmResult, metric: str) -> float | None:
    value = metric_function(metric, len(arm.tasks), arm.benchmarks, arm.joint)(stage_matrix(arm))
    return None if value is None or not np.isfinite(value) else value


def item_scores(arm: ArmResult) -> ItemScores | None:
    """Per-item scores of every row of the unit, or None when a row's predictions are missing."""
    if arm.path is None:
        return None
    rows = [arm.path.parent / base_files(arm.eval_cot)[1]]
    rows += [row_predictions_path(arm.path, index) for index in range(1, arm.R.shape[0])]
    return load_item_scores(rows, [*arm.tasks, *arm.benchmarks])


@dataclass
class Estimate:
    """A reported value: the mean over seeds (or the one seed's value) with its interval."""

    value: float | None
    low: float | None = None
    high: float | None = None
    method: str | None = None  # "t, 3 seeds" | "bootstrap over items" | "paired t, 3 seeds" | ...
    per_seed: dict[int, float] = field(default_factory=dict)

    @property
    def excludes_zero(self) -> bool | None:
        if self.value is None or self.low is None or self.high is None:
            return None
        return Interval(self.value, self.low, self.high).excludes_zero

    def as_json(self) -> dict:
        ci = None if self.low is None else [self.low, self.high]
        return {"value": self.value, "ci95": ci, "interval": self.method,
                "per_seed": {str(seed): value for seed, value in self.per_seed.items()}}


def units_for_estimates(units: dict[int, ArmResult]) -> dict[int, ArmResult]:
    """The finished seeds; with none finished, the most advanced unit (its values so far)."""
    finished = {seed: arm for seed, arm in units.items() if arm.finished}
    if finished or not units:
        return finished
    seed = max(units, key=lambda s: (units[s].R.shape[0], -s))
    return {seed: units[seed]}


def arm_estimates(units: dict[int, ArmResult], metrics: list[str]) -> dict[str, Estimate]:
    """{metric: Estimate} of one arm over its seeds (see the module docstring)."""
    used = units_for_estimates(units)
    per_seed = {m: {s: v for s, arm in used.items() if (v := unit_value(arm, m)) is not None} for m in metrics}
    estimates = {}
    for metric, values in per_seed.items():
        if len(values) >= 2:
            interval = t_interval(list(values.values()))
            estimates[metric] = Estimate(interval.value, interval.low, interval.high, f"t, {len(values)} seeds",
                                         values)
        else:
            estimates[metric] = Estimate(next(iter(values.values()), None), per_seed=values)
    single = [m for m, values in per_seed.items() if len(values) == 1]
    if single:
        seed = next(iter(per_seed[single[0]]))
        _bootstrap_single_seed(used[seed], single, estimates)
    return estimates


def _bootstrap_single_seed(arm: ArmResult, metrics: list[str], estimates: dict[str, Estimate]) -> None:
    scores = item_scores(arm)
    if scores is None:
        return
    names = [*arm.tasks, *arm.benchmarks]
    functions = [metric_function(m, len(arm.tasks), arm.benchmarks, arm.joint) for m in metrics]
    intervals = bootstrap_intervals([scores.columns[n] for n in names], functions)
    for metric, interval in zip(metrics, intervals):
        estimates[metric].low, estimates[metric].high = interval.low, interval.high
        estimates[metric].method = "bootstrap over items"


def paired_difference(units_a: dict[int, ArmResult], units_b: dict[int, ArmResult], metric: str) -> Estimate:
    """metric(a) − metric(b) over the seeds both arms finished, paired by seed (and by item when
    only one seed is common). Units must share tasks, benchmarks and test items to pair by item."""
    common = {}
    for seed in sorted(set(units_a) & set(units_b)):
        a, b = units_a[seed], units_b[seed]
        if a.finished and b.finished:
            va, vb = unit_value(a, metric), unit_value(b, metric)
            if va is not None and vb is not None:
                common[seed] = (va, vb)
    per_seed = {seed: va - vb for seed, (va, vb) in common.items()}
    if len(common) >= 2:
        interval = paired_t_interval([va for va, _ in common.values()], [vb for _, vb in common.values()])
        return Estimate(interval.value, interval.low, interval.high, f"paired t, {len(common)} seeds", per_seed)
    if len(common) == 1:
        seed = next(iter(common))
        interval = _paired_bootstrap(units_a[seed], units_b[seed], metric)
        if interval is not None:
            return Estimate(interval.value, interval.low, interval.high, "paired bootstrap over items", per_seed)
        return Estimate(per_seed[seed], per_seed=per_seed)
    return Estimate(None)


def _paired_bootstrap(a: ArmResult, b: ArmResult, metric: str) -> Interval | None:
    names = [*a.tasks, *a.benchmarks]
    if names != [*b.tasks, *b.benchmarks]:
        return None
    scores_a, scores_b = item_scores(a), item_scores(b)
    if scores_a is None or scores_b is None or scores_a.ids != scores_b.ids:
        return None
    rows_a = a.R.shape[0]
    fa = metric_function(metric, len(a.tasks), a.benchmarks, a.joint)
    fb = metric_function(metric, len(b.tasks), b.benchmarks, b.joint)
    columns = [np.vstack([scores_a.columns[n], scores_b.columns[n]]) for n in names]
    return bootstrap_intervals(columns, [lambda M: fa(M[:rows_a]) - fb(M[rows_a:])])[0]
