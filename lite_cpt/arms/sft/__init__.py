"""Supervised arms: sequential SFT and joint multi-task SFT (the upper bound). They add no
settings of their own to the recipe entry (lr, batch_size, the schedule are every arm's)."""

from lite_cpt.arms.base import ARMS, SFT_PHASES, ArmDeclaration

ARMS.register(ArmDeclaration(
    name="sft", kind="sft", phases=SFT_PHASES, implementation="lite_cpt.arms.sft.method:SequentialSFT",
    summary="SFT on each task in turn. Subclasses add to the phase through `sft_hooks`.",
))
ARMS.register(ArmDeclaration(
    name="multitask_sft", kind="sft", phases=SFT_PHASES, joint=True,
    implementation="lite_cpt.arms.sft.method:JointSFT",
    summary="SFT once on every task's examples together (the multi-task reference).",
))
