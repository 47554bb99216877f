"""Fused kernels for log-probabilities and the GRPO loss, shipped as `lite_cpt.kernels`.

Importing this package needs neither CUDA nor triton: without them every call takes the
chunked torch path.
"""

from .fused_logprob import chunked_linear_logprob, fused_linear_logprob, reference_linear_logprob
from .grpo_loss import (
    ADVANTAGE_ESTIMATORS,
    grpo_advantages,
    grpo_loss,
    reference_grpo_advantages,
    reference_grpo_loss,
    remax_advantages,
    rloo_advantages,
)
from .logprob_shared import LOGPROB_PATHS, set_logprob_path, using_logprob_path

__all__ = [
    "LOGPROB_PATHS",
    "ADVANTAGE_ESTIMATORS",
    "chunked_linear_logprob",
    "fused_linear_logprob",
    "grpo_advantages",
    "grpo_loss",
    "reference_grpo_advantages",
    "reference_grpo_loss",
    "reference_linear_logprob",
    "remax_advantages",
    "rloo_advantages",
    "set_logprob_path",
    "using_logprob_path",
]
