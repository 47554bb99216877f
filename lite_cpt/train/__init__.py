"""Training: one SFT or GRPO phase and the pieces of its step (rollouts, log-probs, batches,
the KL reference adapter, the numerics guard, the out-of-memory explainer)."""
