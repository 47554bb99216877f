"""Properties that must hold for every input, checked on generated ones (hypothesis).

Advantage estimators, continual-learning metric identities, dataset split slices and recipe
override parsing. Each property is one the code relies on, so a counter-example is a bug.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from hypothesis import assume, example, given
from hypothesis import strategies as st

from lite_cpt.data.loaders import split_range, subsample
from lite_cpt.kernels import (
    grpo_advantages,
    reference_grpo_advantages,
    remax_advantages,
    rloo_advantages,
)
from lite_cpt.results.metrics import (
    average_forgetting,
    backward_transfer,
    final_accuracy,
    forward_transfer,
    seen_task_average,
    summarize,
)
from lite_cpt.recipe import apply_override, parse_overrides, recipe_from_dict
from tests.helpers import tiny_recipe

# The shared CI machine has 2 slow cores: no per-example deadline, a moderate example count.
# Rewards as the tasks produce them: accuracies in [0, 1], partial credit, CoT format mixes.
reward = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]) | st.floats(0.0, 1.0, width=32)


@st.composite
def grouped_rewards(draw, min_group: int = 1):
    groups = draw(st.integers(1, 5))
    size = draw(st.integers(min_group, 6))
    values = draw(st.lists(reward, min_size=groups * size, max_size=groups * size))
    return torch.tensor(values, dtype=torch.float32), size


# ----------------------------------------------------------------------------- advantages


@given(grouped_rewards(), st.sampled_from(["std", "none"]))
def test_grpo_advantages_match_the_reference_and_centre_each_group(data, scale):
    rewards, size = data
    advantages = grpo_advantages(rewards, size, scale=scale)
    torch.testing.assert_close(advantages, reference_grpo_advantages(rewards, size, scale=scale),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(advantages.view(-1, size).sum(dim=1), torch.zeros(rewards.numel() // size),
                               rtol=0, atol=1e-3)


@given(grouped_rewards(min_group=2), st.sampled_from(["grpo-std", "grpo-none", "rloo"]))
def test_a_group_with_equal_rewards_gets_exactly_zero_advantage(data, estimator):
    rewards, size = data
    groups = rewards.view(-1, size).clone()
    groups[0] = groups[0, 0]  # the first group has no spread; the others keep theirs
    advantages = _advantages(estimator, groups.reshape(-1), size).view(-1, size)
    assert torch.equal(advantages[0], torch.zeros(size))
    spread = groups.amax(dim=1) != groups.amin(dim=1)
    assert bool((advantages[spread].abs().amax(dim=1) > 0).all()), "a group with spread gets a signal"


@given(grouped_rewards(min_group=2), st.sampled_from([-1.0, 0.5, 3.0, 10.0]),
       st.sampled_from(["grpo-std", "grpo-none", "rloo"]))
def test_advantages_ignore_a_constant_added_to_every_reward(data, shift, estimator):
    rewards, size = data
    torch.testing.assert_close(_advantages(estimator, rewards + shift, size), _advantages(estimator, rewards, size),
                               rtol=1e-3, atol=1e-3)


@given(grouped_rewards(), st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from([-2.0, 0.7]))
def test_remax_is_reward_minus_the_greedy_baseline_and_shift_invariant(data, greedy, shift):
    rewards, size = data
    baseline = torch.full((rewards.numel() // size,), greedy)
    advantages = remax_advantages(rewards, baseline)
    torch.testing.assert_close(advantages, rewards - greedy)
    torch.testing.assert_close(remax_advantages(rewards + shift, baseline + shift), advantages, rtol=1e-5, atol=1e-5)
    # A prompt whose sampled answers all score like the greedy one gets exactly 0.
    assert torch.equal(remax_advantages(baseline.repeat_interleave(size), baseline), torch.zeros(rewards.numel()))


@given(grouped_rewards(min_group=2), st.sampled_from([0.5, 2.0, 7.0]))
def test_std_scaled_advantages_ignore_the_reward_scale(data, factor):
    rewards, size = data
    spread = rewards.view(-1, size).std(dim=1)
    assume(bool(((spread == 0) | (spread > 0.05)).all()))  # eps is negligible against the spread
    torch.testing.assert_close(grpo_advantages(rewards * factor, size), grpo_advantages(rewards, size),
                               rtol=1e-3, atol=1e-3)


def test_rloo_is_grpo_without_scaling_times_g_over_g_minus_1():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.5, 1.0, 1.0])
    torch.testing.assert_close(rloo_advantages(rewards, 3), grpo_advantages(rewards, 3, scale="none") * 1.5)


def _advantages(estimator: str, rewards: torch.Tensor, size: int) -> torch.Tensor:
    if estimator == "rloo":
        return rloo_advantages(rewards, size)
    return grpo_advantages(rewards, size, scale=estimator.removeprefix("grpo-"))


# ----------------------------------------------------------------------------- metrics


@st.composite
def accuracy_matrices(draw, min_tasks: int = 1):
    tasks = draw(st.integers(min_tasks, 6))
    cells = draw(st.lists(st.floats(0.0, 1.0), min_size=(tasks + 1) * tasks, max_size=(tasks + 1) * tasks))
    return np.array(cells).reshape(tasks + 1, tasks)


@given(accuracy_matrices(min_tasks=2), st.randoms(use_true_random=False))
def test_acc_bwt_forgetting_are_invariant_to_relabelling_the_earlier_tasks(R, rng):
    """Training tasks 1..T-1 in another order with the same per-stage results permutes rows 1..T-1
    and columns 0..T-2 together; the final task stays last. ACC, BWT, forgetting do not change."""
    tasks = R.shape[1]
    order = list(range(tasks - 1))
    rng.shuffle(order)
    columns = order + [tasks - 1]
    rows = [0] + [i + 1 for i in order] + [tasks]
    permuted = R[rows][:, columns]
    assert final_accuracy(permuted) == pytest.approx(final_accuracy(R))
    assert backward_transfer(permuted) == pytest.approx(backward_transfer(R))
    assert average_forgetting(permuted) == pytest.approx(average_forgetting(R))


@given(accuracy_matrices(), st.randoms(use_true_random=False))
def test_acc_is_the_mean_of_the_last_row_in_any_column_order(R, rng):
    columns = list(range(R.shape[1]))
    rng.shuffle(columns)
    assert final_accuracy(R[:, columns]) == pytest.approx(float(R[-1].mean()))
    assert seen_task_average(R)[-1] == pytest.approx(final_accuracy(R))


@given(accuracy_matrices(min_tasks=2), st.floats(-0.5, 0.5))
def test_transfer_metrics_ignore_a_constant_offset(R, offset):
    shifted = R + offset
    assert final_accuracy(shifted) == pytest.approx(final_accuracy(R) + offset)
    for metric in (backward_transfer, average_forgetting, forward_transfer):
        assert metric(shifted) == pytest.approx(metric(R), abs=1e-9)


@given(accuracy_matrices(min_tasks=2))
def test_forgetting_bounds_minus_bwt_and_both_read_the_matrix_as_documented(R):
    tasks = R.shape[1]
    # The best earlier score is at least the score right after training: forgetting >= -BWT.
    assert average_forgetting(R) >= -backward_transfer(R) - 1e-12
    expected_bwt = np.mean([R[tasks, j] - R[j + 1, j] for j in range(tasks - 1)])
    assert backward_transfer(R) == pytest.approx(expected_bwt)
    # A run that only gets better on every earlier task has negative forgetting, never clamped at 0.
    improving = R.copy()
    improving[tasks, : tasks - 1] = improving[1:tasks, : tasks - 1].max(axis=0) + 0.1
    assert average_forgetting(improving) == pytest.approx(-0.1)
    assert backward_transfer(improving) > 0


@given(accuracy_matrices(min_tasks=1))
def test_summary_of_a_partial_matrix_is_undefined_and_complete_matches_each_metric(R):
    assert summarize(R[:-1]) == {"ACC": None, "BWT": None, "forgetting": None, "FWT": None}
    assert summarize(R) == {"ACC": final_accuracy(R), "BWT": backward_transfer(R),
                            "forgetting": average_forgetting(R), "FWT": forward_transfer(R)}
    assert len(seen_task_average(R[:-1])) == R.shape[1] - 1


# ----------------------------------------------------------------------------- split slices


bound = st.one_of(st.none(), st.integers(-30, 30).map(str), st.integers(-120, 120).map(lambda p: f"{p}%"))


@given(st.integers(0, 200), bound)
def test_a_cut_splits_rows_into_disjoint_covering_parts(n, cut):
    cut = cut or "0"
    head = split_range(f"train[:{cut}]", n)
    tail = split_range(f"train[{cut}:]", n)
    assert list(head) + list(tail) == list(range(n))


@given(st.integers(0, 200), st.lists(st.integers(0, 100), min_size=1, max_size=4))
def test_percentage_slices_tile_the_split(n, percents):
    edges = ["", *(f"{p}%" for p in sorted(percents)), ""]
    parts = [list(split_range(f"train[{a}:{b}]", n)) for a, b in zip(edges, edges[1:])]
    assert [row for part in parts for row in part] == list(range(n))


@given(st.integers(0, 200), bound, bound)
@example(n=123, start="-101%", stop=None)
def test_a_slice_is_a_contiguous_range_inside_the_split(n, start, stop):
    rows = split_range(f"val[{start or ''}:{stop or ''}]", n)
    assert rows.step == 1 and 0 <= rows.start and rows.stop <= n
    assert list(rows) == list(range(n))[slice(*(_python_bound(b, n) for b in (start, stop)))]


def _python_bound(text: str | None, n: int) -> int | None:
    if text is None or not text.endswith("%"):
        return None if text is None else int(text)
    p = int(text[:-1])
    # a percentage is a position counted from the start (or, negative, from the end), held
    # within the split: -101 % is the start, as Python holds an index below -n at the start
    return min(max(n * p // 100 if p >= 0 else n - n * -p // 100, 0), n)


@given(st.lists(st.integers(0, 10_000), unique=True, max_size=60), st.integers(0, 60), st.integers(0, 60),
       st.integers(0, 2**32 - 1))
def test_subsamples_are_distinct_rows_and_a_smaller_one_is_a_prefix(indices, small, extra, seed):
    large = subsample(indices, small + extra, seed, "train")
    smaller = subsample(indices, small, seed, "train")
    assert len(set(large)) == len(large) == min(len(indices), small + extra)
    assert set(large) <= set(indices)
    assert large[: len(smaller)] == smaller
    assert subsample(indices, None, seed, "train") == indices


# ----------------------------------------------------------------------------- overrides


key_part = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
scalar = (st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
          | st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12))


@given(st.lists(key_part, min_size=1, max_size=4), scalar | st.lists(scalar, max_size=3))
def test_an_override_parses_back_to_its_key_path_and_value(path, value):
    text = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
    assume(text != "")
    [(parsed_path, parsed_value)] = parse_overrides([".".join(path) + "=" + text])
    assert parsed_path == path
    assert parsed_value == value


@given(st.integers(0, 2**31 - 1), st.floats(1e-6, 1.0), st.integers(1, 64), st.sampled_from(["sft", 0, -1]))
def test_overrides_land_in_the_validated_recipe(seed, lr, train_size, arm_key):
    raw = tiny_recipe(__import__("pathlib").Path("/tmp"))
    for item in (f"seed={seed}", f"arms.{arm_key}.lr={lr!r}", f"tasks.1.train_size={train_size}", "model=tiny"):
        [(path, value)] = parse_overrides([item])
        apply_override(raw, path, value)
    recipe = recipe_from_dict(raw)
    assert recipe.seed == seed and recipe.arms[0].lr == lr
    assert [t.train_size for t in recipe.tasks] == [16, train_size, 16]
    assert recipe.model.lora.r == 4, "model=<name> keeps the rest of the model section"


# ----------------------------------------------------------------------------- answer extraction


@given(st.lists(st.text(st.sampled_from("ab 12<>/"), max_size=6), min_size=1, max_size=4))
def test_the_last_answer_tag_is_the_answer(answers):
    from lite_cpt.tasks.base import extract_answer

    text = " thinking ".join(f"<answer>{a}</answer>" for a in answers if "</answer>" not in a)
    assume("<answer>" in text and text.count("</answer>") == sum("</answer>" not in a for a in answers))
    last = [a for a in answers if "</answer>" not in a][-1]
    assume("<answer>" not in last)
    assert extract_answer(text) == last.strip()
