"""Reinforcement arms: GRPO task by task (the paper's RFT) and on all tasks at once. Their
recipe entry adds `rft:` (lite_cpt/arms/rl/settings.py)."""

from lite_cpt.arms.base import ARMS, RL_PHASES, ArmDeclaration
from lite_cpt.arms.rl.settings import RLFields

ARMS.register(ArmDeclaration(
    name="rft", kind="rl", phases=RL_PHASES, settings=RLFields,
    implementation="lite_cpt.arms.rl.method:SequentialRFT",
    summary="GRPO on each task in turn (the paper's RFT arm).",
))
ARMS.register(ArmDeclaration(
    name="multitask_rft", kind="rl", phases=RL_PHASES, settings=RLFields, joint=True,
    implementation="lite_cpt.arms.rl.method:JointRFT",
    summary="GRPO once on every task's prompts together (the multi-task RFT reference).",
))
