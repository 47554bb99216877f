"""Fused kernels for log-probabilities and the GRPO loss, shipped as `lite_cpt.kernels`."""
