"""The instance-filtering settings of the rif_rft arm: `rif:` in its recipe entry (beside `rft:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lite_cpt.arms.rl.settings import RLFields
from lite_cpt.recipe_section import Section


class RIFConfig(Section):
    """Rollout-based instance filtering: keep instances whose mean accuracy (the reward's accuracy part,
    without the format term) lies in (low, high) and whose rewards are not all equal."""

    rollouts: int = Field(4, ge=1, description="Rollouts per instance used to estimate its success rate (K).")
    low: float = Field(0.0, ge=0, le=1, description="Keep instances whose mean accuracy over the K rollouts (the "
                       "reward's accuracy part, not the format term) is strictly above this.")
    high: float = Field(1.0, ge=0, le=1, description="…and strictly below this.")
    mode: Literal["offline", "online"] = Field(
        "offline", description="offline: filter once before each task; online: per batch, refilling."
    )
    budget: Literal["filtered", "matched", "compute"] = Field(
        "filtered",
        description="filtered: train on the kept instances only; matched: as many policy updates as plain RFT; "
        "compute: as many rollouts as plain RFT, the K-rollout estimate's included.",
    )

    @model_validator(mode="after")
    def _band(self) -> "RIFConfig":
        if self.low >= self.high:
            raise ValueError(f"rif.low ({self.low}) must be below rif.high ({self.high})")
        return self


class RIFFields(RLFields):
    """What the rif_rft arm adds to its recipe entry: GRPO's settings and the filter's."""

    rif: RIFConfig = Field(default_factory=RIFConfig, description="Instance filtering settings.")
