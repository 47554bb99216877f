"""The scheduling model of bench_continuous: static calls pay their longest row, refilled slots
do not; hand-counted decode steps."""

from lite_cpt.bench.continuous import CAP, continuous_steps, simulate, skewed_lengths, static_steps


def test_static_calls_pay_their_longest_row_and_refilled_slots_do_not():
    lengths = [5, 1, 1, 1]
    assert static_steps(lengths, 2) == 5 + 1  # calls [5, 1] and [1, 1]
    assert continuous_steps(lengths, 2) == 5  # the three short ones run beside the long one
    # a step costs 1 + 0.5 per active row: static calls run at full width to their end
    assert static_steps(lengths, 2, 0.5) == 5 * 2 + 1 * 2
    assert continuous_steps(lengths, 2, 0.5) == 3 * 2 + 2 * 1.5  # two rows for 3 steps, then one
    assert continuous_steps([3, 3, 3], 1) == static_steps([3, 3, 3], 1) == 9  # one slot: no difference


def test_skewed_lengths_are_reproducible_long_tailed_and_capped():
    lengths = skewed_lengths(2000, seed=0)
    assert lengths == skewed_lengths(2000, seed=0)
    assert 1 <= min(lengths) and max(lengths) == CAP  # the tail reaches the cap
    assert sum(lengths) / len(lengths) > sorted(lengths)[1000]  # mean above the median
    result = simulate(256, 16, seed=0, width_costs=(0.0,))
    assert result["rows"][0]["speedup"] > 1
