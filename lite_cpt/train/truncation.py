"""Answers cut at the length cap, counted per task in rollouts and in evaluation.

A generated answer that reaches `max_new_tokens` without its end-of-turn token was cut: a cut
chain of thought earns neither the format reward nor (usually) the accuracy one, so a cap that
cuts many answers changes what RL learns and what evaluation measures. Every step record carries
`truncated_fraction` (of the rollouts drawn for it); every task_end record carries
`truncated_rollouts` and `truncated_answers` ({task: share cut}, rollouts of the phase and the
evaluation's answers), so a cap that bites shows in metrics.jsonl.
"""

from __future__ import annotations

from typing import Iterable


def cut_at_cap(token_ids: list[list[int]], end_ids: Iterable[int], cap: int) -> list[bool]:
    """Per row: True when it has `cap` tokens and no end-of-turn token (generation was cut)."""
    ends = set(end_ids)
    return [len(row) >= cap and not ends.intersection(row) for row in token_ids]


def count_rollouts(extra: dict, task_names: list[str], truncated: list[bool]) -> None:
    """Add one batch's rollouts (row i answers a prompt of task_names[i]) to the phase's
    per-task counts `extra["rollout_truncation"] = {task: [cut, total]}`."""
    counts = extra.setdefault("rollout_truncation", {})
    for task, cut in zip(task_names, truncated):
        pair = counts.setdefault(task, [0, 0])
        pair[0] += int(cut)
        pair[1] += 1


def shares(counts: dict[str, list[int]]) -> dict[str, float]:
    """{task: cut / total} of per-task [cut, total] counts."""
    return {task: cut / total for task, (cut, total) in counts.items() if total}


def answer_shares(items: dict[str, list[dict]]) -> dict[str, float]:
    """{task: share of its evaluation answers cut at the cap} of per-item results."""
    return {task: sum(bool(item.get("truncated")) for item in scored) / len(scored)
            for task, scored in items.items() if scored}


def task_end_extra(extra: dict) -> dict:
    """A phase's extra statistics as the task_end record logs them: the rollout counts as
    `truncated_rollouts`, {task: share cut}."""
    logged = {key: value for key, value in extra.items() if key != "rollout_truncation"}
    if "rollout_truncation" in extra:
        logged["truncated_rollouts"] = shares(extra["rollout_truncation"])
    return logged
