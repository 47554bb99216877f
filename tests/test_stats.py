"""Interval arithmetic against hand-computed cases."""

import math

import numpy as np
import pytest
from scipy import stats

from lite_cpt.results.metrics import backward_transfer
from lite_cpt.results.stats import Interval, bootstrap_interval, bootstrap_intervals, paired_t_interval, t_interval

# Student t quantiles t_{0.975, df} from printed tables.
T975 = {1: 12.706204736, 2: 4.302652730, 4: 2.776445105}


def test_t_interval_of_three_values_by_hand():
    # mean 2, s = 1, s/sqrt(3) = 0.577350, half-width 4.302653 * 0.577350 = 2.484138
    interval = t_interval([1.0, 2.0, 3.0])
    assert interval.value == pytest.approx(2.0)
    assert interval.low == pytest.approx(2.0 - T975[2] / math.sqrt(3), abs=1e-8)
    assert interval.high == pytest.approx(4.484138, abs=1e-6)


def test_t_interval_of_two_and_five_values_by_hand():
    # [0.1, 0.3]: mean 0.2, s = 0.141421, s/sqrt(2) = 0.1, half-width 12.706205 * 0.1 = 1.270620
    interval = t_interval([0.1, 0.3])
    assert (interval.low, interval.high) == pytest.approx((0.2 - 1.2706204736, 0.2 + 1.2706204736))
    # [2, 4, 4, 4, 6]: mean 4, s^2 = (4+0+0+0+4)/4 = 2, s/sqrt(5) = 0.632456, half 2.776445 * 0.632456
    interval = t_interval([2, 4, 4, 4, 6])
    assert interval.high - interval.value == pytest.approx(T975[4] * math.sqrt(2 / 5), abs=1e-8)


def test_t_interval_degenerate_cases():
    assert t_interval([0.25]) == Interval(0.25, None, None)  # one seed: no spread to estimate
    assert t_interval([0.5, 0.5, 0.5]) == Interval(0.5, 0.5, 0.5)
    with pytest.raises(ValueError):
        t_interval([])


def test_paired_t_interval_is_the_t_interval_of_the_differences():
    # BWT of two arms on three seeds; differences d = [-0.039, -0.127, -0.026], mean -0.064,
    # deviations 0.025, -0.063, 0.038 -> s^2 = (0.000625 + 0.003969 + 0.001444) / 2 = 0.003019
    sft, rft = [-0.109, -0.135, -0.094], [-0.070, -0.008, -0.068]
    interval = paired_t_interval(sft, rft)
    half = T975[2] * math.sqrt(0.003019 / 3)
    assert interval.value == pytest.approx(-0.064)
    assert (interval.low, interval.high) == pytest.approx((-0.064 - half, -0.064 + half), abs=1e-6)
    assert interval.excludes_zero is False
    # Pairing removes the seed effect the unpaired spread would keep: a constant shift is certain.
    assert paired_t_interval([0.3, 0.5, 0.9], [0.1, 0.3, 0.7]) == Interval(pytest.approx(0.2), pytest.approx(0.2),
                                                                          pytest.approx(0.2))
    with pytest.raises(ValueError, match="same length"):
        paired_t_interval([1.0], [1.0, 2.0])


def test_bootstrap_of_a_mean_matches_the_binomial_quantiles():
    # 32 of 64 items right: the bootstrap distribution of the mean is Binomial(64, 0.5) / 64,
    # whose 2.5 % and 97.5 % quantiles are 24/64 and 40/64.
    scores = np.array([[1.0] * 32 + [0.0] * 32])
    interval = bootstrap_interval([scores], lambda M: M[-1].mean(), n_resamples=20000)
    assert interval.value == 0.5
    assert (interval.low, interval.high) == pytest.approx(tuple(stats.binom.ppf([0.025, 0.975], 64, 0.5) / 64))
    assert (interval.low, interval.high) == (24 / 64, 40 / 64)


def test_bootstrap_of_identical_items_has_no_width():
    scores = np.ones((2, 10))
    assert bootstrap_interval([scores], lambda M: M[-1, 0] - M[0, 0]) == Interval(0.0, 0.0, 0.0)


def test_bootstrap_resamples_the_same_items_in_every_row():
    # Task 1 is right for the same 6 of 8 items after training it and at the end: BWT on it is 0
    # in every resample only if both rows share the resampled items.
    after_1 = [1, 1, 1, 1, 1, 1, 0, 0]
    task_1 = np.array([[0] * 8, after_1, after_1], dtype=float)
    task_2 = np.array([[0, 1] * 4, [0, 1] * 4, [1] * 8], dtype=float)
    R = np.stack([task_1.mean(axis=1), task_2.mean(axis=1)], axis=1)
    interval = bootstrap_interval([task_1, task_2], backward_transfer)
    assert interval == Interval(backward_transfer(R), 0.0, 0.0)


def test_bootstrap_intervals_share_one_resample_and_keep_their_order():
    rng = np.random.default_rng(3)
    columns = [rng.integers(0, 2, (3, 40)).astype(float), rng.integers(0, 2, (3, 25)).astype(float)]
    first, last = (lambda M: M[-1].mean()), (lambda M: M[0, 1])
    both = bootstrap_intervals(columns, [first, last], seed=7)
    assert both[0] == bootstrap_interval(columns, first, seed=7)
    assert both[1] == bootstrap_interval(columns, last, seed=7)
    assert both[1].value == pytest.approx(columns[1][0].mean())
    assert all(i.low <= i.value <= i.high for i in both)


@pytest.mark.parametrize("columns", [[], [np.zeros(4)], [np.zeros((2, 0))], [np.zeros((2, 3)), np.zeros(3)]],
                         ids=["none", "one-dimensional", "no items", "one of two one-dimensional"])
def test_bootstrap_refuses_columns_that_are_not_stages_by_items(columns):
    with pytest.raises(ValueError, match=r"^bootstrap needs one non-empty \(stages, items\) array per column$"):
        bootstrap_intervals(columns, [lambda M: M[-1].mean()])
