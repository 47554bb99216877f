"""The settings the classic continual-learning baselines add to their recipe entries:
`replay:` on a replay arm, `ewc:` on an ewc arm."""

from __future__ import annotations

from pydantic import BaseModel, Field

from lite_cpt.recipe_section import Section


class ReplayConfig(Section):
    fraction: float = Field(0.2, ge=0, le=1, description="Share of each batch drawn from earlier tasks.")
    buffer_per_task: int = Field(64, ge=1, description="Samples kept per finished task.")


class EWCConfig(Section):
    weight: float = Field(100.0, ge=0, description="EWC penalty coefficient (lambda).")
    fisher_samples: int = Field(32, ge=1, description="Samples used to estimate the diagonal Fisher.")


class ReplayFields(BaseModel):
    """What a replay arm adds to its recipe entry."""

    replay: ReplayConfig = Field(default_factory=ReplayConfig, description="Replay settings.")


class EWCFields(BaseModel):
    """What an ewc arm adds to its recipe entry."""

    ewc: EWCConfig = Field(default_factory=EWCConfig, description="EWC settings.")
