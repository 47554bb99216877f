"""Classic continual-learning baselines as arms, both sequential SFT with one addition:
experience replay (`replay:` in its recipe entry) and EWC (`ewc:`); settings.py holds those
sections, method.py the training code and its documentation."""

from lite_cpt.arms.base import ARMS, SFT_PHASES, ArmDeclaration
from lite_cpt.arms.baselines.settings import EWCFields, ReplayFields

ARMS.register(ArmDeclaration(
    name="replay", kind="sft", phases=SFT_PHASES, settings=ReplayFields,
    implementation="lite_cpt.arms.baselines.method:Replay",
    summary="Sequential SFT whose batches mix in examples of earlier tasks.",
))
ARMS.register(ArmDeclaration(
    name="ewc", kind="sft", phases=SFT_PHASES, settings=EWCFields,
    implementation="lite_cpt.arms.baselines.method:EWC",
    summary="Sequential SFT plus a Fisher-weighted pull towards the parameters after the last task.",
))
