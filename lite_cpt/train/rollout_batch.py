"""A batch of rollouts: G answers for each of B prompts, with their rewards (lite_cpt.train.rft samples
them, trains on them and logs them)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lite_cpt.train.phase import Example


@dataclass
class Rollouts:
    """G answers for each of B prompts, prompt-major: rows [i*G, (i+1)*G) answer examples[i]."""

    examples: list[Example]
    group_size: int
    token_ids: list[list[int]]  # response ids, ending with the end-of-turn token when it was produced
    texts: list[str]
    rewards: torch.Tensor  # [B*G] float32
    baseline: torch.Tensor | None = None  # [B] reward of each prompt's greedy answer (remax)
    baseline_tokens: list[int] | None = None  # [B] tokens of those greedy answers
    accuracies: torch.Tensor | None = None  # [B*G] the accuracy part of each reward (None = the rewards)
    truncated: list[bool] | None = None  # [B*G] cut at max_new_tokens (lite_cpt.train.truncation)
    sampler_logp: list[list[float]] | None = None  # [B*G] the rollout engine's log-prob of each answer token

    @property
    def num_groups(self) -> int:
        return len(self.examples)

    @property
    def generated_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids) + sum(self.baseline_tokens or [])

    def group_rewards(self) -> torch.Tensor:
        return self.rewards.view(self.num_groups, self.group_size)

    def group_means(self) -> torch.Tensor:
        return self.group_rewards().mean(dim=1)

    def success_rates(self) -> torch.Tensor:
        """[B] mean accuracy part of each prompt's rewards (without the format term)."""
        accuracies = self.rewards if self.accuracies is None else self.accuracies
        return accuracies.view(self.num_groups, self.group_size).mean(dim=1)

    def zero_variance(self) -> torch.Tensor:
        """[B] True where every answer of the prompt got the same reward."""
        groups = self.group_rewards()
        return groups.amax(dim=1) == groups.amin(dim=1)

    def subset(self, groups: list[int]) -> "Rollouts":
        rows = [g * self.group_size + k for g in groups for k in range(self.group_size)]
        return Rollouts(
            examples=[self.examples[g] for g in groups],
            group_size=self.group_size,
            token_ids=[self.token_ids[r] for r in rows],
            texts=[self.texts[r] for r in rows],
            rewards=self.rewards[rows] if rows else self.rewards.new_zeros(0),
            baseline=None if self.baseline is None else self.baseline[groups],
            baseline_tokens=None if self.baseline_tokens is None else [self.baseline_tokens[g] for g in groups],
            accuracies=None if self.accuracies is None else self.accuracies[rows] if rows else self.accuracies.new_zeros(0),
            truncated=None if self.truncated is None else [self.truncated[r] for r in rows],
            sampler_logp=None if self.sampler_logp is None else [self.sampler_logp[r] for r in rows],
        )

    @staticmethod
    def concat(parts: list["Rollouts"]) -> "Rollouts":
        if not parts:
            raise ValueError("Rollouts.concat needs at least one part")
        with_baseline = all(p.baseline is not None for p in parts)
        return Rollouts(
            examples=[e for p in parts for e in p.examples],
            group_size=parts[0].group_size,
            token_ids=[ids for p in parts for ids in p.token_ids],
            texts=[t for p in parts for t in p.texts],
            rewards=torch.cat([p.rewards for p in parts]),
            baseline=torch.cat([p.baseline for p in parts]) if with_baseline else None,
            baseline_tokens=[n for p in parts for n in p.baseline_tokens] if with_baseline else None,
            accuracies=torch.cat([p.rewards if p.accuracies is None else p.accuracies for p in parts]),
            truncated=[cut for p in parts for cut in (p.truncated or [False] * len(p.token_ids))],
            sampler_logp=([r for p in parts for r in p.sampler_logp]
                          if all(p.sampler_logp is not None for p in parts) else None),
        )

    def task_names(self) -> list[str]:
        """The task of each rollout's prompt, row by row."""
        return [self.examples[row // self.group_size].task.name for row in range(len(self.token_ids))]
