"""Supervised arms: sequential SFT (task by task) and joint multi-task SFT (the upper bound)."""

from __future__ import annotations

from lite_cpt.arms.base import ArmMethod
from lite_cpt.train.phase import Example, Phase, PhaseStats
from lite_cpt.train.sft import SFTHooks, train_sft


class SequentialSFT(ArmMethod):
    """SFT on each task in turn. Subclasses add to the phase through `sft_hooks`."""

    def train(self, examples: list[Example], phase: Phase) -> PhaseStats:
        return train_sft(self.model, self.processor, examples, self.arm, phase, self.sft_hooks(phase))

    def sft_hooks(self, phase: Phase) -> SFTHooks:
        """What this arm adds to each step (replay's sampler, EWC's penalty); nothing here."""
        return SFTHooks()


class JointSFT(SequentialSFT):
    """SFT once on every task's examples together (the multi-task reference)."""
