"""RIF-RFT: GRPO on the instances that rollout-based instance filtering keeps (offline or
online). Its recipe entry adds `rif:` beside the RL arms' `rft:` (lite_cpt/arms/rif/settings.py);
the filter and its budgets are in method.py."""

from lite_cpt.arms.base import ARMS, RL_PHASES, ArmDeclaration
from lite_cpt.arms.rif.settings import RIFFields

ARMS.register(ArmDeclaration(
    name="rif_rft", kind="rl", phases=RL_PHASES, settings=RIFFields,
    implementation="lite_cpt.arms.rif.method:RIFRFT",
    summary="GRPO on the instances that rollout-based filtering keeps (offline or online).",
))
