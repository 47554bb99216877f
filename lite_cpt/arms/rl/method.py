"""Reinforcement arms: GRPO task by task (the paper's RFT) and on all tasks at once."""

from __future__ import annotations

from lite_cpt.arms.base import ArmMethod
from lite_cpt.train.phase import Example, Phase, PhaseStats
from lite_cpt.train.rft import train_rft


class SequentialRFT(ArmMethod):
    """GRPO on each task in turn (the paper's RFT arm)."""

    def train(self, examples: list[Example], phase: Phase) -> PhaseStats:
        return train_rft(self.model, self.processor, examples, self.arm, phase)


class JointRFT(SequentialRFT):
    """GRPO once on every task's prompts together (the multi-task RFT reference)."""
